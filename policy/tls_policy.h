// tls_policy.h — the outbound TLS level for a destination domain (none | may | encrypt | verify,
// the levels of Postfix's tls_level.c).
//
// Pure: the scheduler asks it once per destination. Lookup order: the domain itself in
// outbound.tls_policy, then ".parent" entries from the nearest parent up (".example.com" covers
// mx.eu.example.com), then outbound.tls. Security-sensitive: a wrong answer sends mail in
// plaintext or unverified where the admin asked for "encrypt" or "verify".
#pragma once

#include <string_view>

#include "conf/config.h"

namespace postern::policy {

TlsLevel outbound_tls_level(const OutboundConfig& out, std::string_view domain);

}  // namespace postern::policy
