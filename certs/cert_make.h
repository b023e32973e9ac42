// cert_make.h — what the store creates and hands out: keys (RSA 2048/4096, ECDSA P-256),
// certificate signing requests and self-signed certificates with seed 001's subject fields,
// and exports (PEM certificate + chain; with the key as PKCS#12 or encrypted PKCS#8).
// Key generation is slow (RSA 4096: about a second): callers run it off the event loop.
// Security-sensitive: generated keys (returned as PKCS#8 PEM in a Secret, to be sealed by the
// caller) and export passwords (AES-256 encryption only; an empty password is refused).
#pragma once

#include <ctime>
#include <string>
#include <vector>

#include "certs/cert_material.h"

namespace postern::certs {

enum class KeySpec { kRsa2048, kRsa4096, kEcP256 };
// "rsa2048", "rsa4096", "ec-p256" (also "rsa"=2048, "ec"/"ecdsa"/"p256"). False if unknown.
bool parse_key_spec(const std::string& s, KeySpec& out);
const char* key_spec_name(KeySpec k);

struct Subject {
  std::string country, state, locality, organisation, unit, common_name, email;
  std::vector<std::string> sans;  // "DNS:name", "IP:addr", "email:addr"
};
// "" or what is wrong (the field's name in the message): a common name is required, the country
// is two letters, SANs have a known prefix, no field holds control characters or is too long.
std::string check_subject(const Subject& s);

struct Made {
  std::string pem;  // the CSR or the certificate
  Secret key_pem;   // PKCS#8
  std::string error;
};
// Generates a key and a CSR (SHA-256; SANs as a requested extension; the common name is added as
// a DNS SAN when no SAN is given).
Made make_csr(const Subject& s, KeySpec k);
// Generates a key and a self-signed certificate valid from now - 1 h for `days` days.
Made make_self_signed(const Subject& s, KeySpec k, int days, std::time_t now);

// Export: the certificate and chain as PEM.
std::string export_pem(const Material& m);
// PKCS#12 (AES-256-CBC, PBKDF2, SHA-256 MAC) holding key, certificate and chain. "" + error.
std::string export_pkcs12(const Material& m, const std::string& password, const std::string& friendly_name,
                          std::string& error);
// The key as encrypted PKCS#8 PEM (AES-256-CBC, PBKDF2). "" + error.
std::string export_encrypted_key(const Material& m, const std::string& password, std::string& error);

}  // namespace postern::certs
