// web_auth.cpp — see web_auth.h.
#include "admin/web_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "base/log.h"

namespace postern::admin {
using nlohmann::json;

namespace {

const char* kHex = "0123456789abcdef";

std::string to_hex(const unsigned char* p, size_t n) {
  std::string s;
  s.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kHex[p[i] >> 4]);
    s.push_back(kHex[p[i] & 15]);
  }
  return s;
}

bool from_hex(const std::string& s, std::vector<unsigned char>& out) {
  if (s.size() % 2) return false;
  out.clear();
  auto v = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); i += 2) {
    int a = v(s[i]), b = v(s[i + 1]);
    if (a < 0 || b < 0) return false;
    out.push_back(static_cast<unsigned char>(a * 16 + b));
  }
  return true;
}

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) throw std::runtime_error("RAND_bytes failed");
  return to_hex(b.data(), b.size());
}

bool scrypt(const std::string& pw, const std::vector<unsigned char>& salt, int log2_n, int r, int p, unsigned char* out,
            size_t out_len) {
  uint64_t n = uint64_t{1} << log2_n;
  uint64_t maxmem = 128 * n * static_cast<uint64_t>(r) * static_cast<uint64_t>(p) + (16u << 20);
  return EVP_PBE_scrypt(pw.data(), pw.size(), salt.data(), salt.size(), n, static_cast<uint64_t>(r),
                        static_cast<uint64_t>(p), maxmem, out, out_len) == 1;
}

bool same(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

http::Response answer(int status, const json& j) {
  return {status, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}

std::string header(const http::Request& r, const char* name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? "" : it->second;
}

int64_t seconds_until(Clock::SteadyTime then, Clock::SteadyTime now) {
  if (then <= now) return 0;
  return std::chrono::ceil<std::chrono::seconds>(then - now).count();  // never "Retry-After: 0" while locked
}

}  // namespace

std::string hash_password(const std::string& password, int log2_n) {
  unsigned char salt[16], out[32];
  if (RAND_bytes(salt, sizeof salt) != 1) throw std::runtime_error("RAND_bytes failed");
  std::vector<unsigned char> s(salt, salt + sizeof salt);
  if (!scrypt(password, s, log2_n, 8, 1, out, sizeof out)) throw std::runtime_error("scrypt failed");
  return "scrypt$" + std::to_string(log2_n) + "$8$1$" + to_hex(salt, sizeof salt) + "$" + to_hex(out, sizeof out);
}

bool verify_password(const std::string& password, const std::string& stored) {
  std::vector<std::string> f;
  std::stringstream ss(stored);
  std::string part;
  while (std::getline(ss, part, '$')) f.push_back(part);
  if (f.size() != 6 || f[0] != "scrypt") return false;
  int log2_n = 0, r = 0, p = 0;
  try {
    size_t used = 0;
    log2_n = std::stoi(f[1], &used);
    if (used != f[1].size()) return false;
    r = std::stoi(f[2], &used);
    if (used != f[2].size()) return false;
    p = std::stoi(f[3], &used);
    if (used != f[3].size()) return false;
  } catch (const std::exception&) {
    return false;
  }
  if (log2_n < 10 || log2_n > 20 || r < 1 || r > 16 || p < 1 || p > 4) return false;
  std::vector<unsigned char> salt, want;
  if (!from_hex(f[4], salt) || salt.size() < 8 || salt.size() > 64 || !from_hex(f[5], want) || want.size() != 32)
    return false;
  unsigned char got[32];
  if (!scrypt(password, salt, log2_n, r, p, got, sizeof got)) return false;
  return CRYPTO_memcmp(got, want.data(), sizeof got) == 0;
}

std::string password_problem(const std::string& password) {
  if (password.size() < 8) return "the password must have at least 8 characters";
  if (password.size() > 1024) return "the password may have at most 1024 bytes";
  if (password.find('\0') != std::string::npos) return "the password may not contain NUL";
  return "";
}

WebAuth::WebAuth(const Clock& clock, std::string token, HashSource hash, Event event)
    : clock_(clock), want_("Bearer " + token), hash_(std::move(hash)), event_(std::move(event)) {}

bool WebAuth::bearer_ok(const http::Request& r) const { return same(r.authorization, want_); }

std::string WebAuth::cookie_id(const http::Request& r) const {
  return http::cookie_value(r, kSessionCookie);
}

void WebAuth::expire(Clock::SteadyTime now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    const Session& s = it->second;
    if (now - s.last_used >= cfg_.session_idle_timeout || now - s.created >= cfg_.session_lifetime)
      it = sessions_.erase(it);
    else
      ++it;
  }
}

