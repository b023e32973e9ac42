// cert_material.h — the certificate store's pure core: what an uploaded certificate (PEM bundle,
// private key in any common PEM form, or PKCS#12) is, what an admin sees about it, and why it is
// refused. No sockets, no database, no global clock: every date check takes `now`.
//
// A parsed entry is normalised: the leaf as PEM, the intermediates as PEM in order, and the key
// as unencrypted PKCS#8 PEM (the store seals it before it is written anywhere, see cert_crypt.h).
// Security-sensitive: parsing of hostile uploads (bounded sizes, every OpenSSL result checked,
// the passphrase given only through a callback, never a terminal prompt) and key material in
// memory (wiped by Secret's destructor).
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

namespace postern::certs {

// Upload limits: a bundle with a long chain stays far below these.
inline constexpr size_t kMaxPemInput = 256 * 1024;
inline constexpr size_t kMaxPkcs12Input = 256 * 1024;
inline constexpr size_t kMaxChain = 10;

// Why an upload or an assign was refused. reason_code() is the stable token for scripts.
enum class Refusal {
  kNone,
  kNotPem,
  kNoCertificate,
  kNoKey,
  kKeyMismatch,
  kNeedPassphrase,
  kWrongPassphrase,
  kExpired,
  kNotYetValid,
  kChainOutOfOrder,
  kChainIncomplete,
  kBadInput,
};
const char* reason_code(Refusal r);

// std::string that wipes itself (private keys, passphrases).
struct Secret {
  std::string s;
  Secret() = default;
  explicit Secret(std::string v) : s(std::move(v)) {}
  Secret(const Secret&) = default;
  Secret& operator=(const Secret&) = default;
  ~Secret();
};
void wipe(std::string& s);

struct CertMeta {
  std::string subject, issuer, serial;  // serial: hex
  std::string fingerprint;              // SHA-256 of the leaf's DER, hex with colons
  std::string spki_sha256;              // SHA-256 of the public key (SubjectPublicKeyInfo), hex
  std::string key_type;                 // "RSA" or "EC"
  int key_bits = 0;
  std::string curve;                    // EC: "prime256v1", ...
  std::vector<std::string> sans;        // "DNS:mx.example.com", "IP:192.0.2.1", "email:..."
  int64_t not_before = 0, not_after = 0;  // UNIX seconds
  size_t chain_length = 0;              // intermediates after the leaf
  bool chain_ok = true;
  std::string chain_error;              // why not
  bool has_key = false;
  bool key_matches = false;
  bool self_signed = false;
};

struct Material {
  std::string cert_pem;   // the leaf
  std::string chain_pem;  // its intermediates, leaf's issuer first
  Secret key_pem;         // unencrypted PKCS#8, "" when there is none
  CertMeta meta;
};

struct ImportInput {
  std::string cert_pem;    // leaf + intermediates (may also hold the key)
  Secret key_pem;          // optional
  std::string pkcs12_der;  // optional (instead of cert_pem/key_pem)
  Secret passphrase;       // for an encrypted key or the PKCS#12 file
};

struct ParseResult {
  Material m;
  Refusal refusal = Refusal::kNone;
  std::string error;  // human text naming the reason ("" when accepted)
  bool ok() const { return refusal == Refusal::kNone; }
};

// Parses an upload. Checks the form only (PEM, certificate present, key readable and matching,
// chain in order and complete); dates are checked by validate(). A PKCS#12 file's chain is put
// in order (its bags have none).
ParseResult parse_import(const ImportInput& in);

// The checks an assign makes: dates against `now`, the key present and matching, the chain.
// Returns kNone or the refusal, with the text in `error`.
Refusal validate(const Material& m, std::time_t now, std::string& error);
// Dates only.
Refusal check_dates(const CertMeta& meta, std::time_t now, std::string& error);

// Metadata of a leaf + chain (+ key). False with `error` when the PEM does not parse.
bool describe(const std::string& cert_pem, const std::string& chain_pem, const std::string& key_pem, CertMeta& out,
              std::string& error);
// SHA-256 (hex) of the public key in a PEM certificate, CSR or private key ("" if none parses).
std::string spki_of_cert(const std::string& cert_pem);
std::string spki_of_csr(const std::string& csr_pem);
std::string spki_of_key(const std::string& key_pem);

// "2026-12-01T12:00:00Z"
std::string iso_time(int64_t t);

std::string base64_encode(const std::string& bytes);
// False when `text` is not base64 (whitespace is skipped).
bool base64_decode(const std::string& text, std::string& out);

}  // namespace postern::certs
