// euq_token.h — the EUQ console's signed links and sessions: a token is
// base64url(JSON payload) "." base64url(HMAC-SHA256(key, payload)), the payload carrying the
// purpose ("signin", "session", "release", "delete"), the recipient address, the expiry (unix
// seconds, from rt.clock), a random nonce (single use, recorded by the console in PostgreSQL)
// and, for message actions, the quarantine ID. The key is per install (<state_dir>/euq.key, 0600,
// shared by nodes through the database: admin/euq_console.cpp).
// Security-sensitive: tokens come from anyone; verify() checks the length bound, the MAC (in
// constant time) before parsing the payload, the purpose and the expiry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace postern::admin {

struct EuqToken {
  std::string purpose;
  std::string recipient;  // lower-cased address
  int64_t expires = 0;
  std::string nonce;      // 128 random bits, hex
  std::string qid;        // release/delete only
};

constexpr size_t kMaxEuqToken = 2048;

std::string random_hex(size_t bytes);  // from RAND_bytes; throws std::runtime_error
std::string base64url(const std::string& raw);
std::optional<std::string> base64url_decode(const std::string& text);

// A new token (nonce filled in when empty).
std::string euq_sign(const std::string& key, EuqToken t);
// The token when its MAC, purpose and expiry (> now) hold; otherwise nullopt and `why`
// ("malformed", "bad signature", "wrong purpose", "expired").
std::optional<EuqToken> euq_verify(const std::string& key, const std::string& token, const std::string& purpose,
                                   int64_t now, std::string& why);
// HMAC-SHA256 as hex (CSRF tokens are derived from the session's nonce with it).
std::string hmac_hex(const std::string& key, const std::string& data);

}  // namespace postern::admin
