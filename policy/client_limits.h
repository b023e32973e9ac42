// client_limits.h — which per-client limits and delays apply to a connecting client.
//
// Pure functions the inbound connection driver asks at accept time:
//  - session_limit_exempt: the client is not counted against smtp.max_sessions_per_ip
//    (smtp.session_limit_exceptions, by default relay.networks: a trusted internal server that
//    relays through Postern must not be throttled like an Internet client);
//  - greet_pause_applies: the greeting is held back smtp.greet_pause (off by default; clients in
//    relay.networks are never delayed).
// Security-sensitive: an exemption lifts a limit that protects the daemon, so the networks are
// the admin's, never derived from anything the client says.
#pragma once

#include "conf/config.h"
#include "policy/relay_rules.h"

namespace postern::policy {

bool session_limit_exempt(const Config& cfg, ClientAddress client);
bool greet_pause_applies(const Config& cfg, ClientAddress client);

}  // namespace postern::policy
