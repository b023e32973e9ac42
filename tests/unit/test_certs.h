// test_certs.h — certificates and keys made at test time with OpenSSL (never committed keys):
// self-signed or issued by a test CA, EC P-256 or RSA, any validity window, the key as PKCS#8,
// PKCS#1/SEC1 ("traditional") or encrypted PKCS#8.
#pragma once

#include <string>

namespace postern::testcerts {

enum class KeyKind { kEcP256, kRsa2048 };
enum class KeyFormat { kPkcs8, kTraditional, kEncryptedPkcs8 };

struct TestCert {
  std::string cert_pem;
  std::string key_pem;  // PKCS#8, unencrypted
};

struct CertSpec {
  std::string cn = "mx.test.example";
  KeyKind kind = KeyKind::kEcP256;
  long not_before = -3600;          // seconds from now
  long not_after = 30L * 86400;     // seconds from now
  bool ca = false;
  const TestCert* issuer = nullptr;  // null: self-signed
  std::string san = "";              // "" = DNS:<cn>
};

// Throws std::runtime_error when OpenSSL fails (a test bug, not a case under test).
TestCert make_cert(const CertSpec& spec);
std::string reencode_key(const std::string& pkcs8_pem, KeyFormat fmt, const std::string& passphrase = "");
std::string write_temp_file(const std::string& dir, const std::string& name, const std::string& text);
std::string make_temp_dir();

}  // namespace postern::testcerts
