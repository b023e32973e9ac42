// ossl_util.h — small OpenSSL helpers the certs room shares (owning pointers, names, digests).
// Internal to certs/. Security-sensitive: passphrase_cb hands a passphrase to OpenSSL without
// ever prompting on a terminal.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace postern::certs {

struct OsslFree {
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(X509* x) const { X509_free(x); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
  void operator()(X509_REQ* r) const { X509_REQ_free(r); }
};
using BioPtr = std::unique_ptr<BIO, OsslFree>;
using X509Ptr = std::unique_ptr<X509, OsslFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OsslFree>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, OsslFree>;
using ReqPtr = std::unique_ptr<X509_REQ, OsslFree>;

std::string bio_string(BIO* b);
std::string ossl_errors();  // OpenSSL's error queue in one line (and emptied)
int passphrase_cb(char* buf, int size, int rwflag, void* u);  // u: std::string*
std::string name_text(const X509_NAME* n);                     // RFC 2253
std::string serial_hex(X509* x);
std::string fingerprint(X509* x);  // SHA-256, "AB:CD:..."
std::string spki_hex(EVP_PKEY* k);
void describe_key(EVP_PKEY* k, std::string& type, int& bits, std::string& curve);
std::vector<std::string> subject_alt_names(X509* x);
int64_t asn1_to_unix(const ASN1_TIME* t);
std::string hex(const unsigned char* p, size_t n, bool colons);

}  // namespace postern::certs
