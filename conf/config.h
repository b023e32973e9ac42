// config.h — the typed configuration, loaded from postern.toml.
//
// Static settings live here; they reload on SIGHUP as a whole new Config snapshot. Loading checks
// every key: an unknown key, a wrong type or a bad value is a ConfigError naming the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "conf/recipient_table.h"

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
// Message lines over 998 octets (RFC 5322 2.1.1): broken with CRLF SP, refused, or kept.
enum class LongLinePolicy { kFold, kReject, kAccept };

struct Network {
  unsigned char addr[16] = {};
  int family = 0;  // AF_INET or AF_INET6
  int prefix = 0;
};

struct SmtpConfig {
  std::vector<ListenAddr> listen{{"127.0.0.1", 2525}};
  uint64_t max_message_size = 52428800;
  uint32_t max_recipients = 1000;
  uint32_t max_line_length = 2048;
  uint32_t max_commands_before_mail = 50;
  uint32_t max_junk_commands = 20;  // errors since the last accepted message (Postfix: smtpd_hard_error_limit)
  uint32_t max_sessions_per_ip = 50;
  uint32_t max_sessions = 2000;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds data_timeout{std::chrono::minutes(3)};
  std::chrono::milliseconds max_session_duration{std::chrono::hours(1)};
  // Transport: replies that make no write progress this long end the session; a session that
  // is closing (221, 421) is gone after close_timeout whatever the client does.
  std::chrono::milliseconds write_timeout{std::chrono::minutes(2)};
  std::chrono::milliseconds close_timeout{std::chrono::seconds(10)};
  BareLfPolicy bare_lf = BareLfPolicy::kReject;
  uint64_t min_free_space = 64ull << 20;
  std::string tls_cert_file;  // empty: <state_dir>/certs/default_mta.crt (made at first start)
  std::string tls_key_file;
  bool starttls = true;
  bool forbid_unauth_pipelining = true;  // a command sent before a reply it must wait for: 554, close
  uint64_t max_header_size = 102400;     // bytes of the header section; more: 552 5.3.4
  LongLinePolicy long_lines = LongLinePolicy::kFold;
  uint32_t max_hops = 30;                // Received: fields a message may arrive with; more: 554 5.4.6
  std::chrono::milliseconds greet_pause{0};  // 0 = greet at once
  // Clients not counted against max_sessions_per_ip; "relay.networks" in the text stands for
  // that list (the default, like Postfix's smtpd_client_event_limit_exceptions = $mynetworks).
  std::vector<std::string> session_limit_exception_texts{"relay.networks"};
  std::vector<Network> session_limit_exceptions;  // resolved at load
};

struct RelayConfig {
  std::vector<std::string> domains{"example.test"};
  std::vector<Network> networks;
  std::vector<std::string> network_texts{"127.0.0.0/8"};
  // relay.recipient_map: "" = off; else every recipient at relay.domains must be listed
  // (policy/recipient_map.h), or RCPT gets 550 5.1.1. Loaded with the configuration.
  std::string recipient_map;
  std::string recipient_delimiter;  // e.g. "+": user+tag@ is looked up as itself, then as user@
  std::shared_ptr<const RecipientTable> recipients;  // loaded from recipient_map; null when off
  // Recipient verification (mta/delivery/recipient_verifier.h): at RCPT, a recipient at
  // relay.domains from a client outside relay.networks is asked of the next hop (MAIL FROM
  // verify_sender, RCPT TO, RSET) unless a cached answer holds. Off by default.
  bool verify_recipients = false;
  std::string verify_sender;  // "" = the null sender
  std::chrono::milliseconds verify_timeout{std::chrono::seconds(15)};  // RCPT waits at most this long
  std::chrono::milliseconds verify_positive_ttl{std::chrono::hours(24)};
  std::chrono::milliseconds verify_negative_ttl{std::chrono::hours(1)};
  bool verify_unreachable_accept = false;  // "defer" (450 4.1.1, the default) or "accept"
};

struct OutboundConfig {
  TlsLevel tls = TlsLevel::kMay;
  std::vector<std::string> dns_servers;
  std::map<std::string, TlsLevel> tls_policy;  // "domain" or ".domain" (its subdomains); policy/tls_policy.h
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds command_timeout{std::chrono::minutes(5)};
  // RFC 5321 4.5.3.2: the body may take as long as it needs while it makes progress (no data
  // block may wait longer than data_timeout), and the final reply gets final_reply_timeout.
  std::chrono::milliseconds data_timeout{std::chrono::minutes(3)};
  std::chrono::milliseconds final_reply_timeout{std::chrono::minutes(10)};
  uint32_t destination_concurrency = 20;
  uint32_t max_connections = 200;
  uint32_t messages_per_connection = 50;
  uint16_t mx_port = 25;  // port for next hops found by MX lookup (tests use another)
  std::chrono::milliseconds connection_cache_time{std::chrono::seconds(2)};  // 0 = no cache
  std::string tls_cert_file;  // the client certificate; empty: smtp's pair (default_mta)
  std::string tls_key_file;
};

// Limits of an HTTPS listener (admin API now; the consoles and servers to come).
struct HttpLimits {
  uint32_t max_connections = 64;
  uint64_t max_header_size = 16 * 1024;  // request line and headers
  uint64_t max_body_size = 1 << 20;
  std::chrono::milliseconds request_timeout{std::chrono::seconds(30)};  // first byte -> complete
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};     // waiting for a request
  std::chrono::milliseconds write_timeout{std::chrono::seconds(30)};    // no write progress
};

