// cert_material_test.cpp — the store's parser: every key format (PKCS#1/SEC1, PKCS#8, encrypted
// PKCS#8, traditional encrypted PEM, PKCS#12), RSA and EC, and every refusal with its reason.
// Certificates are made here (test_certs), never checked in.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include "certs/cert_make.h"
#include "certs/cert_material.h"
#include "tests/unit/test_certs.h"

namespace postern::certs {
namespace {

using testcerts::CertSpec;
using testcerts::KeyFormat;
using testcerts::KeyKind;
using testcerts::TestCert;

struct Pki {
  TestCert root = testcerts::make_cert({.cn = "Test Root", .not_after = 3650L * 86400, .ca = true});
  TestCert inter = testcerts::make_cert({.cn = "Test Intermediate", .not_after = 3650L * 86400, .ca = true, .issuer = &root});
  TestCert leaf = testcerts::make_cert({.cn = "mx.test.example", .issuer = &inter});
  TestCert rsa_leaf = testcerts::make_cert({.cn = "rsa.test.example", .kind = KeyKind::kRsa2048, .issuer = &inter});
};
const Pki& pki() {
  static Pki p;
  return p;
}

ImportInput pem_input(const std::string& cert, const std::string& key, const std::string& pass = "") {
  ImportInput in;
  in.cert_pem = cert;
  in.key_pem.s = key;
  in.passphrase.s = pass;
  return in;
}

std::string traditional_encrypted(const std::string& pkcs8, const std::string& pass) {
  BIO* b = BIO_new_mem_buf(pkcs8.data(), static_cast<int>(pkcs8.size()));
  EVP_PKEY* k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  BIO* o = BIO_new(BIO_s_mem());
  std::string p = pass;
  EXPECT_EQ(PEM_write_bio_PrivateKey_traditional(o, k, EVP_aes_256_cbc(), reinterpret_cast<unsigned char*>(p.data()),
                                                 static_cast<int>(p.size()), nullptr, nullptr), 1);
  char* d = nullptr;
  long n = BIO_get_mem_data(o, &d);
  std::string out(d, static_cast<size_t>(n));
  BIO_free(o);
  EVP_PKEY_free(k);
  return out;
}

TEST(CertMaterial, EveryKeyFormatImportsWithTheSameFingerprint) {
  const auto& p = pki();
  for (const TestCert* c : {&p.leaf, &p.rsa_leaf}) {
    std::string bundle = c->cert_pem + p.inter.cert_pem;
    std::vector<std::pair<std::string, std::string>> keys = {
        {testcerts::reencode_key(c->key_pem, KeyFormat::kPkcs8), ""},
        {testcerts::reencode_key(c->key_pem, KeyFormat::kTraditional), ""},
        {testcerts::reencode_key(c->key_pem, KeyFormat::kEncryptedPkcs8, "s3cret pass"), "s3cret pass"},
        {traditional_encrypted(c->key_pem, "s3cret pass"), "s3cret pass"}};
    std::string fp;
    for (auto& [key, pass] : keys) {
      auto r = parse_import(pem_input(bundle, key, pass));
      ASSERT_TRUE(r.ok()) << r.error << "\n" << key.substr(0, 40);
      EXPECT_EQ(r.m.meta.chain_length, 1u);
      EXPECT_TRUE(r.m.meta.key_matches);
      EXPECT_NE(r.m.key_pem.s.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);  // normalised to PKCS#8
      if (fp.empty()) fp = r.m.meta.fingerprint;
      EXPECT_EQ(r.m.meta.fingerprint, fp);
    }
  }
  auto r = parse_import(pem_input(p.rsa_leaf.cert_pem, p.rsa_leaf.key_pem));
  EXPECT_EQ(r.m.meta.key_type, "RSA");
  EXPECT_EQ(r.m.meta.key_bits, 2048);
  r = parse_import(pem_input(p.leaf.cert_pem, p.leaf.key_pem));
  EXPECT_EQ(r.m.meta.key_type, "EC");
  EXPECT_EQ(r.m.meta.curve, "prime256v1");
}

TEST(CertMaterial, MetadataNamesSubjectIssuerSansAndDates) {
  const auto& p = pki();
  auto r = parse_import(pem_input(p.leaf.cert_pem + p.inter.cert_pem, p.leaf.key_pem));
  ASSERT_TRUE(r.ok()) << r.error;
  const CertMeta& m = r.m.meta;
  EXPECT_EQ(m.subject, "CN=mx.test.example");
  EXPECT_EQ(m.issuer, "CN=Test Intermediate");
  EXPECT_EQ(m.sans, std::vector<std::string>{"DNS:mx.test.example"});
  EXPECT_EQ(m.fingerprint.size(), 95u);  // 32 bytes, hex with colons
  EXPECT_FALSE(m.serial.empty());
  EXPECT_NEAR(static_cast<double>(m.not_after - m.not_before), 30.0 * 86400 + 3600, 5);
  EXPECT_TRUE(m.chain_ok);
  EXPECT_FALSE(m.self_signed);
  EXPECT_EQ(m.spki_sha256, spki_of_key(p.leaf.key_pem));
}

TEST(CertMaterial, KeyInTheCertificateFileIsFound) {
  const auto& p = pki();
  auto r = parse_import(pem_input(p.leaf.cert_pem + p.leaf.key_pem + p.inter.cert_pem, ""));
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.m.meta.has_key);
  EXPECT_EQ(r.m.meta.chain_length, 1u);
}

TEST(CertMaterial, Pkcs12WithPassphraseAndChainPutInOrder) {
  const auto& p = pki();
  // Made here with the bags in the wrong order (root before intermediate).
  BIO* cb = BIO_new_mem_buf(p.leaf.cert_pem.data(), -1);
  X509* leaf = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  STACK_OF(X509)* ca = sk_X509_new_null();
  for (const TestCert* c : {&p.root, &p.inter}) {
    BIO* b = BIO_new_mem_buf(c->cert_pem.data(), -1);
    sk_X509_push(ca, PEM_read_bio_X509(b, nullptr, nullptr, nullptr));
    BIO_free(b);
  }
  BIO* kb = BIO_new_mem_buf(p.leaf.key_pem.data(), -1);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  PKCS12* p12 = PKCS12_create("p12 pass", "x", key, leaf, ca, 0, 0, 0, 0, 0);
  ASSERT_NE(p12, nullptr);
  unsigned char* der = nullptr;
  int len = i2d_PKCS12(p12, &der);
  ImportInput in;
  in.pkcs12_der.assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  PKCS12_free(p12);
  sk_X509_pop_free(ca, X509_free);
  X509_free(leaf);
  EVP_PKEY_free(key);

  in.passphrase.s = "p12 pass";
  auto r = parse_import(in);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.m.meta.chain_length, 2u);
  EXPECT_TRUE(r.m.meta.chain_ok) << r.m.meta.chain_error;
  EXPECT_TRUE(r.m.meta.key_matches);

