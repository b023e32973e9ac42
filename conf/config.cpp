// config.cpp — loads postern.toml with toml++ and checks every key.
#include "conf/config.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cctype>
#include <cstring>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>
#include <toml++/toml.h>

#include "base/duration.h"

namespace postern {
namespace {

[[noreturn]] void fail(const std::string& key, const std::string& why) {
  throw ConfigError("config key '" + key + "': " + why);
}

// Reads one table, remembering which keys were consumed so unknown ones are refused.
class Section {
 public:
  Section(const toml::table* t, std::string name) : t_(t), name_(std::move(name)) {}

  const toml::node* get(const std::string& k) {
    seen_.insert(k);
    return t_ ? t_->get(k) : nullptr;
  }
  std::string key(const std::string& k) const { return name_.empty() ? k : name_ + "." + k; }

  void str(const std::string& k, std::string& out) {
    if (auto* n = get(k)) {
      auto v = n->value<std::string>();
      if (!v || !n->is_string()) fail(key(k), "must be a string");
      out = *v;
    }
  }
  template <typename U>
  void uint(const std::string& k, U& out, uint64_t min = 0, uint64_t max = UINT32_MAX) {
    if (auto* n = get(k)) {
      if (!n->is_integer()) fail(key(k), "must be an integer");
      int64_t v = *n->value<int64_t>();
      if (v < 0 || static_cast<uint64_t>(v) < min || static_cast<uint64_t>(v) > max)
        fail(key(k), "must be between " + std::to_string(min) + " and " + std::to_string(max));
      out = static_cast<U>(v);
    }
  }
  void boolean(const std::string& k, bool& out) {
    if (auto* n = get(k)) {
      if (!n->is_boolean()) fail(key(k), "must be true or false");
      out = *n->value<bool>();
    }
  }
  void duration(const std::string& k, std::chrono::milliseconds& out, bool allow_empty = false) {
    if (auto* n = get(k)) {
      if (!n->is_string()) fail(key(k), "must be a duration string like \"30s\", \"5m\", \"1h\"");
      std::string s = *n->value<std::string>();
      if (s.empty() && allow_empty) {
        out = std::chrono::milliseconds(0);
        return;
      }
      auto d = parse_duration(s);
      if (!d) fail(key(k), "bad duration '" + s + "' (use e.g. \"30s\", \"5m\", \"1h\", \"5d\")");
      out = *d;
    }
  }
  void strings(const std::string& k, std::vector<std::string>& out) {
    if (auto* n = get(k)) {
      auto* arr = n->as_array();
      if (!arr) fail(key(k), "must be an array of strings");
      out.clear();
      for (auto& e : *arr) {
        if (!e.is_string()) fail(key(k), "must be an array of strings");
        out.push_back(*e.value<std::string>());
      }
    }
  }
  const toml::table* table(const std::string& k) {
    auto* n = get(k);
    if (!n) return nullptr;
    if (!n->is_table()) fail(key(k), "must be a table");
    return n->as_table();
  }
  void finish() {
    if (!t_) return;
    for (auto& [k, v] : *t_) {
      std::string ks(k.str());
      if (!seen_.count(ks)) fail(key(ks), "unknown key");
    }
  }

 private:
  const toml::table* t_;
  std::string name_;
  std::set<std::string> seen_;
};

TlsLevel parse_tls_level(const std::string& key, const std::string& s) {
  if (s == "none") return TlsLevel::kNone;
  if (s == "may") return TlsLevel::kMay;
  if (s == "encrypt") return TlsLevel::kEncrypt;
  if (s == "verify") return TlsLevel::kVerify;
  fail(key, "must be one of none, may, encrypt, verify (got '" + s + "')");
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool parse_port(std::string_view s, uint16_t& port) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0 || v > 65535) return false;
  port = static_cast<uint16_t>(v);
  return true;
}

// "", "direct", or scheme://host[:port][/] with a scheme libcurl can use as a proxy.
bool valid_proxy(const std::string& p) {
  if (p.empty() || p == "direct") return true;
  auto sep = p.find("://");
  if (sep == std::string::npos) return false;
  static const std::set<std::string> schemes{"http", "https", "socks4", "socks4a", "socks5", "socks5h"};
  if (!schemes.count(lower(p.substr(0, sep)))) return false;
  std::string rest = p.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty()) return false;
  return std::all_of(rest.begin(), rest.end(), [](unsigned char ch) {
    return ch != 0 && (std::isalnum(ch) || std::strchr("-._~:@[]%!$&'()*+,;=", ch) != nullptr);
  });
}

