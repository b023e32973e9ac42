// cert_make.cpp — see cert_make.h. Security-sensitive: key generation (OpenSSL's default
// DRBG), random serial numbers, export encryption (never a weak or legacy cipher).
#include "certs/cert_make.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>

#include "certs/ossl_util.h"

namespace postern::certs {

bool parse_key_spec(const std::string& s, KeySpec& out) {
  if (s == "rsa2048" || s == "rsa-2048" || s == "rsa" || s == "2048") out = KeySpec::kRsa2048;
  else if (s == "rsa4096" || s == "rsa-4096" || s == "4096") out = KeySpec::kRsa4096;
  else if (s == "ec-p256" || s == "ec" || s == "ecdsa" || s == "p256" || s == "ec-p-256" || s == "ecdsa-p256")
    out = KeySpec::kEcP256;
  else return false;
  return true;
}

const char* key_spec_name(KeySpec k) {
  switch (k) {
    case KeySpec::kRsa2048: return "rsa2048";
    case KeySpec::kRsa4096: return "rsa4096";
    case KeySpec::kEcP256: return "ec-p256";
  }
  return "";
}

namespace {

bool clean_field(const std::string& v, size_t max) {
  return v.size() <= max &&
         std::none_of(v.begin(), v.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

PkeyPtr gen_key(KeySpec k) {
  if (k == KeySpec::kEcP256) return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(k == KeySpec::kRsa4096 ? 4096 : 2048)));
}

bool add_name(X509_NAME* n, const char* field, const std::string& v) {
  if (v.empty()) return true;
  return X509_NAME_add_entry_by_txt(n, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(v.c_str()), -1,
                                    -1, 0) == 1;
}

bool fill_name(X509_NAME* n, const Subject& s) {
  return add_name(n, "C", s.country) && add_name(n, "ST", s.state) && add_name(n, "L", s.locality) &&
         add_name(n, "O", s.organisation) && add_name(n, "OU", s.unit) && add_name(n, "CN", s.common_name) &&
         add_name(n, "emailAddress", s.email);
}

std::string san_text(const Subject& s) {
  if (s.sans.empty()) return "DNS:" + s.common_name;
  std::string out;
  for (auto& x : s.sans) out += (out.empty() ? "" : ",") + x;
  return out;
}

X509_EXTENSION* make_ext(X509V3_CTX* ctx, int nid, const std::string& value) {
  return X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str());
}

std::string key_pem_of(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1) return "";
  return bio_string(b.get());
}

Made fail(const std::string& what) {
  Made m;
  m.error = what + ": " + ossl_errors();
  return m;
}

// Parsed key + certs of a stored entry.
bool load(const Material& m, PkeyPtr& key, X509Ptr& leaf, STACK_OF(X509) * chain, std::string& error) {
  std::string all = m.cert_pem + m.chain_pem;
  BioPtr b(BIO_new_mem_buf(all.data(), static_cast<int>(all.size())));
  leaf.reset(b ? PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!leaf) {
    error = "the entry has no certificate";
    ERR_clear_error();
    return false;
  }
  while (X509* x = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) sk_X509_push(chain, x);
  ERR_clear_error();
  if (m.key_pem.s.empty()) {
    error = "the entry has no private key";
    return false;
  }
  BioPtr kb(BIO_new_mem_buf(m.key_pem.s.data(), static_cast<int>(m.key_pem.s.size())));
  key.reset(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, passphrase_cb, nullptr) : nullptr);
  if (!key) {
    error = "cannot read the entry's private key: " + ossl_errors();
    return false;
  }
  return true;
}

}  // namespace

std::string check_subject(const Subject& s) {
  if (s.common_name.empty()) return "a common name (cn) is required";
  if (!s.country.empty() && (s.country.size() != 2 || !std::isalpha(static_cast<unsigned char>(s.country[0])) ||
                             !std::isalpha(static_cast<unsigned char>(s.country[1]))))
    return "country must be a two-letter ISO 3166 code (e.g. JP), not '" + s.country + "'";
  const std::pair<const char*, const std::string*> fields[] = {
      {"country", &s.country},     {"state", &s.state}, {"locality", &s.locality}, {"organisation", &s.organisation},
      {"unit", &s.unit},           {"cn", &s.common_name}, {"email", &s.email}};
  for (auto& [name, v] : fields)
    if (!clean_field(*v, 128)) return std::string(name) + " is longer than 128 characters or holds control characters";
  if (s.sans.size() > 100) return "more than 100 SANs";
  for (auto& x : s.sans) {
    bool known = x.rfind("DNS:", 0) == 0 || x.rfind("IP:", 0) == 0 || x.rfind("email:", 0) == 0;
    if (!known || x.find(':') + 1 >= x.size() || !clean_field(x, 260) || x.find(',') != std::string::npos)
      return "bad SAN '" + x + "': use DNS:name, IP:address or email:address";
  }
  return "";
}