  in.passphrase.s = "wrong";
  r = parse_import(in);
  EXPECT_EQ(r.refusal, Refusal::kWrongPassphrase);
  EXPECT_EQ(r.error, "wrong passphrase for the PKCS#12 file");
  in.passphrase.s = "";
  EXPECT_EQ(parse_import(in).refusal, Refusal::kNeedPassphrase);
  in.pkcs12_der = "garbage";
  EXPECT_EQ(parse_import(in).refusal, Refusal::kBadInput);
}

TEST(CertMaterial, RefusalsNameTheirReason) {
  const auto& p = pki();
  TestCert other = testcerts::make_cert({.cn = "other.test.example"});
  struct Case {
    ImportInput in;
    Refusal want;
    std::string text;
  };
  std::vector<Case> cases;
  cases.push_back({pem_input("just some text\n", ""), Refusal::kNotPem, "not PEM"});
  cases.push_back({pem_input(p.leaf.key_pem, ""), Refusal::kNoCertificate, "no certificate"});
  cases.push_back({pem_input(p.leaf.cert_pem, other.key_pem), Refusal::kKeyMismatch, "does not match"});
  cases.push_back({pem_input(p.leaf.cert_pem, "not a key"), Refusal::kNotPem, "not PEM"});
  std::string enc = testcerts::reencode_key(p.leaf.key_pem, KeyFormat::kEncryptedPkcs8, "right");
  cases.push_back({pem_input(p.leaf.cert_pem, enc, "wrong"), Refusal::kWrongPassphrase, "wrong passphrase"});
  cases.push_back({pem_input(p.leaf.cert_pem, enc), Refusal::kNeedPassphrase, "passphrase is needed"});
  cases.push_back({pem_input(p.leaf.cert_pem, traditional_encrypted(p.leaf.key_pem, "right"), "bad"),
                   Refusal::kWrongPassphrase, "wrong passphrase"});
  cases.push_back({pem_input(p.leaf.cert_pem + p.root.cert_pem + p.inter.cert_pem, p.leaf.key_pem),
                   Refusal::kChainOutOfOrder, "chain out of order"});
  cases.push_back({pem_input(p.inter.cert_pem + p.leaf.cert_pem, p.leaf.key_pem), Refusal::kChainOutOfOrder,
                   "chain out of order"});
  cases.push_back({pem_input(p.leaf.cert_pem + p.root.cert_pem, p.leaf.key_pem), Refusal::kChainIncomplete,
                   "chain incomplete: the issuer of CN=mx.test.example (CN=Test Intermediate) is missing"});
  cases.push_back({pem_input("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ""),
                   Refusal::kBadInput, "does not parse"});
  for (auto& c : cases) {
    auto r = parse_import(c.in);
    EXPECT_EQ(r.refusal, c.want) << r.error;
    EXPECT_NE(r.error.find(c.text), std::string::npos) << r.error;
  }
}

TEST(CertMaterial, ValidateUsesTheInjectedClock) {
  TestCert expired = testcerts::make_cert({.not_before = -10 * 86400, .not_after = -86400});
  TestCert future = testcerts::make_cert({.not_before = 86400, .not_after = 10 * 86400});
  std::time_t now = std::time(nullptr);
  std::string err;
  auto e = parse_import(pem_input(expired.cert_pem, expired.key_pem));
  ASSERT_TRUE(e.ok()) << e.error;  // the form is fine; the dates are validate()'s
  EXPECT_EQ(validate(e.m, now, err), Refusal::kExpired);
  EXPECT_NE(err.find("has expired (notAfter "), std::string::npos) << err;
  EXPECT_EQ(validate(e.m, now - 5 * 86400, err), Refusal::kNone) << err;  // valid back then
  auto f = parse_import(pem_input(future.cert_pem, future.key_pem));
  EXPECT_EQ(validate(f.m, now, err), Refusal::kNotYetValid);
  EXPECT_NE(err.find("not valid yet"), std::string::npos);
  EXPECT_EQ(validate(f.m, now + 2 * 86400, err), Refusal::kNone);
  auto nokey = parse_import(pem_input(future.cert_pem, ""));
  ASSERT_TRUE(nokey.ok());
  EXPECT_EQ(validate(nokey.m, now + 2 * 86400, err), Refusal::kNoKey);
}

TEST(CertMaterial, OversizedInputIsRefusedBeforeParsing) {
  ImportInput in;
  in.cert_pem.assign(kMaxPemInput + 1, 'A');
  EXPECT_EQ(parse_import(in).refusal, Refusal::kBadInput);
  std::string many;
  for (size_t i = 0; i < kMaxChain + 2; ++i) many += pki().inter.cert_pem;
  EXPECT_NE(parse_import(pem_input(pki().leaf.cert_pem + many, "")).error.find("more than"), std::string::npos);
}

TEST(CertMaterial, Base64RoundTripAndRefusal) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n : {0u, 1u, 2u, 3u, 256u}) {
    std::string out;
    ASSERT_TRUE(base64_decode(base64_encode(all.substr(0, n)), out));
    EXPECT_EQ(out, all.substr(0, n));
  }
  std::string out;
  EXPECT_FALSE(base64_decode("ab$c", out));
  EXPECT_FALSE(base64_decode("ab==cd", out));
}

