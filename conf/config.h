// config.h — the typed configuration, loaded from postern.toml.
//
// Static settings live here; they reload on SIGHUP as a whole new Config snapshot. Loading checks
// every key: an unknown key, a wrong type or a bad value is a ConfigError naming the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace postern {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ListenAddr {
  std::string host;  // numeric IPv4 or IPv6
  uint16_t port = 0;
};

struct NextHop {
  std::string host;  // literal address or name
  uint16_t port = 25;
  bool mx = false;   // "host" without brackets: look up MX first
};

enum class BareLfPolicy { kReject, kNormalize };
enum class TlsLevel { kNone, kMay, kEncrypt, kVerify };

struct SmtpConfig {
  std::vector<ListenAddr> listen{{"127.0.0.1", 2525}};
  uint64_t max_message_size = 52428800;
  uint32_t max_recipients = 1000;
  uint32_t max_line_length = 2048;
  uint32_t max_commands_before_mail = 50;
  uint32_t max_junk_commands = 10;
  uint32_t max_sessions_per_ip = 50;
  uint32_t max_sessions = 2000;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds data_timeout{std::chrono::minutes(3)};
  std::chrono::milliseconds max_session_duration{std::chrono::hours(1)};
  BareLfPolicy bare_lf = BareLfPolicy::kReject;
  uint64_t min_free_space = 64ull << 20;
  std::string tls_cert_file;  // empty: <state_dir>/certs/default_mta.crt (made at first start)
  std::string tls_key_file;
  bool starttls = true;
};

struct Network {
  unsigned char addr[16] = {};
  int family = 0;  // AF_INET or AF_INET6
  int prefix = 0;
};

struct RelayConfig {
  std::vector<std::string> domains{"example.test"};
  std::vector<Network> networks;
  std::vector<std::string> network_texts{"127.0.0.0/8"};
};

struct OutboundConfig {
  TlsLevel tls = TlsLevel::kMay;
  std::vector<std::string> dns_servers;
  std::map<std::string, TlsLevel> tls_policy;
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds command_timeout{std::chrono::minutes(5)};
  uint32_t destination_concurrency = 20;
  uint32_t max_connections = 200;
  uint32_t messages_per_connection = 50;
  uint16_t mx_port = 25;  // port for next hops found by MX lookup (tests use another)
  std::chrono::milliseconds connection_cache_time{std::chrono::seconds(2)};  // 0 = no cache
  TlsLevel level_for(const std::string& domain) const {
    auto it = tls_policy.find(domain);
    return it == tls_policy.end() ? tls : it->second;
  }
};

struct QueueConfig {
  std::chrono::milliseconds min_backoff{std::chrono::minutes(5)};
  std::chrono::milliseconds max_backoff{std::chrono::hours(1)};
  std::chrono::milliseconds lifetime{std::chrono::hours(24 * 5)};
  std::chrono::milliseconds delay_warning{std::chrono::hours(4)};  // 0 = none
  bool deliver = true;  // false: accept and queue only, deliver nothing (like defer_transports)
  // queue.sync: "syncfs" (one syncfs per commit batch; Linux 5.8 or later) or "file" (fdatasync
  // of every queue file and an fsync of the directory). Read at start-up only.
  bool sync_per_file = false;
};

struct Config {
  std::string path;  // where it was loaded from
  // [server]
  std::string hostname = "mx.example.test";
  std::string state_dir = "var";
  unsigned workers = 0;  // 0: one per core
  std::string log_file;  // empty: <state_dir>/log/posternd.log
  std::string log_level = "info";
  std::string node_name;  // "" = <system hostname>:<first SMTP port>; names this node to the others
  std::chrono::milliseconds drain_timeout{std::chrono::seconds(30)};
  SmtpConfig smtp;
  RelayConfig relay;
  std::map<std::string, NextHop> routes;  // "*" = default relay host
  OutboundConfig outbound;
  QueueConfig queue;
  std::string admin_listen = "127.0.0.1:8445";
  std::string euq_listen = "127.0.0.1:8447";
  std::string database_url;

  std::string cert_file() const;
  std::string key_file() const;
  std::string resolved_log_file() const;
};

// Throws ConfigError with a message naming the key.
Config load_config(const std::string& path);
Config parse_config(std::string_view toml_text, const std::string& path_for_errors);

// Helpers shared with the data path.
bool parse_network(const std::string& text, Network& out);
bool network_contains(const Network& net, const unsigned char* addr, int family);
bool parse_next_hop(const std::string& text, NextHop& out);
bool parse_listen(const std::string& text, ListenAddr& out);

}  // namespace postern
