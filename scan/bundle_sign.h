// bundle_sign.h — the vendor side of pattern bundles: a pattern root CA, signing certificates
// issued by it, and the detached CMS signature over a manifest (postern-bundle and the tests).
//
// Security-sensitive: private keys are written 0600 by the caller and never logged; validity
// times come from the caller (tests make expired and not-yet-valid signers with them).
#pragma once

#include <cstdint>
#include <string>

namespace postern::scan {

struct CertAndKey {
  std::string cert_pem;
  std::string key_pem;
  std::string error;  // "" on success
};

// A self-signed pattern root (CA:TRUE, keyCertSign), EC P-256, valid [not_before, not_after].
CertAndKey make_pattern_root(const std::string& common_name, int64_t not_before, int64_t not_after);
// A signing certificate (CA:FALSE, digitalSignature, extendedKeyUsage codeSigning) issued by
// the root, valid [not_before, not_after].
CertAndKey make_pattern_signer(const std::string& root_cert_pem, const std::string& root_key_pem,
                               const std::string& common_name, int64_t not_before, int64_t not_after);
// Detached CMS SignedData (DER) over `manifest`, signer certificate (and `chain_pem`, if any)
// included. "" with `error` set on failure.
std::string sign_manifest(const std::string& manifest, const std::string& cert_pem, const std::string& key_pem,
                          std::string& error);

}  // namespace postern::scan