// "UTC" or "+HH:MM" / "-HH:MM" up to 14:00 (licensing/calendar.h explains why no named zones).
bool valid_timezone(const std::string& t) {
  if (t == "UTC") return true;
  auto d = [&](size_t i) { return t[i] >= '0' && t[i] <= '9'; };
  if (t.size() != 6 || (t[0] != '+' && t[0] != '-') || t[3] != ':' || !d(1) || !d(2) || !d(4) || !d(5)) return false;
  int h = (t[1] - '0') * 10 + (t[2] - '0'), m = (t[4] - '0') * 10 + (t[5] - '0');
  return m < 60 && (h < 14 || (h == 14 && m == 0));
}

// "25MiB", "512KiB", "1GiB", "1048576" (bytes), or an integer.
bool parse_byte_size(const std::string& s, uint64_t& out) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p == s.data()) return false;
  std::string unit(p, s.data() + s.size());
  uint64_t mul = unit.empty() || unit == "B" ? 1 : unit == "KiB" ? 1ull << 10 : unit == "MiB" ? 1ull << 20
               : unit == "GiB" ? 1ull << 30 : 0;
  if (mul == 0 || v > (UINT64_MAX / mul)) return false;
  out = v * mul;
  return true;
}

void load_scan(const toml::table* t, ScanConfig& sc) {
  Section s(t, "scan");
  s.boolean("enabled", sc.enabled);
  s.uint("threads", sc.threads, 1, 64);
  s.uint("queue_size", sc.queue_size, 1, 100000);
  s.duration("timeout", sc.timeout);
  if (sc.timeout.count() < 1 || sc.timeout > std::chrono::hours(1)) fail("scan.timeout", "must be between 1ms and 1h");
  if (auto* n = s.get("max_scan_size")) {
    std::string txt = n->is_integer() ? std::to_string(*n->value<int64_t>()) : n->value_or(std::string("?"));
    if (!parse_byte_size(txt, sc.max_scan_size) || sc.max_scan_size < 1024 || sc.max_scan_size > (4ull << 30))
      fail("scan.max_scan_size", "must be a size between 1KiB and 4GiB like \"25MiB\" (got '" + txt + "')");
  }
  s.uint("max_files", sc.max_files, 1, 1000000);
  s.uint("max_recursion", sc.max_recursion, 1, 64);
  std::string v = "reject", f = "tempfail";
  s.str("on_virus", v);
  if (v == "reject") sc.on_virus = ScanAction::kReject;
  else if (v == "quarantine") sc.on_virus = ScanAction::kQuarantine;
  else if (v == "tag") sc.on_virus = ScanAction::kTag;
  else if (v == "deliver") sc.on_virus = ScanAction::kDeliver;
  else fail("scan.on_virus", "must be one of reject, quarantine, tag, deliver (got '" + v + "')");
  s.str("failure_action", f);
  if (f == "tempfail") sc.failure_action = ScanFailureAction::kTempfail;
  else if (f == "reject") sc.failure_action = ScanFailureAction::kReject;
  else if (f == "accept") sc.failure_action = ScanFailureAction::kAccept;
  else fail("scan.failure_action", "must be one of tempfail, reject, accept (got '" + f + "')");
  s.str("clamav_database_dir", sc.clamav_database_dir);
  s.boolean("header", sc.header);
  s.str("tag_subject", sc.tag_subject);
  if (sc.tag_subject.size() > 64 ||
      std::any_of(sc.tag_subject.begin(), sc.tag_subject.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; }))
    fail("scan.tag_subject", "must be at most 64 octets without control characters (got '" + sc.tag_subject + "')");
  s.finish();
}

void check_license(const LicenseConfig& l) {
  if (!l.server.empty() && l.server.rfind("http://", 0) != 0 && l.server.rfind("https://", 0) != 0)
    fail("license.server", "must be \"\" or an http:// or https:// URL");
  if (!valid_proxy(l.proxy))
    fail("license.proxy", "must be \"\" (http_client.proxy), \"direct\" or a proxy URL");
  const std::string& a = l.admin_email;
  auto at = a.find('@');
  if (!a.empty() && (at == 0 || at == std::string::npos || at + 1 >= a.size() ||
                     a.find_first_of(" <>\r\n\t,;\"") != std::string::npos || a.size() > 254))
    fail("license.admin_email", "must be \"\" or an address like \"postmaster@example.test\"");
}

}  // namespace

