// kdf_bounds.h — the work a hostile upload can ask of a key-derivation function, bounded.
//
// An encrypted PKCS#8 key or a PKCS#12 file names its own KDF parameters (PBKDF2 or PKCS#12
// iteration counts, scrypt's N, r, p). Without a bound, one upload can keep a thread busy for
// hours or make scrypt allocate gigabytes. These checks read the parameters before any
// derivation runs and refuse what is beyond what real tools write (OpenSSL 3 writes 2,048
// PBKDF2 iterations; OWASP's 2023 advice is 600,000 for PBKDF2-SHA256; Postern's own backups use
// scrypt N=2^16, r=8, p=1).
// Security-sensitive: this is the bound; callers must check before decrypting.
#pragma once

#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include <cstdint>
#include <string>

namespace postern::certs {

inline constexpr uint64_t kMaxKdfIterations = 2'000'000;     // PBKDF2 and PKCS#12 KDF
inline constexpr uint64_t kMaxScryptMemory = 256ull << 20;   // 128 * N * r bytes
inline constexpr uint64_t kMaxScryptWork = 1ull << 22;       // N * r * p

// "" when the algorithm's KDF parameters are within the bounds (or it uses no KDF), else why.
std::string check_pbe(const X509_ALGOR* alg);
// An encrypted PKCS#8 key in PEM ("ENCRYPTED PRIVATE KEY"): "" or why it is refused.
std::string check_encrypted_pkcs8_pem(const std::string& pem);
// A PKCS#12 file: its MAC and every PBE it uses (encrypted contents and shrouded key bags; bags
// inside encrypted contents are reached by decrypting with `pass`, after the outer PBE passed).
std::string check_pkcs12(PKCS12* p12, const std::string& pass);

}  // namespace postern::certs
