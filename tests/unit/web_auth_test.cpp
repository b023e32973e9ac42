// web_auth_test.cpp — the dashboard's password hashing, sessions, CSRF and lock-out
// (admin/web_auth.h), driven by a FakeClock.
#include "admin/web_auth.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <vector>

using namespace postern;
using namespace postern::admin;
using nlohmann::json;

namespace {

struct Fixture {
  FakeClock clock;
  std::string hash = hash_password("correct horse", 10);  // small N: a fast test
  std::vector<std::string> events;
  WebAuth auth{clock, "tok123", [this] { return hash; },
               [this](const std::string& c, const std::string&, const std::string&) { events.push_back(c); }};
  Fixture() {
    AdminWebConfig c;
    c.login_max_failures = 3;
    c.login_max_failures_overall = 10;
    c.login_lockout = std::chrono::minutes(15);
    c.session_idle_timeout = std::chrono::minutes(30);
    c.session_lifetime = std::chrono::hours(12);
    c.max_sessions = 4;
    auth.configure(c);
  }
  http::Request login_req(const std::string& pw, const std::string& ip = "192.0.2.1") {
    http::Request r;
    r.method = "POST";
    r.path = "/login";
    r.peer_ip = ip;
    r.headers["content-type"] = "application/json";
    r.body = json{{"password", pw}}.dump();
    return r;
  }
  // Logs in; returns (cookie header value, csrf).
  std::pair<std::string, std::string> login(const std::string& ip = "192.0.2.1") {
    auto resp = auth.login(login_req("correct horse", ip));
    EXPECT_EQ(resp.status, 200) << resp.body;
    std::string cookie;
    for (auto& [k, v] : resp.headers)
      if (k == "Set-Cookie") cookie = v;
    EXPECT_NE(cookie.find("Secure"), std::string::npos);
    EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
    EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
    EXPECT_NE(cookie.find("Path=/"), std::string::npos);
    std::string id = cookie.substr(0, cookie.find(';'));
    return {id, json::parse(resp.body)["csrf"].get<std::string>()};
  }
  http::Request api(const std::string& method, const std::string& path, const std::string& cookie,
                    const std::string& csrf = "") {
    http::Request r;
    r.method = method;
    r.path = path;
    r.peer_ip = "192.0.2.1";
    if (!cookie.empty()) r.headers["cookie"] = "other=1; " + cookie;
    if (!csrf.empty()) r.headers["x-csrf-token"] = csrf;
    return r;
  }
};

}  // namespace

TEST(WebAuth, HashVerifiesOnlyTheRightPasswordAndIsSalted) {
  std::string a = hash_password("s3cret-password", 10), b = hash_password("s3cret-password", 10);
  EXPECT_NE(a, b);  // salted
  EXPECT_EQ(a.rfind("scrypt$10$8$1$", 0), 0u) << a;
  EXPECT_TRUE(verify_password("s3cret-password", a));
  EXPECT_TRUE(verify_password("s3cret-password", b));
  EXPECT_FALSE(verify_password("s3cret-passwore", a));
  EXPECT_FALSE(verify_password("", a));
  // Malformed or out-of-bounds hashes never verify (and never run an unbounded scrypt).
  EXPECT_FALSE(verify_password("s3cret-password", ""));
  EXPECT_FALSE(verify_password("s3cret-password", "plain"));
  std::string tail = a.substr(std::string("scrypt$10").size());
  EXPECT_FALSE(verify_password("s3cret-password", "scrypt$30" + tail));
  EXPECT_FALSE(verify_password("s3cret-password", "scrypt$9" + tail));
  EXPECT_FALSE(verify_password("s3cret-password", a.substr(0, a.size() - 2)));
  EXPECT_FALSE(verify_password("s3cret-password", a + "00"));
  EXPECT_EQ(password_problem("short"), "the password must have at least 8 characters");
  EXPECT_EQ(password_problem("long enough"), "");
  EXPECT_NE(password_problem(std::string(1025, 'x')), "");
}

