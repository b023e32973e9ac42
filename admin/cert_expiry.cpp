// cert_expiry.cpp — see cert_expiry.h.
#include "admin/cert_expiry.h"

#include <algorithm>
#include <cstdio>

namespace postern::admin {

namespace {

void add_set(std::map<std::string, CertInUse>& out, const tls::ContextSet& set, const std::string& role) {
  for (auto& c : set.certs) {
    CertInUse& u = out[c.fingerprint_sha256];
    if (u.fingerprint.empty()) {
      u = {c.source, c.fingerprint_sha256, c.not_before, c.not_after, c.not_before_unix, c.not_after_unix, {}};
    }
    if (std::find(u.roles.begin(), u.roles.end(), role) == u.roles.end()) u.roles.push_back(role);
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string day_text(std::time_t secs) {
  long days = static_cast<long>(secs / 86400);
  return days == 1 ? "1 day" : std::to_string(days) + " days";
}

}  // namespace

std::map<std::string, CertInUse> certs_in_use(const tls::TlsRoles& roles) {
  std::map<std::string, CertInUse> out;
  for (tls::Role r : tls::kRoles) {
    auto cur = roles.current(r);
    if (!cur) continue;
    add_set(out, *cur, tls::role_name(r));
    for (auto& [name, set] : cur->sni) add_set(out, *set, std::string(tls::role_name(r)) + " (sni " + name + ")");
  }
  return out;
}

CertExpiry::CertExpiry(const tls::TlsRoles& roles, const Clock& clock, Sink sink)
    : roles_(roles), clock_(clock), sink_(std::move(sink)) {}

CertExpiry::~CertExpiry() { close(); }

void CertExpiry::warn_expiring(const CertInUse& c, std::time_t now) {
  // The tightest threshold crossed; the looser ones then count as said.
  for (int days : {7, 30}) {
    if (c.na - now > static_cast<std::time_t>(days) * 86400) continue;
    if (warned_.count({c.fingerprint, days})) return;
    for (int d : {7, 30})
      if (d >= days) warned_.insert({c.fingerprint, d});
    sink_.raise("CERT_EXPIRING", "warning",
                "certificate " + c.source + " (" + join(c.roles) + ") expires at " + c.not_after + ", in " +
                    day_text(c.na - now) + " (warned " + std::to_string(days) + " days ahead)",
                false);
    return;
  }
}

void CertExpiry::check() {
  std::time_t now = static_cast<std::time_t>(clock_.unix_seconds());
  std::string invalid;
  for (auto& [fp, c] : certs_in_use(roles_)) {
    bool expired = c.na > 0 && now >= c.na;
    bool early = c.nb > 0 && now < c.nb;
    if (expired || early) {
      invalid += std::string(invalid.empty() ? "" : "; ") + c.source + " (" + join(c.roles) + ") " +
                 (expired ? "expired at " + c.not_after : "not valid before " + c.not_before);
      continue;
    }
    warn_expiring(c, now);
  }
  bool first = first_;
  first_ = false;
  if (invalid.empty()) {
    if (alert_open_) {
      sink_.resolve("CERT_INVALID_IN_USE");
      sink_.raise("CERT_INVALID_RESOLVED", "info", "no invalid certificate is in use any more (was: " + open_text_ + ")",
                  false);
    } else if (first) {
      sink_.resolve("CERT_INVALID_IN_USE");  // one left open from before a restart
    }
    alert_open_ = false;
    open_text_.clear();
    return;
  }
  if (alert_open_ && invalid == open_text_) return;
  sink_.resolve("CERT_INVALID_IN_USE");  // replaced by the one below (or left from before a restart)
  sink_.raise("CERT_INVALID_IN_USE", "error", std::string(kAlertText) + ": " + invalid, true);
  alert_open_ = true;
  open_text_ = invalid;
}

void CertExpiry::start(uv_loop_t* loop, uint64_t every_ms) {
  if (timer_) return;
  timer_ = new uv_timer_t{};
  uv_timer_init(loop, timer_);
  timer_->data = this;
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<CertExpiry*>(t->data)->check(); }, every_ms, every_ms);
}

void CertExpiry::close() {
  if (!timer_) return;
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  timer_ = nullptr;
}

}  // namespace postern::admin