bool parse_listen(const std::string& text, ListenAddr& out) {
  std::string host;
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return false;
    host = text.substr(1, close - 1);
    port = std::string_view(text).substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    host = text.substr(0, colon);
    port = std::string_view(text).substr(colon + 1);
  }
  unsigned char buf[16];
  if (inet_pton(AF_INET, host.c_str(), buf) != 1 && inet_pton(AF_INET6, host.c_str(), buf) != 1)
    return false;
  out.host = host;
  return parse_port(port, out.port);
}

bool parse_next_hop(const std::string& text, NextHop& out) {
  // "[host]:port" or "[host]" (no MX lookup), "host:port" or "host" (MX lookup).
  std::string rest = text;
  out = NextHop{};
  if (!rest.empty() && rest[0] == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos || close == 1) return false;
    out.host = rest.substr(1, close - 1);
    out.mx = false;
    rest = rest.substr(close + 1);
    if (rest.empty()) return true;
    if (rest[0] != ':') return false;
    return parse_port(std::string_view(rest).substr(1), out.port);
  }
  auto colon = rest.rfind(':');
  out.mx = true;
  if (colon == std::string::npos) {
    out.host = rest;
    return !rest.empty();
  }
  out.host = rest.substr(0, colon);
  return !out.host.empty() && parse_port(std::string_view(rest).substr(colon + 1), out.port);
}

bool parse_network(const std::string& text, Network& out) {
  auto slash = text.find('/');
  std::string addr = text.substr(0, slash);
  out = Network{};
  if (inet_pton(AF_INET, addr.c_str(), out.addr) == 1) {
    out.family = AF_INET;
    out.prefix = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), out.addr) == 1) {
    out.family = AF_INET6;
    out.prefix = 128;
  } else {
    return false;
  }
  if (slash != std::string::npos) {
    int max = out.prefix, p = -1;
    std::string_view ps = std::string_view(text).substr(slash + 1);
    auto [e, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), p);
    if (ec != std::errc() || e != ps.data() + ps.size() || p < 0 || p > max) return false;
    out.prefix = p;
  }
  return true;
}

bool network_contains(const Network& net, const unsigned char* addr, int family) {
  if (family != net.family) return false;
  int full = net.prefix / 8, rem = net.prefix % 8;
  if (std::memcmp(net.addr, addr, full) != 0) return false;
  if (rem == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - rem));
  return (net.addr[full] & mask) == (addr[full] & mask);
}

std::string Config::cert_file() const {
  return smtp.tls_cert_file.empty() ? state_dir + "/certs/default_mta.crt" : smtp.tls_cert_file;
}
std::string Config::key_file() const {
  return smtp.tls_key_file.empty() ? state_dir + "/certs/default_mta.key" : smtp.tls_key_file;
}
std::string Config::resolved_log_file() const {
  if (log_file == "-") return "";
  return log_file.empty() ? state_dir + "/log/posternd.log" : log_file;
}

