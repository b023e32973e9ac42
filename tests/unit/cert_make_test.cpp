// cert_make_test.cpp — CSR and self-signed generation with seed 001's fields, and exports that
// re-import with the same fingerprint.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certs/cert_make.h"
#include "certs/cert_material.h"
#include "tests/unit/test_certs.h"

namespace postern::certs {
namespace {

Subject seed001() {
  Subject s;
  s.country = "JP";
  s.state = "Tokyo";
  s.locality = "Shibuya";
  s.organisation = "Trend Micro Inc.";
  s.unit = "Support Division";
  s.common_name = "imsva.trendmicro.com";
  s.email = "postmaster@imsva.trendmicro.com";
  s.sans = {"DNS:imsva.trendmicro.com", "IP:192.0.2.7", "email:postmaster@imsva.trendmicro.com"};
  return s;
}

TEST(CertMake, CsrCarriesTheSubjectTheSansAndAMatchingKey) {
  for (KeySpec k : {KeySpec::kEcP256, KeySpec::kRsa2048}) {
    Made m = make_csr(seed001(), k);
    ASSERT_TRUE(m.error.empty()) << m.error;
    ASSERT_NE(m.pem.find("-----BEGIN CERTIFICATE REQUEST-----"), std::string::npos);
    EXPECT_EQ(spki_of_csr(m.pem), spki_of_key(m.key_pem.s));
    BIO* b = BIO_new_mem_buf(m.pem.data(), -1);
    X509_REQ* req = PEM_read_bio_X509_REQ(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    ASSERT_NE(req, nullptr);
    EXPECT_EQ(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)), 1);
    char subj[512];
    X509_NAME_oneline(X509_REQ_get_subject_name(req), subj, sizeof subj);
    EXPECT_STREQ(subj, "/C=JP/ST=Tokyo/L=Shibuya/O=Trend Micro Inc./OU=Support Division/CN=imsva.trendmicro.com"
                       "/emailAddress=postmaster@imsva.trendmicro.com");
    STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req);
    EXPECT_EQ(sk_X509_EXTENSION_num(exts), 1);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
  }
}

TEST(CertMake, Rsa4096Csr) {
  Made m = make_csr(seed001(), KeySpec::kRsa4096);
  ASSERT_TRUE(m.error.empty()) << m.error;
  // The key's size, through a self-signed twin: the CSR's key is what a CA certifies.
  EXPECT_EQ(spki_of_csr(m.pem), spki_of_key(m.key_pem.s));
  EXPECT_GT(m.key_pem.s.size(), 3000u);
}

TEST(CertMake, SelfSignedIsValidForTheDaysAskedAndImports) {
  std::time_t now = std::time(nullptr);
  Made m = make_self_signed(seed001(), KeySpec::kEcP256, 825, now);
  ASSERT_TRUE(m.error.empty()) << m.error;
  ImportInput in;
  in.cert_pem = m.pem;
  in.key_pem.s = m.key_pem.s;
  auto r = parse_import(in);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.m.meta.self_signed);
  EXPECT_EQ(r.m.meta.sans, (std::vector<std::string>{"DNS:imsva.trendmicro.com", "IP:192.0.2.7",
                                                     "email:postmaster@imsva.trendmicro.com"}));
  EXPECT_EQ(r.m.meta.not_before, now - 3600);
  EXPECT_EQ(r.m.meta.not_after, now + 825L * 86400 - 3600);
  std::string err;
  EXPECT_EQ(validate(r.m, now, err), Refusal::kNone) << err;
  EXPECT_NE(r.m.meta.subject.find("CN=imsva.trendmicro.com"), std::string::npos) << r.m.meta.subject;
}

TEST(CertMake, SubjectChecksNameTheField) {
  Subject s = seed001();
  s.common_name = "";
  EXPECT_EQ(check_subject(s), "a common name (cn) is required");
  s = seed001();
  s.country = "Japan";
  EXPECT_NE(check_subject(s).find("two-letter"), std::string::npos);
  s = seed001();
  s.sans = {"URI:http://x"};
  EXPECT_NE(check_subject(s).find("bad SAN"), std::string::npos);
  s = seed001();
  s.organisation = "evil\r\nCN=x";
  EXPECT_NE(check_subject(s).find("organisation"), std::string::npos);
  EXPECT_FALSE(make_csr(s, KeySpec::kEcP256).error.empty());
  KeySpec k;
  EXPECT_TRUE(parse_key_spec("rsa4096", k));
  EXPECT_EQ(k, KeySpec::kRsa4096);
  EXPECT_TRUE(parse_key_spec("ec-p256", k));
  EXPECT_FALSE(parse_key_spec("dsa", k));
}

TEST(CertMake, ExportsReimportWithTheSameFingerprint) {
  auto root = testcerts::make_cert({.cn = "Root", .not_after = 3650L * 86400, .ca = true});
  auto leaf = testcerts::make_cert({.cn = "mx.example", .kind = testcerts::KeyKind::kRsa2048, .issuer = &root});
  ImportInput in;
  in.cert_pem = leaf.cert_pem + root.cert_pem;
  in.key_pem.s = leaf.key_pem;
  auto orig = parse_import(in);
  ASSERT_TRUE(orig.ok()) << orig.error;
  std::string err;
  std::string p12 = export_pkcs12(orig.m, "export pw", "mx", err);
  ASSERT_FALSE(p12.empty()) << err;
  ImportInput back;
  back.pkcs12_der = p12;
  back.passphrase.s = "export pw";
  auto r = parse_import(back);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.m.meta.fingerprint, orig.m.meta.fingerprint);
  EXPECT_EQ(r.m.meta.chain_length, 1u);
  EXPECT_TRUE(r.m.meta.key_matches);

  std::string enc = export_encrypted_key(orig.m, "export pw", err);
  ASSERT_NE(enc.find("-----BEGIN ENCRYPTED PRIVATE KEY-----"), std::string::npos) << err;
  ImportInput pem;
  pem.cert_pem = export_pem(orig.m);
  pem.key_pem.s = enc;
  pem.passphrase.s = "export pw";
  r = parse_import(pem);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.m.meta.fingerprint, orig.m.meta.fingerprint);
  EXPECT_TRUE(export_pkcs12(orig.m, "", "mx", err).empty());
  EXPECT_EQ(err, "an export password is required for the private key");
}

}  // namespace
}  // namespace postern::certs
