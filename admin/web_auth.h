// web_auth.h — the admin dashboard's login: the admin password (an scrypt hash), session
// cookies, CSRF tokens and the lock-out after repeated failures. The bearer token
// (<state_dir>/admin.token) keeps working for the API exactly as before, without CSRF.
//
// Where the password lives: the settings table (key "admin.password_hash"), written through
// the API by `posternctl admin set-password`. Every node on one database reads it (NOTIFY
// "settings"), and the control plane's cache (<state_dir>/cache/control.json, 0600) keeps it for
// starts while the database is down. A changed hash ends every session made under the old one.
//
// Requests on the admin listener, checked when the headers are complete (before any body):
//   - `Authorization: Bearer <token>`: the API, as before (a wrong token: 401);
//   - GET /updates/...: the pattern relay, open;
//   - POST /login: open (a JSON body up to 4 KiB), answered by login();
//   - GET/HEAD of a path outside /api/ and /metrics: the pages, open;
//   - anything else needs the session cookie; a cookie request other than GET/HEAD must carry
//     `X-CSRF-Token` equal to its session's token, else 403.
// Sessions: 256-bit random ids, server-side table, idle and absolute expiry on the injected
// clock (steady time), at most admin.max_sessions (the least recently used one goes).
// Lock-out: admin.login_max_failures failures from one IP lock that IP for admin.login_lockout;
// admin.login_max_failures_overall failures from all IPs within that window lock every login
// for it; while locked, even the right password gets 429 with Retry-After.
// Not thread-safe: the admin listener runs on the control loop.
// Security-sensitive: everything here meets anyone who can reach the admin listener.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

#include "base/clock.h"
#include "conf/config.h"
#include "http/http_server.h"

namespace postern::admin {

// "scrypt$<log2 N>$<r>$<p>$<salt hex>$<hash hex>" (16-byte salt, 32-byte hash).
std::string hash_password(const std::string& password, int log2_n = 15);
// Constant-time compare; false for a malformed hash or parameters beyond the bounds (log2 N
// 10..20, r 1..16, p 1..4).
bool verify_password(const std::string& password, const std::string& stored);
// 8 to 1024 bytes, no NUL: "" or why not.
std::string password_problem(const std::string& password);

constexpr const char* kPasswordSetting = "admin.password_hash";
constexpr const char* kSessionCookie = "postern_admin";

class WebAuth {
 public:
  using Event = std::function<void(const std::string& code, const std::string& severity, const std::string& text)>;
  using HashSource = std::function<std::string()>;  // the stored hash, "" when none is set
  WebAuth(const Clock& clock, std::string token, HashSource hash, Event event);

  void configure(const AdminWebConfig& c) { cfg_ = c; }

  // The listener's hook: 0 = go on, else the status to answer (401, 403, 413).
  int check(const http::Request& r);
  // True when the request carries the right bearer token.
  bool bearer_ok(const http::Request& r) const;

  http::Response login(const http::Request& r);    // POST /login {"password"}
  http::Response logout(const http::Request& r);   // POST /logout (cookie + CSRF, checked by check())
  http::Response session(const http::Request& r);  // GET /api/v1/session -> {"csrf", ...}
  void drop_sessions();

  size_t sessions() const { return sessions_.size(); }
  uint64_t logins_ok() const { return logins_ok_; }
  uint64_t logins_failed() const { return logins_failed_; }
  uint64_t logins_locked() const { return logins_locked_; }

  static constexpr size_t kMaxLoginBody = 4096;
  static constexpr size_t kMaxTrackedIps = 10000;

 private:
  struct Session {
    std::string csrf;
    std::string hash;  // the password hash it was made under
    Clock::SteadyTime created, last_used;
    std::string ip;
  };
  struct IpState {
    uint32_t failures = 0;
    Clock::SteadyTime first_failure{}, last_failure{}, locked_until{};
  };
  Session* find(const http::Request& r);  // valid and not expired (touched), else nullptr
  std::string cookie_id(const http::Request& r) const;
  // Seconds until the login is allowed again for this IP (0 = allowed).
  int64_t locked_for(const std::string& ip, Clock::SteadyTime now);
  void failed(const std::string& ip, Clock::SteadyTime now);
  void expire(Clock::SteadyTime now);

  const Clock& clock_;
  std::string want_;  // "Bearer <token>"
  HashSource hash_;
  Event event_;
  AdminWebConfig cfg_;
  std::map<std::string, Session> sessions_;
  std::map<std::string, IpState> ips_;
  std::deque<Clock::SteadyTime> overall_;  // failure times within the lock-out window
  Clock::SteadyTime overall_locked_until_{};
  uint64_t logins_ok_ = 0, logins_failed_ = 0, logins_locked_ = 0;
};

}  // namespace postern::admin
