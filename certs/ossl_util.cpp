// ossl_util.cpp — see ossl_util.h.
#include "certs/ossl_util.h"

#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>

namespace postern::certs {

std::string bio_string(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return n > 0 ? std::string(p, static_cast<size_t>(n)) : std::string();
}

std::string ossl_errors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

int passphrase_cb(char* buf, int size, int, void* u) {
  const auto* pass = static_cast<const std::string*>(u);
  if (!pass || pass->empty() || static_cast<int>(pass->size()) > size) return 0;
  std::memcpy(buf, pass->data(), pass->size());
  return static_cast<int>(pass->size());
}

std::string name_text(const X509_NAME* n) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || X509_NAME_print_ex(b.get(), n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) return "";
  return bio_string(b.get());
}

std::string hex(const unsigned char* p, size_t n, bool colons) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (colons && i) out += ':';
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

std::string serial_hex(X509* x) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr);
  if (!bn) return "";
  char* h = BN_bn2hex(bn);
  std::string out = h ? h : "";
  OPENSSL_free(h);
  BN_free(bn);
  return out;
}

std::string fingerprint(X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1) return "";
  return hex(md, n, true);
}

std::string spki_hex(EVP_PKEY* k) {
  if (!k) return "";
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(k, &der);
  if (len <= 0) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  int ok = EVP_Digest(der, static_cast<size_t>(len), md, &n, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  return ok == 1 ? hex(md, n, false) : "";
}

void describe_key(EVP_PKEY* k, std::string& type, int& bits, std::string& curve) {
  if (!k) {  // a certificate whose key OpenSSL cannot decode (found by fuzz_cert_import)
    type = "unknown", bits = 0;
    return;
  }
  int id = EVP_PKEY_get_base_id(k);
  bits = EVP_PKEY_get_bits(k);
  if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
    type = "RSA";
  } else if (id == EVP_PKEY_EC) {
    type = "EC";
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) == 1) curve = group;
  } else {
    const char* sn = OBJ_nid2sn(id);
    type = sn ? sn : "unknown";
  }
}

std::vector<std::string> subject_alt_names(X509* x) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names) && out.size() < 500; ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type == GEN_DNS || g->type == GEN_EMAIL) {
      const ASN1_IA5STRING* s = g->d.ia5;
      out.push_back(std::string(g->type == GEN_DNS ? "DNS:" : "email:") +
                    std::string(reinterpret_cast<const char*>(s->data), static_cast<size_t>(s->length)));
    } else if (g->type == GEN_IPADD) {
      char buf[INET6_ADDRSTRLEN] = {};
      const ASN1_OCTET_STRING* ip = g->d.ip;
      int af = ip->length == 4 ? AF_INET : ip->length == 16 ? AF_INET6 : 0;
      if (af && inet_ntop(af, ip->data, buf, sizeof buf)) out.push_back(std::string("IP:") + buf);
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

int64_t asn1_to_unix(const ASN1_TIME* t) {
  std::tm tm{};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace postern::certs