// [euq]: the end-user quarantine console (admin/euq_console.h).
struct EuqConfig {
  std::string public_url;  // the base of links in mail ("" = https://<euq listen>)
  std::chrono::milliseconds link_lifetime{std::chrono::minutes(15)};      // a sign-in link
  std::chrono::milliseconds session_lifetime{std::chrono::hours(8)};      // the session cookie
  std::chrono::milliseconds digest_link_lifetime{std::chrono::hours(72)};  // release/delete links in a digest
  std::string digest_time = "08:00";  // daily, in server.timezone; "" = no digest
  std::chrono::milliseconds retention{std::chrono::hours(24 * 30)};  // quarantined mail older is purged; 0 = kept
  uint32_t signin_limit_per_address = 5;  // sign-in requests per signin_window
  uint32_t signin_limit_per_ip = 20;
  std::chrono::milliseconds signin_window{std::chrono::hours(1)};
};

// [admin] keys of the dashboard's login (admin/web_auth.h).
struct AdminWebConfig {
  uint32_t login_max_failures = 5;           // failed logins from one client IP before it is locked out
  uint32_t login_max_failures_overall = 50;  // failed logins from all IPs (within login_lockout) before all are
  std::chrono::milliseconds login_lockout{std::chrono::minutes(15)};
  std::chrono::milliseconds session_idle_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds session_lifetime{std::chrono::hours(12)};
  uint32_t max_sessions = 64;  // sessions at once; past it the least recently used goes
  std::string web_root;        // "" = <exe>/../share/postern/web/admin
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

struct TlsConfig {
  // Session-ticket keys rotate this often (the previous key still decrypts); 0 = no tickets.
  std::chrono::milliseconds ticket_key_rotation{std::chrono::hours(12)};
};

struct HttpClientConfig {
  std::string proxy;    // "" = the environment's (http_proxy, https_proxy, no_proxy); "direct" = none
  std::string ca_file;  // CA bundle for HTTPS; "" = the system store
};

struct LicenseConfig {
  std::string server;           // license server URL ("" = offline: license files and profiles only)
  std::string public_key_file;  // the pinned Ed25519 key records must verify against
  std::string proxy;            // "" = http_client.proxy; "direct"; or a proxy URL
  std::string admin_email;      // daily expiry mails go here ("" = none)
};

// [updates]: signed pattern bundles (scan/bundle*.h, admin/pattern_manager.h).
struct UpdatesConfig {
  std::string server;          // update server or relay URL ("" = no scheduled updates: offline files only)
  std::string ca_file;         // CA for an https:// server ("" = http_client.ca_file / the system store)
  std::string proxy;           // "" = http_client.proxy; "direct"; or a proxy URL
  std::chrono::milliseconds interval{std::chrono::hours(1)};  // 0 ("") = only on demand
  std::string pattern_root;    // pinned root PEM ("" = <state_dir>/patterns/root.pem, from the starter)
  std::string starter_bundle;  // "" = <bindir>/../share/postern/starter-bundle.tar; "none" = no starter
  uint64_t max_bundle_size = 64ull << 20;  // manifest's files together, and an offline bundle file
  unsigned signer_warning_days = 30;       // alert when the signing certificate expires this soon
  std::chrono::milliseconds timeout{std::chrono::minutes(2)};  // one download
};

// [scan]: the scanning gate (policy/scan_gate.h) and its libclamav engine (scan/engine.h).
enum class ScanAction { kReject, kQuarantine, kTag, kDeliver };       // scan.on_virus
enum class ScanFailureAction { kTempfail, kReject, kAccept };           // scan.failure_action
struct ScanConfig {
  bool enabled = true;
  unsigned threads = 2;           // scan threads (never a loop thread)
  unsigned queue_size = 64;       // scans waiting for a thread; more: scan.failure_action
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};  // per message (CL_ENGINE_MAX_SCANTIME)
  uint64_t max_scan_size = 25ull << 20;  // bytes scanned per message (and per file inside it)
  uint32_t max_files = 10000;     // files inside archives, per message
  uint32_t max_recursion = 16;    // archive nesting
  ScanAction on_virus = ScanAction::kReject;
  ScanFailureAction failure_action = ScanFailureAction::kTempfail;
  std::string clamav_database_dir;  // "" = none; else a freshclam directory (PatternSet "freshclam")
  bool header = true;               // X-Postern-Scan: on every scanned message
  // on_virus = "tag": put in front of the Subject's text (a Subject is added when there is none);
  // "" = the header alone says infected. Printable, no CR/LF, at most 64 octets.
  std::string tag_subject = "[VIRUS] ";
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
  std::string timezone = "UTC";  // licensing's days and 00:00: "UTC" or a fixed offset "+09:00"
  // Whom posternd runs as once its listeners are bound, when started as root (cmd/privilege.h):
  // "" = "postern" if that user exists, else stays root with a warning; "root" = stays root.
  std::string user;
  std::string group;  // "" = the user's primary group
  SmtpConfig smtp;
  RelayConfig relay;
  std::map<std::string, NextHop> routes;  // "*" = default relay host
  OutboundConfig outbound;
  QueueConfig queue;
  TlsConfig tls;
  HttpClientConfig http_client;
  LicenseConfig license;
  UpdatesConfig updates;
  ScanConfig scan;
  std::string admin_listen = "127.0.0.1:8445";
  HttpLimits admin;
  AdminWebConfig admin_web;  // the dashboard's login and sessions (admin/web_auth.h)
  std::string admin_tls_cert_file, admin_tls_key_file;  // empty: <state_dir>/certs/default_console.*
  std::string euq_listen = "127.0.0.1:8447";  // "" = no EUQ listener
  std::string euq_tls_cert_file, euq_tls_key_file;  // empty: <state_dir>/certs/default_console.*
  EuqConfig euq;
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
