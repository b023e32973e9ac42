// license_record.h — signed license records: what the license server answers, what an offline
// license file and a central manager's profile hold, and what posternd stores.
//
// A signed record is one JSON document:
//   {"format": "postern-license-1", "payload": "<JSON text>", "signature": "<base64>"}
// The signature is Ed25519 over the exact bytes of "payload" (no re-serialising, so nothing can
// be changed by a different JSON encoder). The payload:
//   {"code": "IM-...", "license": "antivirus", "expires": "YYYY-MM-DD", "serial": N,
//    "issued_at": unix seconds, "signed_at": unix seconds}
// "license" is the license the code was issued for (an antispam code also activates reputation).
// Security-sensitive: verify() is the only way in. A record counts only when its signature
// verifies against the pinned public key, its payload is well formed, its code parses with a
// right check symbol and its license matches the code's own kind. Everything here is bounded
// (a document over 16 KiB is refused) and never throws.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "licensing/calendar.h"
#include "licensing/license_kind.h"

namespace postern::licensing {

inline constexpr size_t kMaxRecordSize = 16 * 1024;

struct LicenseRecord {
  std::string code;      // canonical text
  LicenseKind kind{};    // the license the code was issued for
  Day expires = 0;
  uint64_t serial = 0;
  int64_t issued_at = 0;
  int64_t signed_at = 0;
  std::string document;  // the signed document as received: what is stored and re-verified
};

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;

// Ed25519 keys as PEM (PKCS#8 private key, SubjectPublicKeyInfo public key). "" or the error.
Key generate_key(std::string& err);
Key private_key_from_pem(const std::string& pem, std::string& err);
Key public_key_from_pem(const std::string& pem, std::string& err);
std::string private_key_pem(EVP_PKEY* k);
std::string public_key_pem(EVP_PKEY* k);

// Signs a record (document is ignored and returned filled in). "" on failure, with err.
std::string sign_record(const LicenseRecord& r, EVP_PKEY* private_key, std::string& err);
// Verifies a signed document against the pinned key; nullopt with why when refused.
std::optional<LicenseRecord> verify_record(const std::string& document, EVP_PKEY* public_key, std::string& why);

}  // namespace postern::licensing
