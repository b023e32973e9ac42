// client_limits.cpp — per-client limit exemptions. See the header.
#include "policy/client_limits.h"

namespace postern::policy {

bool session_limit_exempt(const Config& cfg, ClientAddress client) {
  return client_in(cfg.smtp.session_limit_exceptions, client);
}

bool greet_pause_applies(const Config& cfg, ClientAddress client) {
  return cfg.smtp.greet_pause.count() > 0 && !client_in(cfg.relay.networks, client);
}

}  // namespace postern::policy