// Found by fuzz_cert_import: a certificate whose public key names an unknown curve
// (X509_get0_pubkey returns NULL) crashed describe() with a NULL dereference. Now refused.
TEST(CertMaterial, ACertificateWhoseKeyCannotBeDecodedIsRefusedNotACrash) {
  const std::string pem =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICFDCCAbqgAwIBAgIUCPiRox8s0lrQgjk/7vJLN0cYkb0wCgYIKoZIzj0EAwIw\n"
    "OzEVMBMGA1UECgwMUG9zdGVybiBUZXN0MSIwIAYDVQQDDBlQb3N0ZXJuIFRlc3Qg\n"
    "SW50ZXJtZWRpYXRlMB4XDTI2MTIwMTE2MDUyMFoXDTI2MTIzMTE2MDUyMFowLTEV\n"
    "MBMGA1UECgwMUG9zdGVybiBUZXN0MRQwEgYDVQQDDAtteC5lMmUudGVzdDBZMBMG\n"
    "ByqGSM49AgEGCCqGSM94AwEHA0IABCHK1VvUFy9IvMPAKcWi5gPK31dBfuRxJTRZ\n"
    "+E6QoaAow8zBL+tjFCOHeXO0CK/58uSnoaaT56/7HYMHQiA7uNSjgakwgaYwDAYD\n"
    "VR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCBaAwHQYDVR0lBBYwFAYIKwYBBQUHAwEG\n"
    "CCsGAQUFBwMCMCcGA1UdEQQgMB6CC214LmUyZS50ZXN0gglsb2NhbGhvc3SHBH8A\n"
    "AAEwHQYDVR0OBBYEFH6JWfObpSAc8HvlIBVdX0RJABSbMB8GA1UdIwQYMBaAFMy4\n"
    "CzD3FKoWYeN02d62RPbSkVXuMAoGCCqGSM49BAMCA0gAMEUCIQCa6TeKRh4nLKxK\n"
    "8upzmLIg7bTWl9KAha/aas9pCtqIFwIgIo5xsUMDG3+WMAqv+FWBQ4Il8Au3gMs5\n"
    "qax5HCrJ8qk=\n"
    "-----END CERTIFICATE-----\n";
  ImportInput in;
  in.cert_pem = pem;
  auto pr = parse_import(in);
  EXPECT_FALSE(pr.ok());
  EXPECT_EQ(pr.refusal, Refusal::kBadInput);
  EXPECT_NE(pr.error.find("public key cannot be read"), std::string::npos) << pr.error;
  CertMeta meta;
  std::string err;
  EXPECT_FALSE(describe(pem, "", "", meta, err));
  EXPECT_NE(err.find("public key cannot be read"), std::string::npos) << err;
}

}  // namespace
}  // namespace postern::certs
