// cert_import_fuzz.cpp — the certificate store's upload parsing (certs::parse_import) from
// hostile bytes: PEM bundles with keys in every format (PKCS#1, SEC1, PKCS#8, encrypted PKCS#8,
// traditional encrypted PEM), PKCS#12 files, passphrases; then describe() and the backup file
// reader. The first byte picks the shape, the rest is split at 0xFF bytes into the fields.
// Checks: an accepted import has a certificate and a fingerprint; a refusal has a reason.
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "certs/cert_crypt.h"
#include "certs/cert_material.h"

using namespace postern::certs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<std::string> f(1);
  for (size_t i = 1; i < size; ++i) {
    if (data[i] == 0xFF && f.size() < 3) f.emplace_back();
    else f.back() += static_cast<char>(data[i]);
  }
  f.resize(3);
  ImportInput in;
  switch (data[0] % 4) {
    case 0: in.cert_pem = f[0]; break;                                   // one file, key maybe inside
    case 1: in.cert_pem = f[0], in.key_pem.s = f[1], in.passphrase.s = f[2]; break;
    case 2: in.pkcs12_der = f[0], in.passphrase.s = f[1]; break;
    case 3: {  // the backup reader (a hostile file must not make it spend unbounded work)
      std::string json, err;
      if (decrypt_backup(f[0], f[1], json, err) && !err.empty()) abort();
      return 0;
    }
  }
  ParseResult pr = parse_import(in);
  if (pr.ok() && (pr.m.cert_pem.empty() || pr.m.meta.fingerprint.empty())) abort();
  if (!pr.ok() && pr.error.empty()) abort();
  CertMeta meta;
  std::string err;
  (void)describe(f[0], f[1], "", meta, err);
  (void)spki_of_cert(f[0]);
  (void)spki_of_key(f[1]);
  ERR_clear_error();
  return 0;
}
