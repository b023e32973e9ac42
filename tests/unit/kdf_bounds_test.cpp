// kdf_bounds_test.cpp — an upload cannot make the store run an unbounded key derivation: an
// encrypted PKCS#8 key or a PKCS#12 file whose PBKDF2/PKCS#12 iteration count or scrypt cost is
// beyond the bounds is refused before anything is derived. The hostile files are made by
// writing a legal one with a count of 65,536 (DER 02 03 01 00 00) and patching it to
// 8,388,607 (02 03 7F FF FF), or scrypt's p from 1 to 127: the same length, so the structure
// stays valid.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include "certs/cert_material.h"
#include "certs/kdf_bounds.h"
#include "tests/unit/test_certs.h"

namespace postern::certs {
namespace {

using testcerts::CertSpec;
using testcerts::TestCert;

const TestCert& leaf() {
  static TestCert c = testcerts::make_cert(CertSpec{});
  return c;
}

EVP_PKEY* read_key(const std::string& pem) {
  BIO* b = BIO_new_mem_buf(pem.data(), -1);
  EVP_PKEY* k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  return k;
}

// Replaces every `from` with `to` (same length); how many were replaced.
int patch(std::string& der, const std::string& from, const std::string& to) {
  int n = 0;
  for (size_t p = der.find(from); p != std::string::npos; p = der.find(from, p + to.size()), ++n)
    der.replace(p, from.size(), to);
  return n;
}

const std::string k65536("\x02\x03\x01\x00\x00", 5);
const std::string kHuge("\x02\x03\x7f\xff\xff", 5);

std::string der_to_pem_pkcs8(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509_SIG* sig = d2i_X509_SIG(nullptr, &p, static_cast<long>(der.size()));
  EXPECT_NE(sig, nullptr);
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PKCS8(b, sig);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(b);
  X509_SIG_free(sig);
  return out;
}

std::string encrypted_pkcs8_der(X509_ALGOR* pbe) {
  EVP_PKEY* k = read_key(leaf().key_pem);
  PKCS8_PRIV_KEY_INFO* p8 = EVP_PKEY2PKCS8(k);
  X509_SIG* sig = PKCS8_set0_pbe("test pass", 9, p8, pbe);
  EXPECT_NE(sig, nullptr);
  unsigned char* der = nullptr;
  int len = i2d_X509_SIG(sig, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  X509_SIG_free(sig);
  PKCS8_PRIV_KEY_INFO_free(p8);
  EVP_PKEY_free(k);
  return out;
}

ParseResult import_key(const std::string& key_pem) {
  ImportInput in;
  in.cert_pem = leaf().cert_pem;
  in.key_pem.s = key_pem;
  in.passphrase.s = "test pass";
  return parse_import(in);
}

TEST(KdfBounds, Pbkdf2IterationsAboveTheBoundAreRefusedBeforeDeriving) {
  X509_ALGOR* pbe = PKCS5_pbe2_set_iv(EVP_aes_256_cbc(), 65536, nullptr, 0, nullptr, NID_hmacWithSHA256);
  ASSERT_NE(pbe, nullptr);
  std::string der = encrypted_pkcs8_der(pbe);
  auto ok = import_key(der_to_pem_pkcs8(der));  // 65,536: accepted
  ASSERT_TRUE(ok.ok()) << ok.error;
  ASSERT_EQ(patch(der, k65536, kHuge), 1);
  auto r = import_key(der_to_pem_pkcs8(der));
  EXPECT_EQ(r.refusal, Refusal::kBadInput);
  EXPECT_NE(r.error.find("8388607 iterations"), std::string::npos) << r.error;
}

TEST(KdfBounds, ScryptCostAboveTheBoundIsRefused) {
  // N=2^14 r=8 p=1 (16 MiB; OpenSSL's own parameter check allows 32 MiB here), then p patched to
  // 127: N*r*p = 16.6 million, beyond the work bound. N, r and p are consecutive INTEGERs.
  X509_ALGOR* pbe = PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), nullptr, 0, nullptr, 16384, 8, 1);
  ASSERT_NE(pbe, nullptr);
  std::string der = encrypted_pkcs8_der(pbe);
  ASSERT_TRUE(import_key(der_to_pem_pkcs8(der)).ok());
  ASSERT_EQ(patch(der, std::string("\x02\x02\x40\x00\x02\x01\x08\x02\x01\x01", 10),
                  std::string("\x02\x02\x40\x00\x02\x01\x08\x02\x01\x7f", 10)),
            1);
  auto r = import_key(der_to_pem_pkcs8(der));
  EXPECT_EQ(r.refusal, Refusal::kBadInput);
  EXPECT_NE(r.error.find("scrypt N=16384 r=8 p=127"), std::string::npos) << r.error;
}

std::string pkcs12_der(int iter, int mac_iter) {
  BIO* cb = BIO_new_mem_buf(leaf().cert_pem.data(), -1);
  X509* x = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  EVP_PKEY* k = read_key(leaf().key_pem);
  PKCS12* p12 = PKCS12_create("p12 pass", "x", k, x, nullptr, 0, 0, iter, mac_iter, 0);
  EXPECT_NE(p12, nullptr);
  unsigned char* der = nullptr;
  int len = i2d_PKCS12(p12, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  PKCS12_free(p12);
  X509_free(x);
  EVP_PKEY_free(k);
  return out;
}

ParseResult import_p12(const std::string& der) {
  ImportInput in;
  in.pkcs12_der = der;
  in.passphrase.s = "p12 pass";
  return parse_import(in);
}

TEST(KdfBounds, Pkcs12MacIterationsAboveTheBoundAreRefused) {
  std::string der = pkcs12_der(2048, 65536);
  ASSERT_TRUE(import_p12(der).ok());
  ASSERT_EQ(patch(der, k65536, kHuge), 1);  // the MAC's count only
  auto r = import_p12(der);
  EXPECT_EQ(r.refusal, Refusal::kBadInput);
  EXPECT_NE(r.error.find("PKCS#12 file is refused"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("8388607 iterations"), std::string::npos) << r.error;
}

TEST(KdfBounds, Pkcs12BagIterationsAboveTheBoundAreRefused) {
  std::string der = pkcs12_der(65536, 2048);
  ASSERT_TRUE(import_p12(der).ok());
  // The certificate's encrypted contents and the shrouded key bag (the MAC then no longer
  // verifies either, but the bound is checked first: nothing is derived at 8 million).
  ASSERT_GE(patch(der, k65536, kHuge), 2);
  auto r = import_p12(der);
  EXPECT_EQ(r.refusal, Refusal::kBadInput);
  EXPECT_NE(r.error.find("8388607 iterations"), std::string::npos) << r.error;
}

TEST(KdfBounds, UnencryptedAndOrdinaryKeysPass) {
  EXPECT_EQ(check_encrypted_pkcs8_pem(leaf().key_pem), "");
  EXPECT_EQ(check_pbe(nullptr), "");
}

}  // namespace
}  // namespace postern::certs
