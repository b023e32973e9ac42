// test_certs.cpp — see test_certs.h.
#include "tests/unit/test_certs.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace postern::testcerts {
namespace {

struct Del {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(X509* x) const { X509_free(x); }
  void operator()(BIO* b) const { BIO_free(b); }
};

[[noreturn]] void die(const char* what) {
  char buf[256];
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  throw std::runtime_error(std::string("test_certs: ") + what + ": " + buf);
}

std::string bio_text(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return std::string(p, static_cast<size_t>(n));
}

std::unique_ptr<EVP_PKEY, Del> read_key(const std::string& pem) {
  std::unique_ptr<BIO, Del> b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::unique_ptr<EVP_PKEY, Del> k(PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr));
  if (!k) die("read key");
  return k;
}

void add_ext(X509* x, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, x, nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &v3, nid, value.c_str());
  if (!e || X509_add_ext(x, e, -1) != 1) die("extension");
  X509_EXTENSION_free(e);
}

}  // namespace

TestCert make_cert(const CertSpec& spec) {
  std::unique_ptr<EVP_PKEY, Del> key(spec.kind == KeyKind::kEcP256 ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048));
  if (!key) die("keygen");
  std::unique_ptr<X509, Del> x(X509_new());
  unsigned char serial[12];
  if (RAND_bytes(serial, sizeof serial) != 1) die("serial");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get()));
  BN_free(bn);
  X509_set_version(x.get(), 2);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), spec.not_before);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), spec.not_after);
  X509_set_pubkey(x.get(), key.get());
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  std::unique_ptr<X509, Del> issuer_cert;
  std::unique_ptr<EVP_PKEY, Del> issuer_key;
  if (spec.issuer) {
    std::unique_ptr<BIO, Del> b(BIO_new_mem_buf(spec.issuer->cert_pem.data(), static_cast<int>(spec.issuer->cert_pem.size())));
    issuer_cert.reset(PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr));
    if (!issuer_cert) die("issuer cert");
    issuer_key = read_key(spec.issuer->key_pem);
    X509_set_issuer_name(x.get(), X509_get_subject_name(issuer_cert.get()));
  } else {
    X509_set_issuer_name(x.get(), name);
  }
  X509* iss = issuer_cert ? issuer_cert.get() : x.get();
  if (spec.ca) {
    add_ext(x.get(), iss, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x.get(), iss, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x.get(), iss, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x.get(), iss, NID_subject_alt_name, spec.san.empty() ? "DNS:" + spec.cn : spec.san);
  }
  add_ext(x.get(), iss, NID_subject_key_identifier, "hash");
  if (X509_sign(x.get(), issuer_key ? issuer_key.get() : key.get(), EVP_sha256()) == 0) die("sign");
  std::unique_ptr<BIO, Del> cb(BIO_new(BIO_s_mem())), kb(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(cb.get(), x.get()) != 1) die("write cert");
  if (PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) die("write key");
  return {bio_text(cb.get()), bio_text(kb.get())};
}

std::string reencode_key(const std::string& pkcs8_pem, KeyFormat fmt, const std::string& passphrase) {
  auto k = read_key(pkcs8_pem);
  std::unique_ptr<BIO, Del> b(BIO_new(BIO_s_mem()));
  int ok = 0;
  if (fmt == KeyFormat::kPkcs8) {
    ok = PEM_write_bio_PrivateKey(b.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr);
  } else if (fmt == KeyFormat::kTraditional) {
    ok = PEM_write_bio_PrivateKey_traditional(b.get(), k.get(), nullptr, nullptr, 0, nullptr, nullptr);
  } else {
    ok = PEM_write_bio_PKCS8PrivateKey(b.get(), k.get(), EVP_aes_256_cbc(), passphrase.data(),
                                       static_cast<int>(passphrase.size()), nullptr, nullptr);
  }
  if (ok != 1) die("re-encode key");
  return bio_text(b.get());
}

std::string make_temp_dir() {
  char tmpl[] = "/tmp/postern-unit-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string write_temp_file(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

}  // namespace postern::testcerts
