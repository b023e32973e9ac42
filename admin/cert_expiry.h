// cert_expiry.h — the expiry watch over the certificates the four TLS roles serve now.
//
// Run every second from a timer on the control loop, with time from the injected clock
// (mta::Runtime::clock; posternd --test-clock moves it). While any certificate in use by any
// role (its default set or an SNI set) is invalid — expired or not yet valid — an alert is open:
// event CERT_INVALID_IN_USE, alert=true, with seed 000's text "Invalid SMTP and HTTPS
// certificates detected in use", naming each such certificate (CertInfo::source: a store entry
// or a file) and its roles. When the set of invalid certificates changes the alert is replaced;
// when none is in use any more (the role rebound, the file replaced) it is resolved and
// CERT_INVALID_RESOLVED says so. Warning events CERT_EXPIRING 30 and 7 days before a certificate
// in use expires, once per certificate (fingerprint) and threshold.
// Security-sensitive: nothing secret; it reads only the published sets' descriptions.
#pragma once

#include <uv.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/clock.h"
#include "tls/tls_roles.h"

namespace postern::admin {

// A certificate in use, with every role (and SNI name) that serves it.
struct CertInUse {
  std::string source, fingerprint, not_before, not_after;
  std::time_t nb = 0, na = 0;
  std::vector<std::string> roles;  // "inbound_mta", "inbound_mta (sni mail.example.com)", ...
};
// Every certificate the roles serve now, by fingerprint.
std::map<std::string, CertInUse> certs_in_use(const tls::TlsRoles& roles);

class CertExpiry {
 public:
  struct Sink {
    std::function<void(const std::string& code, const std::string& severity, const std::string& text, bool alert)> raise;
    std::function<void(const std::string& code)> resolve;
  };
  static constexpr const char* kAlertText = "Invalid SMTP and HTTPS certificates detected in use";

  CertExpiry(const tls::TlsRoles& roles, const Clock& clock, Sink sink);
  ~CertExpiry();
  // One look at the roles now (the timer calls it; tests call it directly).
  void check();
  // Checks every `every_ms` on `loop` until close().
  void start(uv_loop_t* loop, uint64_t every_ms = 1000);
  void close();
  bool alert_open() const { return alert_open_; }

 private:
  const tls::TlsRoles& roles_;
  const Clock& clock_;
  Sink sink_;
  bool alert_open_ = false;
  bool first_ = true;
  std::string open_text_;
  std::set<std::pair<std::string, int>> warned_;  // (fingerprint, days)
  uv_timer_t* timer_ = nullptr;
  void warn_expiring(const CertInUse& c, std::time_t now);
};

}  // namespace postern::admin
