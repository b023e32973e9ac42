// tls_roles.cpp — see tls_roles.h.
#include "tls/tls_roles.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace postern::tls {

RoleFiles role_files(Role r, const Config& cfg) {
  switch (r) {
    case Role::kInboundMta: return {cfg.cert_file(), cfg.key_file(), ""};
    case Role::kOutboundMta: return {cfg.cert_file(), cfg.key_file(), cfg.outbound.ca_file};
    case Role::kAdminConsole:
    case Role::kEuqConsole:
      return {cfg.state_dir + "/certs/default_console.crt", cfg.state_dir + "/certs/default_console.key", ""};
  }
  return {};
}

TlsRoles::TlsRoles() {
  std::string err;
  tickets_ = TicketKeys::create(Clock::now(), err);
  if (!tickets_) throw std::runtime_error(err);
}

ContextOptions TlsRoles::options(Role r, std::chrono::milliseconds ticket_rotation, const std::string& ca_file) const {
  ContextOptions o;
  o.server = r != Role::kOutboundMta;
  o.role = r;
  o.ca_file = ca_file;
  if (o.server && ticket_rotation.count() > 0) {
    o.tickets = tickets_;
    // A ticket is decrypted while its key is current or previous; the session itself ends
    // after one period.
    o.session_lifetime = std::max(std::chrono::seconds(1), std::chrono::duration_cast<std::chrono::seconds>(ticket_rotation));
  }
  return o;
}

std::string TlsRoles::reload(Role r, const std::vector<Identity>& ids, const ContextOptions& opt) {
  return role(r).publish(build_context(ids, opt));
}

std::string TlsRoles::reload(Role r, const Config& cfg) {
  RoleFiles f = role_files(r, cfg);
  ContextProvider& p = role(r);
  std::string err = p.publish(build_context_files(f.cert, f.key, options(r, cfg.tls.ticket_key_rotation, f.ca)));
  if (!err.empty()) {
    spdlog::error("reload role={} refused, keeping generation {}: {}", role_name(r), p.generation(), err);
    return err;
  }
  auto cur = p.current();
  spdlog::info("reload role={} generation={} subject={} fingerprint={} not_after={}", role_name(r), cur->generation,
               cur->subject, cur->fingerprint_sha256, cur->not_after);
  return "";
}

bool TlsRoles::tick(Clock::time_point now, std::chrono::milliseconds every) {
  if (!tickets_->tick(now, every)) return false;
  spdlog::info("tls session-ticket keys rotated serial={} (the previous key only decrypts now)",
               tickets_->ring()->current->serial);
  return true;
}

std::string TlsRoles::flush_tickets(Clock::time_point now) {
  if (auto err = tickets_->flush(now); !err.empty()) {
    spdlog::error("tls session-ticket flush failed, keys unchanged: {}", err);
    return err;
  }
  for (Role r : kRoles)
    if (auto cur = current(r); cur && r != Role::kOutboundMta) SSL_CTX_flush_sessions(cur->ctx, 0);
  spdlog::warn("tls session-ticket keys flushed serial={}: no session from before is resumed",
               tickets_->ring()->current->serial);
  return "";
}

}  // namespace postern::tls