WebAuth::Session* WebAuth::find(const http::Request& r) {
  std::string id = cookie_id(r);
  if (id.size() != 64) return nullptr;
  auto now = clock_.steady();
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  Session& s = it->second;
  if (now - s.last_used >= cfg_.session_idle_timeout || now - s.created >= cfg_.session_lifetime ||
      !same(s.hash, hash_ ? hash_() : "")) {
    sessions_.erase(it);
    return nullptr;
  }
  s.last_used = now;
  return &s;
}

int WebAuth::check(const http::Request& r) {
  const std::string& m = r.method;
  const std::string& p = r.path;
  bool read = m == "GET" || m == "HEAD";
  if (m == "GET" && p.rfind("/updates/", 0) == 0) return 0;  // the pattern relay: signed bundles, no token
  if (!r.authorization.empty()) return bearer_ok(r) ? 0 : 401;
  if (p == "/login" && m == "POST") {
    auto cl = header(r, "content-length");
    if (cl.size() > 6 || !std::all_of(cl.begin(), cl.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        (!cl.empty() && std::stoul(cl) > kMaxLoginBody))
      return 413;  // chunked bodies are bounded by admin.max_body_size
    return 0;
  }
  bool api = p.rfind("/api/", 0) == 0 || p == "/api" || p == "/metrics" || p == "/logout";
  if (!api && read) return 0;  // the pages
  Session* s = find(r);
  if (!s) return 401;
  if (!read && !same(header(r, "x-csrf-token"), s->csrf)) {
    spdlog::warn("admin web: {} {} from {} refused: no or wrong CSRF token", m, esc(p, 200), r.peer_ip);
    return 403;
  }
  return 0;
}

int64_t WebAuth::locked_for(const std::string& ip, Clock::SteadyTime now) {
  while (!overall_.empty() && now - overall_.front() >= cfg_.login_lockout) overall_.pop_front();
  int64_t wait = seconds_until(overall_locked_until_, now);
  if (auto it = ips_.find(ip); it != ips_.end()) wait = std::max(wait, seconds_until(it->second.locked_until, now));
  return wait;
}

void WebAuth::failed(const std::string& ip, Clock::SteadyTime now) {
  ++logins_failed_;
  if (ips_.size() >= kMaxTrackedIps && !ips_.count(ip)) {
    // Bounded: the IP whose last failure is oldest goes (a locked one only when all are).
    auto victim = ips_.end();
    for (auto it = ips_.begin(); it != ips_.end(); ++it) {
      bool locked = it->second.locked_until > now;
      bool vlocked = victim != ips_.end() && victim->second.locked_until > now;
      if (victim == ips_.end() || (vlocked && !locked) ||
          (vlocked == locked && it->second.last_failure < victim->second.last_failure))
        victim = it;
    }
    ips_.erase(victim);
  }
  IpState& st = ips_[ip];
  if (st.failures == 0 || now - st.first_failure >= cfg_.login_lockout) {
    st.failures = 0;
    st.first_failure = now;
  }
  ++st.failures;
  st.last_failure = now;
  overall_.push_back(now);
  if (overall_.size() > cfg_.login_max_failures_overall * 2u) overall_.pop_front();
  auto mins = std::chrono::duration_cast<std::chrono::seconds>(cfg_.login_lockout).count();
  if (st.failures >= cfg_.login_max_failures) {
    st.locked_until = now + cfg_.login_lockout;
    st.failures = 0;
    event_("ADMIN_LOGIN_LOCKED", "warning",
           "dashboard login locked for client " + ip + " for " + std::to_string(mins) + " s after " +
               std::to_string(cfg_.login_max_failures) + " failed logins");
  }
  if (overall_.size() >= cfg_.login_max_failures_overall && overall_locked_until_ <= now) {
    overall_locked_until_ = now + cfg_.login_lockout;
    overall_.clear();
    event_("ADMIN_LOGIN_LOCKED", "error",
           "dashboard login locked for every client for " + std::to_string(mins) + " s after " +
               std::to_string(cfg_.login_max_failures_overall) + " failed logins from all clients");
  }
}

http::Response WebAuth::login(const http::Request& r) {
  auto now = clock_.steady();
  const std::string& ip = r.peer_ip;
  if (int64_t wait = locked_for(ip, now); wait > 0) {
    ++logins_locked_;
    spdlog::warn("admin web: login from {} refused: locked out for {} s more", ip, wait);
    auto resp = answer(429, {{"error", "too many failed logins: try again in " + std::to_string(wait) + " seconds"},
                             {"retry_after", wait}});
    resp.headers.emplace_back("Retry-After", std::to_string(wait));
    return resp;
  }
  if (header(r, "content-type").rfind("application/json", 0) != 0)
    return answer(415, {{"error", "the login body must be JSON: {\"password\": \"...\"}"}});
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("password") || !j["password"].is_string())
    return answer(400, {{"error", "the login body must be JSON: {\"password\": \"...\"}"}});
  std::string stored = hash_ ? hash_() : "";
  if (stored.empty())
    return answer(403, {{"error", "no admin password is set: run posternctl admin set-password"}});
  // One scrypt (log2 N = 15: about 0.1 s, 32 MiB) on the control loop per attempt; the lock-out
  // bounds how many an attacker gets.
  if (!verify_password(j["password"].get<std::string>(), stored)) {
    event_("ADMIN_LOGIN_FAILED", "warning", "dashboard login failed from client " + ip);
    failed(ip, now);
    return answer(401, {{"error", "wrong password"}});
  }
  ips_.erase(ip);
  expire(now);
  while (sessions_.size() >= cfg_.max_sessions) {
    auto lru = std::min_element(sessions_.begin(), sessions_.end(),
                                [](auto& a, auto& b) { return a.second.last_used < b.second.last_used; });
    sessions_.erase(lru);
  }
  std::string id = random_hex(32);
  Session s{random_hex(32), stored, now, now, ip};
  std::string csrf = s.csrf;
  sessions_.emplace(id, std::move(s));
  ++logins_ok_;
  event_("ADMIN_LOGIN_OK", "info", "dashboard login from client " + ip);
  auto resp = answer(200, {{"csrf", csrf},
                           {"idle_timeout", std::chrono::duration_cast<std::chrono::seconds>(cfg_.session_idle_timeout).count()}});
  resp.headers.emplace_back("Set-Cookie", std::string(kSessionCookie) + "=" + id +
                                              "; Secure; HttpOnly; SameSite=Strict; Path=/");
  resp.headers.emplace_back("Cache-Control", "no-store");
  return resp;
}

http::Response WebAuth::logout(const http::Request& r) {
  std::string id = cookie_id(r);
  if (auto it = sessions_.find(id); it != sessions_.end()) {
    spdlog::info("admin web: logout from {}", r.peer_ip);
    sessions_.erase(it);
  }
  auto resp = answer(200, {{"logged_out", true}});
  resp.headers.emplace_back("Set-Cookie", std::string(kSessionCookie) +
                                              "=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
  return resp;
}

http::Response WebAuth::session(const http::Request& r) {
  if (bearer_ok(r)) return answer(200, {{"auth", "token"}, {"csrf", nullptr}});
  Session* s = find(r);
  if (!s) return answer(401, {{"error", "not logged in"}});
  auto resp = answer(200, {{"auth", "session"}, {"csrf", s->csrf}});
  resp.headers.emplace_back("Cache-Control", "no-store");
  return resp;
}

void WebAuth::drop_sessions() { sessions_.clear(); }

}  // namespace postern::admin
