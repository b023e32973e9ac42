// tls_roles.h — the one registry of TLS roles: inbound MTA, outbound MTA, admin console and EUQ
// console. Each role holds its current immutable ContextSet (an atomic shared_ptr snapshot,
// ContextProvider); a reload builds the new set off the data path and publishes it, or keeps
// the old one and says why. The session-ticket keys sit here, outside the generations, shared by
// every server role, rotated on a schedule and flushed on an admin's request.
// Readers (worker loops, the admin server) call current(role) and keep the shared_ptr for the
// life of their SSL; publishing never waits for them.
// A certificate change needs no ticket flush: every server set's session-id context is derived
// from its role and certificates, so OpenSSL never resumes a session (ticket or cache) under a
// set with other certificates. flush_tickets() is for an admin who replaced a key for cause.
// Security-sensitive: which key material each role serves, and the ticket keys' life.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "conf/config.h"
#include "tls/context_provider.h"
#include "tls/ticket_keys.h"

namespace postern::tls {

// The files a role serves under the static configuration (an assign from the certificate store
// overrides them, see reload()): inbound smtp.tls_cert_file/tls_key_file (default
// <state_dir>/certs/default_mta.*), outbound [outbound] tls_cert_file/tls_key_file (default: the
// inbound pair), the consoles [admin] / [euq] tls_cert_file/tls_key_file (default
// <state_dir>/certs/default_console.*).
struct RoleFiles {
  std::string cert, key, ca;  // ca: the outbound role's verify store ("" = the system's)
};
RoleFiles role_files(Role r, const Config& cfg);

// What a role serves, as a publisher (the certificate store, the file-backed config) hands it
// over: one identity per key type for the default set, and (inbound role only) per-SNI-name
// sets. `origin` says who published it ("file:PATH", "store:NAME", ...).
struct RoleSource {
  std::vector<Identity> ids;
  std::vector<std::pair<std::string, std::vector<Identity>>> sni;
  std::string origin;
};

class TlsRoles {
 public:
  using Clock = TicketKeys::Clock;
  // Makes the first ticket key. Throws std::runtime_error (start-up only) when it cannot.
  TlsRoles();

  ContextProvider& role(Role r) { return roles_[static_cast<size_t>(r)]; }
  const ContextProvider& role(Role r) const { return roles_[static_cast<size_t>(r)]; }
  std::shared_ptr<const ContextSet> current(Role r) const { return role(r).current(); }

  // The options a role's contexts are built with: server or client, the session-id context,
  // the ticket keys and lifetime (`ticket_rotation` 0 = no session tickets).
  ContextOptions options(Role r, std::chrono::milliseconds ticket_rotation, const std::string& ca_file = "") const;
  // Builds role r's set from PEM identities and publishes it. "" or the reason it was refused
  // (the role then keeps the set it had).
  std::string reload(Role r, const std::vector<Identity>& ids, const ContextOptions& opt);
  // The same from the role's files under `cfg`, logged (one line, success or refusal). A role
  // last assigned from elsewhere (the store: an origin not "file:...") keeps that assignment
  // while the config names the same files as when it was made; a different file pair wins.
  std::string reload(Role r, const Config& cfg);
  // Builds role r's whole set (every key type and SNI set) all or nothing and publishes it
  // atomically: the next handshake on any worker uses it, sessions in flight keep theirs.
  // Logged (one line). "" or the reason it was refused (the role keeps what it had). The
  // role, session tickets and counters of `opt` are forced to the role's own.
  std::string assign(Role r, const RoleSource& src, const ContextOptions& opt);
  const RoleStats& stats(Role r) const { return *stats_[static_cast<size_t>(r)]; }

  // The clock options() dates its validity checks by (null: the system's). posternd passes the
  // injected one (mta::Runtime::clock), so --test-clock moves what "expired" means everywhere.
  void set_clock(const postern::Clock* c) { clock_ = c; }

  TicketKeys& tickets() { return *tickets_; }
  // Rotates the ticket keys when the current one is `every` old (0: never). True if it did.
  bool tick(Clock::time_point now, std::chrono::milliseconds every);
  // New ticket key, every older one dropped, and the server session caches of the contexts in
  // use emptied: no session from before is resumed. "" or the error (keys unchanged then).
  std::string flush_tickets(Clock::time_point now);

 private:
  std::array<ContextProvider, 4> roles_{ContextProvider(Role::kInboundMta), ContextProvider(Role::kOutboundMta),
                                        ContextProvider(Role::kAdminConsole), ContextProvider(Role::kEuqConsole)};
  std::shared_ptr<TicketKeys> tickets_;
  std::array<std::shared_ptr<RoleStats>, 4> stats_;
  // Per role: the config's file pair at the last reload from the config, whether the role was
  // assigned from elsewhere since, and the pair it was then. Touched only by the control thread.
  std::array<std::string, 4> last_files_, override_files_;
  std::array<bool, 4> overridden_{};
  const postern::Clock* clock_ = nullptr;
  void log_published(Role r, const char* how);
};

// The /metrics text of the roles: per role the served certificates' notAfter (unix seconds, a
// gauge per key type and SNI name), handshakes and handshake failures, assigns and refused ones.
std::string tls_role_metrics(const TlsRoles& roles);

}  // namespace postern::tls