Made make_csr(const Subject& s, KeySpec k) {
  if (auto e = check_subject(s); !e.empty()) return Made{"", {}, e};
  PkeyPtr key = gen_key(k);
  if (!key) return fail("key generation failed");
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), 0) != 1 || !fill_name(X509_REQ_get_subject_name(req.get()), s) ||
      X509_REQ_set_pubkey(req.get(), key.get()) != 1)
    return fail("cannot build the CSR");
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, nullptr, nullptr, req.get(), nullptr, 0);
  STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
  X509_EXTENSION* san = make_ext(&ctx, NID_subject_alt_name, san_text(s));
  if (!san) {
    sk_X509_EXTENSION_free(exts);
    return fail("bad subjectAltName");
  }
  sk_X509_EXTENSION_push(exts, san);
  int ok = X509_REQ_add_extensions(req.get(), exts);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  if (ok != 1 || X509_REQ_sign(req.get(), key.get(), EVP_sha256()) <= 0) return fail("cannot sign the CSR");
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509_REQ(b.get(), req.get()) != 1) return fail("cannot write the CSR");
  Made m;
  m.pem = bio_string(b.get());
  m.key_pem.s = key_pem_of(key.get());
  return m;
}

Made make_self_signed(const Subject& s, KeySpec k, int days, std::time_t now) {
  if (auto e = check_subject(s); !e.empty()) return Made{"", {}, e};
  if (days < 1 || days > 3650) return Made{"", {}, "days must be 1 to 3650"};
  PkeyPtr key = gen_key(k);
  if (!key) return fail("key generation failed");
  X509Ptr x(X509_new());
  unsigned char serial[16];
  if (!x || RAND_bytes(serial, sizeof serial) != 1) return fail("cannot make a serial number");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get())) != nullptr;
  BN_free(bn);
  ok = ok && X509_set_version(x.get(), 2) == 1 &&
       X509_time_adj_ex(X509_getm_notBefore(x.get()), 0, -3600, &now) != nullptr &&
       X509_time_adj_ex(X509_getm_notAfter(x.get()), days, -3600, &now) != nullptr &&
       X509_set_pubkey(x.get(), key.get()) == 1 && fill_name(X509_get_subject_name(x.get()), s) &&
       X509_set_issuer_name(x.get(), X509_get_subject_name(x.get())) == 1;
  if (!ok) return fail("cannot build the certificate");
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  const std::pair<int, std::string> exts[] = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, k == KeySpec::kEcP256 ? "critical,digitalSignature" : "critical,digitalSignature,keyEncipherment"},
      {NID_ext_key_usage, "serverAuth,clientAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_subject_alt_name, san_text(s)}};
  for (auto& [nid, v] : exts) {
    X509_EXTENSION* e = make_ext(&ctx, nid, v);
    bool added = e && X509_add_ext(x.get(), e, -1) == 1;
    X509_EXTENSION_free(e);
    if (!added) return fail("bad extension " + v);
  }
  if (X509_sign(x.get(), key.get(), EVP_sha256()) <= 0) return fail("cannot sign the certificate");
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), x.get()) != 1) return fail("cannot write the certificate");
  Made m;
  m.pem = bio_string(b.get());
  m.key_pem.s = key_pem_of(key.get());
  return m;
}

std::string export_pem(const Material& m) { return m.cert_pem + m.chain_pem; }

std::string export_pkcs12(const Material& m, const std::string& password, const std::string& friendly_name,
                          std::string& error) {
  if (password.empty()) {
    error = "an export password is required for the private key";
    return "";
  }
  PkeyPtr key;
  X509Ptr leaf;
  STACK_OF(X509)* chain = sk_X509_new_null();
  std::string out;
  if (chain && load(m, key, leaf, chain, error)) {
    PKCS12* p12 = PKCS12_create(password.c_str(), friendly_name.c_str(), key.get(), leaf.get(), chain,
                                NID_aes_256_cbc, NID_aes_256_cbc, 100000, 1, 0);
    if (p12 && PKCS12_set_mac(p12, password.c_str(), -1, nullptr, 0, 100000, EVP_sha256()) == 1) {
      unsigned char* der = nullptr;
      int len = i2d_PKCS12(p12, &der);
      if (len > 0) out.assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
      OPENSSL_free(der);
    }
    if (out.empty()) error = "cannot make the PKCS#12 file: " + ossl_errors();
    PKCS12_free(p12);
  }
  sk_X509_pop_free(chain, X509_free);
  return out;
}

std::string export_encrypted_key(const Material& m, const std::string& password, std::string& error) {
  if (password.empty()) {
    error = "an export password is required for the private key";
    return "";
  }
  PkeyPtr key;
  X509Ptr leaf;
  STACK_OF(X509)* chain = sk_X509_new_null();
  std::string out;
  if (chain && load(m, key, leaf, chain, error)) {
    BioPtr b(BIO_new(BIO_s_mem()));
    std::string pw = password;
    if (b && PEM_write_bio_PKCS8PrivateKey(b.get(), key.get(), EVP_aes_256_cbc(), pw.data(),
                                           static_cast<int>(pw.size()), nullptr, nullptr) == 1)
      out = bio_string(b.get());
    else error = "cannot encrypt the private key: " + ossl_errors();
    wipe(pw);
  }
  sk_X509_pop_free(chain, X509_free);
  return out;
}

}  // namespace postern::certs