TEST(WebAuth, PagesOpenApiNeedsCookieOrToken) {
  Fixture f;
  EXPECT_EQ(f.auth.check(f.api("GET", "/", "")), 0);
  EXPECT_EQ(f.auth.check(f.api("GET", "/app.js", "")), 0);
  EXPECT_EQ(f.auth.check(f.api("GET", "/updates/manifest.json", "")), 0);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", "")), 401);
  EXPECT_EQ(f.auth.check(f.api("GET", "/metrics", "")), 401);
  EXPECT_EQ(f.auth.check(f.api("POST", "/", "")), 401);  // only reads of pages are open
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", "postern_admin=" + std::string(64, 'a'))), 401);
  auto bearer = f.api("POST", "/api/v1/reload", "");
  bearer.authorization = "Bearer tok123";
  EXPECT_EQ(f.auth.check(bearer), 0);  // the token: no CSRF
  bearer.authorization = "Bearer tok124";
  EXPECT_EQ(f.auth.check(bearer), 401);
  auto big = f.login_req("x");
  big.headers["content-length"] = "5000";
  EXPECT_EQ(f.auth.check(big), 413);
  big.headers["content-length"] = "12x";
  EXPECT_EQ(f.auth.check(big), 413);
  big.headers["content-length"] = "40";
  EXPECT_EQ(f.auth.check(big), 0);
}

TEST(WebAuth, SessionCookieAndCsrf) {
  Fixture f;
  auto [cookie, csrf] = f.login();
  EXPECT_EQ(csrf.size(), 64u);
  EXPECT_EQ(cookie.size(), std::string("postern_admin=").size() + 64);
  EXPECT_EQ(f.auth.sessions(), 1u);
  EXPECT_EQ(f.events, std::vector<std::string>{"ADMIN_LOGIN_OK"});
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cookie)), 0);
  auto s = f.auth.session(f.api("GET", "/api/v1/session", cookie));
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(json::parse(s.body)["csrf"], csrf);
  // A change needs the token: none, a wrong one, the right one.
  EXPECT_EQ(f.auth.check(f.api("POST", "/api/v1/queue/flush", cookie)), 403);
  EXPECT_EQ(f.auth.check(f.api("POST", "/api/v1/queue/flush", cookie, std::string(64, '0'))), 403);
  EXPECT_EQ(f.auth.check(f.api("DELETE", "/api/v1/queue/ABC", cookie, csrf.substr(1))), 403);
  EXPECT_EQ(f.auth.check(f.api("POST", "/api/v1/queue/flush", cookie, csrf)), 0);
  // Another session's token does not fit this one.
  auto [cookie2, csrf2] = f.login();
  EXPECT_NE(cookie, cookie2);
  EXPECT_NE(csrf, csrf2);
  EXPECT_EQ(f.auth.check(f.api("POST", "/api/v1/queue/flush", cookie, csrf2)), 403);
  // Logout ends it.
  EXPECT_EQ(f.auth.check(f.api("POST", "/logout", cookie)), 403);
  EXPECT_EQ(f.auth.check(f.api("POST", "/logout", cookie, csrf)), 0);
  auto out = f.auth.logout(f.api("POST", "/logout", cookie, csrf));
  EXPECT_EQ(out.status, 200);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cookie)), 401);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cookie2)), 0);
}