Config parse_config(std::string_view text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << path << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    throw ConfigError(os.str());
  }
  Config c;
  c.path = path;
  Section top(&root, "");

  Section server(top.table("server"), "server");
  server.str("hostname", c.hostname);
  server.str("state_dir", c.state_dir);
  server.uint("workers", c.workers, 0, 256);
  server.str("log_file", c.log_file);
  server.str("log_level", c.log_level);
  server.str("node_name", c.node_name);
  server.duration("drain_timeout", c.drain_timeout);
  server.str("timezone", c.timezone);
  server.str("user", c.user);
  server.str("group", c.group);
  server.finish();
  if (!valid_timezone(c.timezone))
    fail("server.timezone", "must be \"UTC\" or a fixed offset \"+HH:MM\" / \"-HH:MM\" (e.g. \"+09:00\"); named zones "
                            "are not supported");
  if (c.hostname.empty()) fail("server.hostname", "must not be empty");
  if (c.state_dir.empty()) fail("server.state_dir", "must not be empty");
  static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "critical"};
  if (!levels.count(c.log_level)) fail("server.log_level", "must be one of trace, debug, info, warn, error, critical");

  Section smtp(top.table("smtp"), "smtp");
  std::vector<std::string> listen;
  smtp.strings("listen", listen);
  if (smtp.get("listen")) {
    c.smtp.listen.clear();
    for (auto& l : listen) {
      ListenAddr a;
      if (!parse_listen(l, a)) fail("smtp.listen", "bad address '" + l + "' (use \"IP:port\" or \"[IPv6]:port\")");
      c.smtp.listen.push_back(a);
    }
    if (c.smtp.listen.empty()) fail("smtp.listen", "needs at least one address");
  }
  smtp.uint("max_message_size", c.smtp.max_message_size, 1024, 1ull << 40);
  smtp.uint("max_recipients", c.smtp.max_recipients, 1, 100000);
  smtp.uint("max_line_length", c.smtp.max_line_length, 512, 1 << 20);
  smtp.uint("max_commands_before_mail", c.smtp.max_commands_before_mail, 1, 100000);
  smtp.uint("max_junk_commands", c.smtp.max_junk_commands, 1, 100000);
  smtp.uint("max_sessions_per_ip", c.smtp.max_sessions_per_ip, 1, 1000000);
  smtp.uint("max_sessions", c.smtp.max_sessions, 1, 1000000);
  smtp.duration("idle_timeout", c.smtp.idle_timeout);
  smtp.duration("data_timeout", c.smtp.data_timeout);
  smtp.duration("max_session_duration", c.smtp.max_session_duration);
  smtp.duration("write_timeout", c.smtp.write_timeout);
  smtp.duration("close_timeout", c.smtp.close_timeout);
  std::string bare_lf = "reject";
  smtp.str("bare_lf", bare_lf);
  if (bare_lf == "reject") c.smtp.bare_lf = BareLfPolicy::kReject;
  else if (bare_lf == "normalize") c.smtp.bare_lf = BareLfPolicy::kNormalize;
  else fail("smtp.bare_lf", "must be \"reject\" or \"normalize\"");
  smtp.uint("min_free_space", c.smtp.min_free_space, 0, 1ull << 50);
  smtp.str("tls_cert_file", c.smtp.tls_cert_file);
  smtp.str("tls_key_file", c.smtp.tls_key_file);
  smtp.boolean("starttls", c.smtp.starttls);
  smtp.boolean("forbid_unauth_pipelining", c.smtp.forbid_unauth_pipelining);
  smtp.uint("max_header_size", c.smtp.max_header_size, 1024, 1ull << 30);
  std::string long_lines = "fold";
  smtp.str("long_lines", long_lines);
  if (long_lines == "fold") c.smtp.long_lines = LongLinePolicy::kFold;
  else if (long_lines == "reject") c.smtp.long_lines = LongLinePolicy::kReject;
  else if (long_lines == "accept") c.smtp.long_lines = LongLinePolicy::kAccept;
  else fail("smtp.long_lines", "must be \"fold\", \"reject\" or \"accept\"");
  smtp.uint("max_hops", c.smtp.max_hops, 1, 1000);
  smtp.duration("greet_pause", c.smtp.greet_pause, true);
  if (c.smtp.greet_pause > std::chrono::minutes(5))
    fail("smtp.greet_pause", "must be at most 5m (clients wait 5 minutes for a greeting, RFC 5321 4.5.3.2.1)");
  smtp.strings("session_limit_exceptions", c.smtp.session_limit_exception_texts);
  smtp.finish();
  if (c.smtp.tls_cert_file.empty() != c.smtp.tls_key_file.empty())
    fail("smtp.tls_key_file", "tls_cert_file and tls_key_file are set together or not at all");

  Section relay(top.table("relay"), "relay");
  relay.strings("domains", c.relay.domains);
  for (auto& d : c.relay.domains) d = lower(d);
  relay.strings("networks", c.relay.network_texts);
  relay.str("recipient_map", c.relay.recipient_map);
  relay.str("recipient_delimiter", c.relay.recipient_delimiter);
  relay.boolean("verify_recipients", c.relay.verify_recipients);
  relay.str("verify_sender", c.relay.verify_sender);
  relay.duration("verify_timeout", c.relay.verify_timeout);
  relay.duration("verify_positive_ttl", c.relay.verify_positive_ttl);
  relay.duration("verify_negative_ttl", c.relay.verify_negative_ttl);
  std::string unreachable = "defer";
  relay.str("verify_unreachable", unreachable);
  if (unreachable == "accept") c.relay.verify_unreachable_accept = true;
  else if (unreachable != "defer") fail("relay.verify_unreachable", "must be \"defer\" (450 4.1.1) or \"accept\"");
  relay.finish();
  if (c.relay.verify_timeout < std::chrono::seconds(1) || c.relay.verify_timeout > std::chrono::minutes(4))
    fail("relay.verify_timeout", "must be between 1s and 4m (the client waits 5m for the RCPT reply)");
  if (!c.relay.verify_sender.empty() &&
      (c.relay.verify_sender.find('@') == std::string::npos ||
       c.relay.verify_sender.find_first_of("<> \t\r\n\"\\") != std::string::npos))
    fail("relay.verify_sender", "must be empty (the null sender) or a plain address such as \"verify@example.test\"");
  if (c.relay.recipient_delimiter.size() > 8 ||
      c.relay.recipient_delimiter.find_first_of("@\"\\ \t.") != std::string::npos)
    fail("relay.recipient_delimiter", "must be a few characters such as \"+\" (not @, quotes, dots or spaces)");
  if (!c.relay.recipient_map.empty())
    c.relay.recipients = std::make_shared<const RecipientTable>(load_recipient_table(c.relay.recipient_map, "relay.recipient_map"));
  for (auto& n : c.relay.network_texts) {
    Network net;
    if (!parse_network(n, net)) fail("relay.networks", "bad network '" + n + "' (use CIDR like 10.0.0.0/8)");
    c.relay.networks.push_back(net);
  }
  for (auto& n : c.smtp.session_limit_exception_texts) {
    if (n == "relay.networks") {
      c.smtp.session_limit_exceptions.insert(c.smtp.session_limit_exceptions.end(), c.relay.networks.begin(),
                                             c.relay.networks.end());
      continue;
    }
    Network net;
    if (!parse_network(n, net))
      fail("smtp.session_limit_exceptions", "bad network '" + n + "' (use CIDR like 10.0.0.0/8, or \"relay.networks\")");
    c.smtp.session_limit_exceptions.push_back(net);
  }

  if (auto* routes = top.table("routes")) {
    for (auto& [k, v] : *routes) {
      std::string key = "routes." + std::string(k.str());
      if (!v.is_string()) fail(key, "must be a string like \"[192.0.2.1]:25\"");
      NextHop hop;
      if (!parse_next_hop(*v.value<std::string>(), hop)) fail(key, "bad next hop '" + *v.value<std::string>() + "'");
      c.routes[lower(std::string(k.str()))] = hop;
    }
  }

  Section out(top.table("outbound"), "outbound");
  std::string tls = "may";
  out.str("tls", tls);
  c.outbound.tls = parse_tls_level("outbound.tls", tls);
  out.strings("dns_servers", c.outbound.dns_servers);
  for (auto& s : c.outbound.dns_servers) {
    ListenAddr a;
    if (!parse_listen(s, a) ) {
      if (!parse_listen(s + ":53", a)) fail("outbound.dns_servers", "bad server '" + s + "' (use \"IP\" or \"IP:port\")");
    }
  }
  out.str("ca_file", c.outbound.ca_file);
  out.duration("connect_timeout", c.outbound.connect_timeout);
  out.duration("command_timeout", c.outbound.command_timeout);
  out.duration("data_timeout", c.outbound.data_timeout);
  out.duration("final_reply_timeout", c.outbound.final_reply_timeout);
  out.uint("destination_concurrency", c.outbound.destination_concurrency, 1, 10000);
  out.uint("max_connections", c.outbound.max_connections, 1, 100000);
  out.uint("messages_per_connection", c.outbound.messages_per_connection, 1, 10000);
  out.uint("mx_port", c.outbound.mx_port, 1, 65535);
  out.duration("connection_cache_time", c.outbound.connection_cache_time, true);
  out.str("tls_cert_file", c.outbound.tls_cert_file);
  out.str("tls_key_file", c.outbound.tls_key_file);
  if (auto* pol = out.table("tls_policy")) {
    for (auto& [k, v] : *pol) {
      std::string key = "outbound.tls_policy." + std::string(k.str());
      if (!v.is_string()) fail(key, "must be one of none, may, encrypt, verify");
      std::string dom = lower(std::string(k.str()));
      if (!dom.empty() && dom.back() == '.') dom.pop_back();
      if (dom.empty() || dom == "." || dom.find_first_of(" \t[]:@") != std::string::npos)
        fail(key, "must name a domain (\"example.com\") or its subdomains (\".example.com\")");
      c.outbound.tls_policy[dom] = parse_tls_level(key, *v.value<std::string>());
    }
  }
  out.finish();

  Section q(top.table("queue"), "queue");
  q.duration("min_backoff", c.queue.min_backoff);
  q.duration("max_backoff", c.queue.max_backoff);
  q.duration("lifetime", c.queue.lifetime);
  q.duration("delay_warning", c.queue.delay_warning, true);
  q.boolean("deliver", c.queue.deliver);
  std::string sync = "syncfs";
  q.str("sync", sync);
  if (sync != "syncfs" && sync != "file") fail("queue.sync", "must be \"syncfs\" or \"file\" (got '" + sync + "')");
  c.queue.sync_per_file = sync == "file";
  q.finish();
  if (c.queue.max_backoff < c.queue.min_backoff) fail("queue.max_backoff", "must not be below queue.min_backoff");

  Section tlss(top.table("tls"), "tls");
  tlss.duration("ticket_key_rotation", c.tls.ticket_key_rotation, true);
  tlss.finish();
  if (c.tls.ticket_key_rotation.count() != 0 &&
      (c.tls.ticket_key_rotation < std::chrono::minutes(1) || c.tls.ticket_key_rotation > std::chrono::hours(24 * 7)))
    fail("tls.ticket_key_rotation", "must be between 1m and 7d, or \"\" for no session tickets");

  Section hc(top.table("http_client"), "http_client");
  hc.str("proxy", c.http_client.proxy);
  hc.str("ca_file", c.http_client.ca_file);
  hc.finish();
  if (!valid_proxy(c.http_client.proxy))
    fail("http_client.proxy", "must be \"\" (the environment's), \"direct\" or a URL like \"http://proxy.example:3128\" "
                              "(http, https, socks4, socks4a, socks5, socks5h)");

  Section lic(top.table("license"), "license");
  lic.str("server", c.license.server);
  lic.str("public_key_file", c.license.public_key_file);
  lic.str("proxy", c.license.proxy);
  lic.str("admin_email", c.license.admin_email);
  lic.finish();
  check_license(c.license);
  load_scan(top.table("scan"), c.scan);

  Section upd(top.table("updates"), "updates");  // [updates]: pattern bundles
  upd.str("server", c.updates.server);
  upd.str("ca_file", c.updates.ca_file);
  upd.str("proxy", c.updates.proxy);
  upd.duration("interval", c.updates.interval, true);
  upd.str("pattern_root", c.updates.pattern_root);
  upd.str("starter_bundle", c.updates.starter_bundle);
  upd.uint("max_bundle_size", c.updates.max_bundle_size, 4096, 1ull << 32);
  upd.uint("signer_warning_days", c.updates.signer_warning_days, 0, 3650);
  upd.duration("timeout", c.updates.timeout);
  upd.finish();
  if (!c.updates.server.empty() && c.updates.server.rfind("http://", 0) != 0 && c.updates.server.rfind("https://", 0) != 0)
    fail("updates.server", "must be \"\" or an http:// or https:// URL (an update server or another node's admin listener)");
  if (!valid_proxy(c.updates.proxy)) fail("updates.proxy", "must be \"\" (http_client.proxy), \"direct\" or a proxy URL");
  if (c.updates.interval.count() != 0 && c.updates.interval < std::chrono::minutes(1))
    fail("updates.interval", "must be at least 1m, or \"\" for updates on demand only");

  Section admin(top.table("admin"), "admin");
  admin.str("listen", c.admin_listen);
  admin.uint("max_connections", c.admin.max_connections, 1, 100000);
  admin.uint("max_header_size", c.admin.max_header_size, 1024, 1 << 20);
  admin.uint("max_body_size", c.admin.max_body_size, 0, 1ull << 30);
  admin.duration("request_timeout", c.admin.request_timeout);
  admin.duration("idle_timeout", c.admin.idle_timeout);
  admin.duration("write_timeout", c.admin.write_timeout);
  admin.str("tls_cert_file", c.admin_tls_cert_file);
  admin.str("tls_key_file", c.admin_tls_key_file);
  admin.uint("login_max_failures", c.admin_web.login_max_failures, 1, 1000);
  admin.uint("login_max_failures_overall", c.admin_web.login_max_failures_overall, 1, 100000);
  admin.duration("login_lockout", c.admin_web.login_lockout);
  admin.duration("session_idle_timeout", c.admin_web.session_idle_timeout);
  admin.duration("session_lifetime", c.admin_web.session_lifetime);
  admin.uint("max_sessions", c.admin_web.max_sessions, 1, 10000);
  admin.str("web_root", c.admin_web.web_root);
  admin.finish();
  Section euq(top.table("euq"), "euq");
  euq.str("listen", c.euq_listen);
  euq.str("tls_cert_file", c.euq_tls_cert_file);
  euq.str("tls_key_file", c.euq_tls_key_file);
  euq.str("public_url", c.euq.public_url);
  euq.duration("link_lifetime", c.euq.link_lifetime);
  euq.duration("session_lifetime", c.euq.session_lifetime);
  euq.duration("digest_link_lifetime", c.euq.digest_link_lifetime);
  euq.str("digest_time", c.euq.digest_time);
  euq.duration("retention", c.euq.retention, true);
  euq.uint("signin_limit_per_address", c.euq.signin_limit_per_address, 1, 10000);
  euq.uint("signin_limit_per_ip", c.euq.signin_limit_per_ip, 1, 100000);
  euq.duration("signin_window", c.euq.signin_window);
  {
    const std::string& t = c.euq.digest_time;
    bool ok = t.empty() || (t.size() == 5 && t[2] == ':' && std::isdigit(static_cast<unsigned char>(t[0])) &&
                            std::isdigit(static_cast<unsigned char>(t[1])) && std::isdigit(static_cast<unsigned char>(t[3])) &&
                            std::isdigit(static_cast<unsigned char>(t[4])) && std::stoi(t.substr(0, 2)) < 24 &&
                            std::stoi(t.substr(3, 2)) < 60);
    if (!ok) fail("euq.digest_time", "must be \"HH:MM\" (24-hour, server.timezone) or \"\" (got '" + t + "')");
    if (!c.euq.public_url.empty() && c.euq.public_url.rfind("https://", 0) != 0)
      fail("euq.public_url", "must start with https:// (got '" + c.euq.public_url + "')");
    for (auto [k, v] : {std::pair{"euq.link_lifetime", c.euq.link_lifetime}, std::pair{"euq.session_lifetime", c.euq.session_lifetime},
                        std::pair{"euq.digest_link_lifetime", c.euq.digest_link_lifetime}, std::pair{"euq.signin_window", c.euq.signin_window}})
      if (v < std::chrono::seconds(1)) fail(k, "must be at least 1s");
  }
  euq.finish();
  for (auto [k, v] : {std::pair{"admin.listen", &c.admin_listen}, std::pair{"euq.listen", &c.euq_listen}}) {
    ListenAddr a;
    if (!parse_listen(*v, a) && !(v == &c.euq_listen && v->empty())) fail(k, "bad address '" + *v + "'");
  }
  for (auto [sec, cert, key] : {std::tuple{"outbound", &c.outbound.tls_cert_file, &c.outbound.tls_key_file},
                                std::tuple{"admin", &c.admin_tls_cert_file, &c.admin_tls_key_file},
                                std::tuple{"euq", &c.euq_tls_cert_file, &c.euq_tls_key_file}})
    if (cert->empty() != key->empty())
      fail(std::string(sec) + ".tls_key_file", "tls_cert_file and tls_key_file are set together or not at all");
  Section db(top.table("database"), "database");
  db.str("url", c.database_url);
  db.finish();

  top.finish();
  if (c.node_name.empty()) {
    char h[256] = {};
    gethostname(h, sizeof h - 1);
    c.node_name = std::string(h) + ":" + std::to_string(c.smtp.listen.front().port);
  }
  return c;
}

Config load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace postern
