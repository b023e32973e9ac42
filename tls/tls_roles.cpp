// tls_roles.cpp — see tls_roles.h.
#include "tls/tls_roles.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

#include "base/log.h"

namespace postern::tls {

RoleFiles role_files(Role r, const Config& cfg) {
  auto console = [&](const std::string& cert, const std::string& key) -> RoleFiles {
    if (!cert.empty()) return {cert, key, ""};
    return {cfg.state_dir + "/certs/default_console.crt", cfg.state_dir + "/certs/default_console.key", ""};
  };
  switch (r) {
    case Role::kInboundMta: return {cfg.cert_file(), cfg.key_file(), ""};
    case Role::kOutboundMta:
      if (!cfg.outbound.tls_cert_file.empty())
        return {cfg.outbound.tls_cert_file, cfg.outbound.tls_key_file, cfg.outbound.ca_file};
      return {cfg.cert_file(), cfg.key_file(), cfg.outbound.ca_file};
    case Role::kAdminConsole: return console(cfg.admin_tls_cert_file, cfg.admin_tls_key_file);
    case Role::kEuqConsole: return console(cfg.euq_tls_cert_file, cfg.euq_tls_key_file);
  }
  return {};
}

TlsRoles::TlsRoles() {
  for (auto& st : stats_) st = std::make_shared<RoleStats>();
  std::string err;
  tickets_ = TicketKeys::create(Clock::now(), err);
  if (!tickets_) throw std::runtime_error(err);
}

ContextOptions TlsRoles::options(Role r, std::chrono::milliseconds ticket_rotation, const std::string& ca_file) const {
  ContextOptions o;
  o.server = r != Role::kOutboundMta;
  o.role = r;
  o.ca_file = ca_file;
  o.stats = stats_[static_cast<size_t>(r)];
  o.now = clock_ ? static_cast<std::time_t>(clock_->unix_seconds()) : 0;
  if (o.server && ticket_rotation.count() > 0) {
    o.tickets = tickets_;
    // A ticket is decrypted while its key is current or previous; the session itself ends
    // after one period.
    o.session_lifetime = std::max(std::chrono::seconds(1), std::chrono::duration_cast<std::chrono::seconds>(ticket_rotation));
  }
  return o;
}

std::string TlsRoles::reload(Role r, const std::vector<Identity>& ids, const ContextOptions& opt) {
  RoleSource src;
  src.ids = ids;
  src.origin = ids.empty() ? "" : ids.front().source;
  return assign(r, src, opt);
}

void TlsRoles::log_published(Role r, const char* how) {
  auto cur = current(r);
  std::string certs;
  for (auto& c : cur->certs) certs += (certs.empty() ? "" : ",") + c.key_type + ":" + c.fingerprint_sha256;
  spdlog::info("{} role={} generation={} origin={} subject={} certs={} not_after={} sni={}", how, role_name(r),
               cur->generation, esc(cur->origin), esc(cur->subject), certs, cur->not_after, cur->sni.size());
}

std::string TlsRoles::assign(Role r, const RoleSource& src, const ContextOptions& opt) {
  ContextOptions o = opt;
  o.role = r;
  o.server = r != Role::kOutboundMta;
  o.stats = stats_[static_cast<size_t>(r)];
  if (!src.sni.empty() && r != Role::kInboundMta) {
    role(r).publish({nullptr, "SNI names are for the inbound role only"});
    spdlog::error("assign role={} refused, keeping generation {}: SNI names are for the inbound role only",
                  role_name(r), role(r).generation());
    return "SNI names are for the inbound role only";
  }
  BuildResult br = build_context_sni(src.ids, src.sni, o);
  if (br.set) br.set->origin = src.origin;
  ContextProvider& p = role(r);
  if (auto err = p.publish(std::move(br)); !err.empty()) {
    spdlog::error("assign role={} origin={} refused, keeping generation {}: {}", role_name(r), esc(src.origin),
                  p.generation(), esc(err));
    return err;
  }
  auto i = static_cast<size_t>(r);
  overridden_[i] = src.origin.rfind("file:", 0) != 0;
  if (overridden_[i]) override_files_[i] = last_files_[i];
  log_published(r, "assign");
  return "";
}

std::string TlsRoles::reload(Role r, const Config& cfg) {
  RoleFiles f = role_files(r, cfg);
  std::string pair = f.cert + "\n" + f.key;
  auto i = static_cast<size_t>(r);
  last_files_[i] = pair;
  if (overridden_[i]) {
    if (override_files_[i] == pair) {
      spdlog::info("reload role={} keeps generation {} (assigned by {}; the config names the same files {})",
                   role_name(r), role(r).generation(), esc(current(r) ? current(r)->origin : ""), esc(f.cert));
      return "";
    }
    overridden_[i] = false;  // the config names other files: they win
  }
  ContextProvider& p = role(r);
  BuildResult br = build_context_files(f.cert, f.key, options(r, cfg.tls.ticket_key_rotation, f.ca));
  if (br.set) br.set->origin = "file:" + f.cert;
  std::string err = p.publish(std::move(br));
  if (!err.empty()) {
    spdlog::error("reload role={} refused, keeping generation {}: {}", role_name(r), p.generation(), esc(err));
    return err;
  }
  log_published(r, "reload");
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

namespace {

void not_after_lines(std::string& o, Role r, const ContextSet& set, const std::string& sni) {
  for (auto& c : set.certs)
    o += std::string("postern_tls_certificate_not_after_seconds{role=\"") + role_name(r) + "\",key_type=\"" +
         c.key_type + "\",sni=\"" + sni + "\"} " + std::to_string(static_cast<int64_t>(c.not_after_unix)) + "\n";
}

}  // namespace

std::string tls_role_metrics(const TlsRoles& roles) {
  std::string o;
  auto family = [&](const char* name, const char* type, const char* help) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto per_role = [&](const char* name, auto value) {
    for (Role r : kRoles) o += std::string(name) + "{role=\"" + role_name(r) + "\"} " + std::to_string(value(r)) + "\n";
  };
  family("postern_tls_certificate_not_after_seconds", "gauge",
         "notAfter (unix seconds) of each certificate a role serves, per key type and SNI name (\"\" = default).");
  for (Role r : kRoles) {
    auto cur = roles.current(r);
    if (!cur) continue;
    not_after_lines(o, r, *cur, "");
    for (auto& [name, set] : cur->sni) not_after_lines(o, r, *set, name);
  }
  family("postern_tls_handshakes_total", "counter", "Completed TLS handshakes per role (full or resumed).");
  per_role("postern_tls_handshakes_total", [&](Role r) { return roles.stats(r).handshakes.load(); });
  family("postern_tls_handshake_failures_total", "counter", "TLS handshakes started and never completed, per role.");
  per_role("postern_tls_handshake_failures_total", [&](Role r) { return roles.stats(r).handshake_failures.load(); });
  family("postern_tls_assigns_total", "counter", "Certificate sets published per role (assign, reload, file change).");
  per_role("postern_tls_assigns_total", [&](Role r) { return roles.role(r).reloads(); });
  family("postern_tls_assigns_refused_total", "counter", "Certificate sets refused per role (the role kept its set).");
  per_role("postern_tls_assigns_refused_total", [&](Role r) { return roles.role(r).reload_failures(); });
  return o;
}

}  // namespace postern::tls