TEST(WebAuth, SessionsExpireAndAreBounded) {
  Fixture f;
  auto [cookie, csrf] = f.login();
  f.clock.advance(std::chrono::minutes(29));
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cookie)), 0);  // touched: idle time starts again
  f.clock.advance(std::chrono::minutes(29));
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cookie)), 0);
  f.clock.advance(std::chrono::minutes(30));
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cookie)), 401);  // idle 30 min
  // The absolute lifetime, even when used all along.
  auto [c2, t2] = f.login();
  for (int i = 0; i < 12 * 3; ++i) {
    f.clock.advance(std::chrono::minutes(20));
    int want = (i + 1) * 20 >= 12 * 60 ? 401 : 0;
    ASSERT_EQ(f.auth.check(f.api("GET", "/api/v1/health", c2)), want) << i;
    if (want) break;
  }
  // At most max_sessions (4): the least recently used goes.
  std::vector<std::string> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(f.login().first);
    f.clock.advance(std::chrono::seconds(1));
  }
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cs[0])), 0);  // cs[0] used last
  f.clock.advance(std::chrono::seconds(1));
  auto c5 = f.login().first;
  EXPECT_EQ(f.auth.sessions(), 4u);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cs[1])), 401);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", cs[0])), 0);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", c5)), 0);
  // A new password ends every session made under the old one.
  f.hash = hash_password("another password", 10);
  EXPECT_EQ(f.auth.check(f.api("GET", "/api/v1/health", c5)), 401);
}

TEST(WebAuth, LockOutPerIpThenOverall) {
  Fixture f;
  EXPECT_EQ(f.auth.login(f.login_req("wrong-1")).status, 401);
  EXPECT_EQ(f.auth.login(f.login_req("wrong-2")).status, 401);
  EXPECT_EQ(f.auth.login(f.login_req("wrong-3")).status, 401);  // the third: locked from now
  auto locked = f.auth.login(f.login_req("correct horse"));
  EXPECT_EQ(locked.status, 429) << locked.body;
  std::string retry;
  for (auto& [k, v] : locked.headers)
    if (k == "Retry-After") retry = v;
  EXPECT_EQ(retry, "900");
  EXPECT_EQ(f.events.back(), "ADMIN_LOGIN_LOCKED");
  // Another IP is not locked.
  EXPECT_EQ(f.auth.login(f.login_req("correct horse", "192.0.2.2")).status, 200);
  f.clock.advance(std::chrono::minutes(14));
  EXPECT_EQ(f.auth.login(f.login_req("correct horse")).status, 429);
  f.clock.advance(std::chrono::minutes(1));
  EXPECT_EQ(f.auth.login(f.login_req("correct horse")).status, 200);
  // A success clears the count: two failures, a success, two failures: not locked.
  for (auto pw : {"a-wrong-one", "b-wrong-one"}) EXPECT_EQ(f.auth.login(f.login_req(pw)).status, 401);
  EXPECT_EQ(f.auth.login(f.login_req("correct horse")).status, 200);
  for (auto pw : {"a-wrong-one", "b-wrong-one"}) EXPECT_EQ(f.auth.login(f.login_req(pw)).status, 401);
  EXPECT_EQ(f.auth.login(f.login_req("correct horse")).status, 200);
  // Overall: 10 failures from many IPs within the window lock every client.
  f.clock.advance(std::chrono::minutes(20));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f.auth.login(f.login_req("nope-nope", "198.51.100." + std::to_string(i))).status, 401);
  EXPECT_EQ(f.auth.login(f.login_req("correct horse", "203.0.113.9")).status, 429);
  f.clock.advance(std::chrono::minutes(16));
  EXPECT_EQ(f.auth.login(f.login_req("correct horse", "203.0.113.9")).status, 200);
  EXPECT_EQ(f.auth.logins_locked(), 3u);
}

TEST(WebAuth, LoginRefusesBadBodiesAndNoPassword) {
  Fixture f;
  auto r = f.login_req("correct horse");
  r.headers["content-type"] = "application/x-www-form-urlencoded";
  EXPECT_EQ(f.auth.login(r).status, 415);  // a cross-site form cannot log anyone in
  r = f.login_req("x");
  r.body = "{\"password\": 5}";
  EXPECT_EQ(f.auth.login(r).status, 400);
  r.body = "not json";
  EXPECT_EQ(f.auth.login(r).status, 400);
  f.hash = "";
  EXPECT_EQ(f.auth.login(f.login_req("correct horse")).status, 403);
  EXPECT_EQ(f.auth.logins_failed(), 0u);  // none of these counted as a guess
}
