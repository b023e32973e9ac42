// bundle_sign.cpp — see bundle_sign.h. Security-sensitive: key generation and signing.
#include "scan/bundle_sign.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace postern::scan {
namespace {

struct Free {
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(X509* x) const { X509_free(x); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(CMS_ContentInfo* c) const { CMS_ContentInfo_free(c); }
};
using X509Ptr = std::unique_ptr<X509, Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Free>;
using BioPtr = std::unique_ptr<BIO, Free>;

std::string ossl_err() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

std::string bio_text(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return std::string(p, static_cast<size_t>(n));
}

bool add_ext(X509* x, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!e) return false;
  bool ok = X509_add_ext(x, e, -1) == 1;
  X509_EXTENSION_free(e);
  return ok;
}

X509Ptr new_cert(EVP_PKEY* key, const std::string& cn, int64_t nb, int64_t na) {
  X509Ptr x(X509_new());
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get()));
  BN_free(bn);
  X509_set_version(x.get(), 2);
  ASN1_TIME_set(X509_getm_notBefore(x.get()), static_cast<time_t>(nb));
  ASN1_TIME_set(X509_getm_notAfter(x.get()), static_cast<time_t>(na));
  X509_set_pubkey(x.get(), key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("Postern patterns"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return x;
}

CertAndKey finish(X509* x, EVP_PKEY* key) {
  BioPtr cb(BIO_new(BIO_s_mem())), kb(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(cb.get(), x) != 1 || PEM_write_bio_PrivateKey(kb.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return {"", "", "cannot write PEM: " + ossl_err()};
  return {bio_text(cb.get()), bio_text(kb.get()), ""};
}

}  // namespace

CertAndKey make_pattern_root(const std::string& common_name, int64_t not_before, int64_t not_after) {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return {"", "", "cannot make a key: " + ossl_err()};
  auto x = new_cert(key.get(), common_name, not_before, not_after);
  X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()));
  if (!add_ext(x.get(), x.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !add_ext(x.get(), x.get(), NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !add_ext(x.get(), x.get(), NID_subject_key_identifier, "hash") || X509_sign(x.get(), key.get(), EVP_sha256()) == 0)
    return {"", "", "cannot make the root certificate: " + ossl_err()};
  return finish(x.get(), key.get());
}

CertAndKey make_pattern_signer(const std::string& root_cert_pem, const std::string& root_key_pem,
                               const std::string& common_name, int64_t not_before, int64_t not_after) {
  BioPtr rb(BIO_new_mem_buf(root_cert_pem.data(), static_cast<int>(root_cert_pem.size())));
  BioPtr kb(BIO_new_mem_buf(root_key_pem.data(), static_cast<int>(root_key_pem.size())));
  X509Ptr root(PEM_read_bio_X509(rb.get(), nullptr, nullptr, nullptr));
  KeyPtr rkey(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!root || !rkey) return {"", "", "cannot read the root certificate or key: " + ossl_err()};
  if (X509_check_private_key(root.get(), rkey.get()) != 1) return {"", "", "the root key does not match the root certificate"};
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return {"", "", "cannot make a key: " + ossl_err()};
  auto x = new_cert(key.get(), common_name, not_before, not_after);
  X509_set_issuer_name(x.get(), X509_get_subject_name(root.get()));
  if (!add_ext(x.get(), root.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !add_ext(x.get(), root.get(), NID_key_usage, "critical,digitalSignature") ||
      !add_ext(x.get(), root.get(), NID_ext_key_usage, "codeSigning") ||
      !add_ext(x.get(), root.get(), NID_authority_key_identifier, "keyid:always") ||
      X509_sign(x.get(), rkey.get(), EVP_sha256()) == 0)
    return {"", "", "cannot issue the signing certificate: " + ossl_err()};
  return finish(x.get(), key.get());
}

std::string sign_manifest(const std::string& manifest, const std::string& cert_pem, const std::string& key_pem,
                          std::string& error) {
  BioPtr cb(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  BioPtr kb(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  X509Ptr cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  KeyPtr key(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!cert || !key) {
    error = "cannot read the signing certificate or key: " + ossl_err();
    return "";
  }
  BioPtr data(BIO_new_mem_buf(manifest.data(), static_cast<int>(manifest.size())));
  std::unique_ptr<CMS_ContentInfo, Free> cms(
      CMS_sign(cert.get(), key.get(), nullptr, data.get(), CMS_BINARY | CMS_DETACHED));
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!cms || i2d_CMS_bio(out.get(), cms.get()) != 1) {
    error = "cannot sign: " + ossl_err();
    return "";
  }
  return bio_text(out.get());
}

}  // namespace postern::scan
