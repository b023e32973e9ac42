// tls_live_test.cpp — the live side of certificates: the expiry watch (alerts and warnings by
// the injected clock), the file watch (certbot-style symlinks, debounce, "two reads agree"), the
// per-role metrics text and the EUQ routes. Certificates are made here, never committed.
#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "admin/cert_expiry.h"
#include "admin/euq_server.h"
#include "tests/unit/test_certs.h"
#include "tls/cert_watch.h"
#include "tls/tls_roles.h"

namespace postern {
namespace {

using testcerts::CertSpec;
using testcerts::TestCert;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

tls::Identity ident(const TestCert& c, const std::string& source) {
  tls::Identity id;
  id.cert_pem = c.cert_pem;
  id.key_pem = c.key_pem;
  id.source = source;
  return id;
}

struct Event {
  std::string code, severity, text;
  bool alert;
};

struct ExpiryFixture {
  FakeClock clock{static_cast<int64_t>(std::time(nullptr))};
  tls::TlsRoles roles;
  std::vector<Event> events;
  std::vector<std::string> resolved;
  admin::CertExpiry watch{roles, clock, admin::CertExpiry::Sink{
      [this](const std::string& c, const std::string& s, const std::string& t, bool a) { events.push_back({c, s, t, a}); },
      [this](const std::string& c) { resolved.push_back(c); }}};
  void bind(tls::Role r, const TestCert& c, const std::string& name) {
    tls::RoleSource src;
    src.ids.push_back(ident(c, name));
    src.origin = "store:" + name;
    ASSERT_EQ(roles.assign(r, src, roles.options(r, 12h)), "");
  }
  size_t count(const std::string& code) const {
    size_t n = 0;
    for (auto& e : events) n += e.code == code;
    return n;
  }
};

TEST(CertExpiry, AlertWhileAnInvalidCertificateIsInUseAndClearsOnRebind) {
  static TestCert console = testcerts::make_cert({.cn = "console", .not_after = 40L * 86400});
  static TestCert mta = testcerts::make_cert({.cn = "mta", .not_after = 400L * 86400});
  ExpiryFixture f;
  f.bind(tls::Role::kInboundMta, mta, "default_mta");
  f.bind(tls::Role::kAdminConsole, console, "default_console");
  f.bind(tls::Role::kEuqConsole, console, "default_console");
  f.watch.check();
  EXPECT_TRUE(f.events.empty());
  EXPECT_EQ(f.resolved, std::vector<std::string>{"CERT_INVALID_IN_USE"});  // a stale one from before a restart
  f.clock.advance(std::chrono::hours(24 * 11));  // 29 days left: the 30-day warning, once
  f.watch.check();
  f.watch.check();
  ASSERT_EQ(f.count("CERT_EXPIRING"), 1u);
  EXPECT_EQ(f.events[0].severity, "warning");
  EXPECT_NE(f.events[0].text.find("default_console (admin_console, euq_console) expires"), std::string::npos)
      << f.events[0].text;
  f.clock.advance(std::chrono::hours(24 * 23));  // 6 days left: the 7-day warning, once
  f.watch.check();
  f.watch.check();
  EXPECT_EQ(f.count("CERT_EXPIRING"), 2u);
  EXPECT_FALSE(f.watch.alert_open());
  f.clock.advance(std::chrono::hours(24 * 7));  // expired while in use
  f.watch.check();
  f.watch.check();
  ASSERT_EQ(f.count("CERT_INVALID_IN_USE"), 1u);
  const Event& a = f.events.back();
  EXPECT_TRUE(a.alert);
  EXPECT_EQ(a.severity, "error");
  EXPECT_EQ(a.text.rfind("Invalid SMTP and HTTPS certificates detected in use: default_console (admin_console, "
                         "euq_console) expired at ", 0), 0u) << a.text;
  EXPECT_EQ(a.text.find("default_mta"), std::string::npos);
  EXPECT_TRUE(f.watch.alert_open());
  // Workaround A: both consoles to default_mta. The admin one alone leaves EUQ invalid: the
  // alert is replaced by one naming only the EUQ role.
  f.bind(tls::Role::kAdminConsole, mta, "default_mta");
  f.watch.check();
  ASSERT_EQ(f.count("CERT_INVALID_IN_USE"), 2u);
  EXPECT_NE(f.events.back().text.find("default_console (euq_console) expired"), std::string::npos);
  f.bind(tls::Role::kEuqConsole, mta, "default_mta");
  size_t resolved_before = f.resolved.size();
  f.watch.check();
  EXPECT_FALSE(f.watch.alert_open());
  EXPECT_EQ(f.resolved.size(), resolved_before + 1);
  EXPECT_EQ(f.events.back().code, "CERT_INVALID_RESOLVED");
  f.watch.check();
  EXPECT_EQ(f.count("CERT_INVALID_RESOLVED"), 1u);
}

TEST(CertExpiry, NotYetValidInUseAndOnlyTheTightestWarningForAShortCertificate) {
  static TestCert soon = testcerts::make_cert({.cn = "soon", .not_after = 3L * 86400});
  ExpiryFixture f;
  f.bind(tls::Role::kInboundMta, soon, "short");
  f.watch.check();
  ASSERT_EQ(f.count("CERT_EXPIRING"), 1u);
  EXPECT_NE(f.events[0].text.find(" days (warned 7 days ahead)"), std::string::npos) << f.events[0].text;
  f.clock.set_wall(static_cast<int64_t>(std::time(nullptr)) - 7200);  // the clock stepped back: not valid yet
  f.watch.check();
  ASSERT_EQ(f.count("CERT_INVALID_IN_USE"), 1u);
  EXPECT_NE(f.events.back().text.find("short (inbound_mta) not valid before"), std::string::npos);
}

TEST(CertLiveMetrics, NotAfterHandshakesAndAssignsPerRole) {
  static TestCert c = testcerts::make_cert({.cn = "m"});
  tls::TlsRoles roles;
  tls::RoleSource src;
  src.ids.push_back(ident(c, "m"));
  ASSERT_EQ(roles.assign(tls::Role::kEuqConsole, src, roles.options(tls::Role::kEuqConsole, 12h)), "");
  tls::RoleSource bad;
  EXPECT_NE(roles.assign(tls::Role::kEuqConsole, bad, roles.options(tls::Role::kEuqConsole, 12h)), "");
  std::string m = tls::tls_role_metrics(roles);
  auto na = roles.current(tls::Role::kEuqConsole)->certs[0].not_after_unix;
  EXPECT_GT(na, std::time(nullptr));
  EXPECT_NE(m.find("postern_tls_certificate_not_after_seconds{role=\"euq_console\",key_type=\"EC-prime256v1\",sni=\"\"} " +
                   std::to_string(na) + "\n"), std::string::npos) << m;
  EXPECT_NE(m.find("postern_tls_assigns_total{role=\"euq_console\"} 1\n"), std::string::npos);
  EXPECT_NE(m.find("postern_tls_assigns_refused_total{role=\"euq_console\"} 1\n"), std::string::npos);
  EXPECT_NE(m.find("postern_tls_handshakes_total{role=\"admin_console\"} 0\n"), std::string::npos);
  EXPECT_NE(m.find("# TYPE postern_tls_handshake_failures_total counter\n"), std::string::npos);
}

TEST(EuqRoutes, HealthOnlyAnd404Elsewhere) {
  auto health = [] { return std::string("{\"status\":\"ok\"}"); };
  http::Request r;
  r.method = "GET";
  r.path = "/health";
  EXPECT_EQ(admin::euq_route(r, health).status, 200);
  EXPECT_EQ(admin::euq_route(r, health).body, "{\"status\":\"ok\"}");
  r.method = "POST";
  EXPECT_EQ(admin::euq_route(r, health).status, 405);
  r.method = "GET";
  for (const char* p : {"/", "/api/v1/health", "/health/x", "/metrics"}) {
    r.path = p;
    EXPECT_EQ(admin::euq_route(r, health).status, 404) << p;
  }
}

// --- the file watch ------------------------------------------------------------------------------

struct WatchFixture {
  uv_loop_t loop{};
  std::vector<std::string> changes;
  std::unique_ptr<tls::CertWatch> watch;
  std::string dir = testcerts::make_temp_dir();
  WatchFixture() {
    uv_loop_init(&loop);
    watch = std::make_unique<tls::CertWatch>(&loop, [this](const std::string& p) { changes.push_back(p); }, 50ms);
  }
  ~WatchFixture() {
    watch->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fs::remove_all(dir);
  }
  // Runs the loop until `n` changes were seen or `limit` passed (bounded).
  void run_until(size_t n, std::chrono::milliseconds limit = 3000ms) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (changes.size() < n && std::chrono::steady_clock::now() < end) {
      uv_run(&loop, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(5ms);
    }
  }
};

TEST(CertWatch, FollowsCertbotStyleSymlinksAndRePointedLinks) {
  WatchFixture f;
  fs::create_directories(f.dir + "/archive/mx");
  fs::create_directories(f.dir + "/live/mx");
  testcerts::write_temp_file(f.dir + "/archive/mx", "fullchain1.pem", "one");
  fs::create_symlink("../../archive/mx/fullchain1.pem", f.dir + "/live/mx/fullchain.pem");
  std::string live = f.dir + "/live/mx/fullchain.pem";
  ASSERT_EQ(f.watch->watch({live}), "");
  EXPECT_EQ(f.watch->directories(), 2u);  // live/mx and archive/mx
  f.run_until(1, 300ms);
  EXPECT_TRUE(f.changes.empty());  // nothing changed yet
  // Renewal: a new archive file, then the link replaced atomically (as certbot does).
  testcerts::write_temp_file(f.dir + "/archive/mx", "fullchain2.pem", "two");
  fs::create_symlink("../../archive/mx/fullchain2.pem", f.dir + "/live/mx/.tmp-link");
  fs::rename(f.dir + "/live/mx/.tmp-link", live);
  f.run_until(1);
  ASSERT_EQ(f.changes.size(), 1u);
  EXPECT_EQ(f.changes[0], live);
  // The target itself rewritten in place: seen through the re-resolved link.
  testcerts::write_temp_file(f.dir + "/archive/mx", "fullchain2.pem", "two, rewritten");
  f.run_until(2);
  ASSERT_EQ(f.changes.size(), 2u);
  EXPECT_EQ(f.changes[1], f.dir + "/archive/mx/fullchain2.pem");
  // Touched without a change of contents: no reload; an unrelated file: nothing.
  testcerts::write_temp_file(f.dir + "/archive/mx", "fullchain2.pem", "two, rewritten");
  testcerts::write_temp_file(f.dir + "/archive/mx", "other.pem", "x");
  f.run_until(3, 500ms);
  EXPECT_EQ(f.changes.size(), 2u);
  EXPECT_EQ(f.watch->triggers(), 2u);
}

TEST(CertWatch, WaitsUntilTwoReadsAgree) {
  WatchFixture f;
  std::string path = testcerts::write_temp_file(f.dir, "cert.pem", "v0");
  ASSERT_EQ(f.watch->watch({path}), "");
  // A slow writer: a change every 40 ms for 400 ms (shorter than debounce + re-read apart).
  auto start = std::chrono::steady_clock::now();
  for (int i = 1; i <= 10; ++i) {
    testcerts::write_temp_file(f.dir, "cert.pem", "v" + std::to_string(i));
    auto until = std::chrono::steady_clock::now() + 40ms;
    while (std::chrono::steady_clock::now() < until) uv_run(&f.loop, UV_RUN_NOWAIT);
  }
  EXPECT_TRUE(f.changes.empty()) << "fired while the file was still changing";
  f.run_until(1);
  ASSERT_EQ(f.changes.size(), 1u);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 400ms);
}

TEST(CertWatch, WatchedFilesAreTheConfiguredOnes) {
  Config cfg;
  cfg.smtp.tls_cert_file = "/a.crt";
  cfg.smtp.tls_key_file = "/a.key";
  cfg.outbound.tls_cert_file = "/a.crt";
  cfg.outbound.tls_key_file = "/a.key";
  cfg.euq_tls_cert_file = "/e.crt";
  cfg.euq_tls_key_file = "/e.key";
  EXPECT_EQ(tls::watched_files(cfg), (std::vector<std::string>{"/a.crt", "/a.key", "/e.crt", "/e.key"}));
  EXPECT_TRUE(tls::watched_files(Config{}).empty());
  auto f = tls::role_files(tls::Role::kEuqConsole, cfg);
  EXPECT_EQ(f.cert, "/e.crt");
  EXPECT_EQ(tls::role_files(tls::Role::kAdminConsole, cfg).cert, "var/certs/default_console.crt");
  cfg.outbound.tls_cert_file = "/o.crt";
  EXPECT_EQ(tls::role_files(tls::Role::kOutboundMta, cfg).cert, "/o.crt");
}

TEST(CertLiveConfig, FilePairsPerRoleAndTheEuqListener) {
  Config c = parse_config(R"([outbound]
tls_cert_file = "/o.crt"
tls_key_file = "/o.key"
[admin]
tls_cert_file = "/a.crt"
tls_key_file = "/a.key"
[euq]
listen = ""
tls_cert_file = "/e.crt"
tls_key_file = "/e.key"
)", "t.toml");
  EXPECT_EQ(c.outbound.tls_cert_file, "/o.crt");
  EXPECT_EQ(c.admin_tls_key_file, "/a.key");
  EXPECT_EQ(c.euq_tls_cert_file, "/e.crt");
  EXPECT_EQ(c.euq_listen, "");
  EXPECT_EQ(parse_config("", "t.toml").euq_listen, "127.0.0.1:8447");
  for (const char* sec : {"outbound", "admin", "euq"}) {
    std::string text = std::string("[") + sec + "]\ntls_cert_file = \"/x.crt\"\n";
    try {
      parse_config(text, "t.toml");
      ADD_FAILURE() << sec << ": a certificate without its key was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(sec) + ".tls_key_file"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_config("[euq]\nlisten = \"nowhere\"\n", "t.toml"), ConfigError);
  EXPECT_THROW(parse_config("[euq]\ncert_file = \"/x\"\n", "t.toml"), ConfigError);  // unknown key
}

}  // namespace
}  // namespace postern
