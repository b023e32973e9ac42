// cert_material.cpp — see cert_material.h. Security-sensitive: every byte here comes from an
// admin's upload (possibly the wrong file, possibly hostile): sizes are bounded before OpenSSL
// sees them, each PEM block is decoded on its own, and key text is wiped after use.
#include "certs/cert_material.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "certs/kdf_bounds.h"
#include "certs/ossl_util.h"

namespace postern::certs {

const char* reason_code(Refusal r) {
  switch (r) {
    case Refusal::kNone: return "ok";
    case Refusal::kNotPem: return "not_pem";
    case Refusal::kNoCertificate: return "no_certificate";
    case Refusal::kNoKey: return "no_key";
    case Refusal::kKeyMismatch: return "key_mismatch";
    case Refusal::kNeedPassphrase: return "passphrase_required";
    case Refusal::kWrongPassphrase: return "wrong_passphrase";
    case Refusal::kExpired: return "expired";
    case Refusal::kNotYetValid: return "not_yet_valid";
    case Refusal::kChainOutOfOrder: return "chain_out_of_order";
    case Refusal::kChainIncomplete: return "chain_incomplete";
    case Refusal::kBadInput: return "bad_input";
  }
  return "bad_input";
}

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}
Secret::~Secret() { wipe(s); }

namespace {

ParseResult refuse(Refusal r, std::string why) {
  ParseResult p;
  p.refusal = r;
  p.error = std::move(why);
  ERR_clear_error();
  return p;
}

bool is_cert_block(const std::string& name) {
  return name == "CERTIFICATE" || name == "X509 CERTIFICATE" || name == "TRUSTED CERTIFICATE";
}

// Every PEM block of `text`, in order: (name, the block's text). Non-PEM text between blocks is
// skipped, as openssl does.
std::vector<std::pair<std::string, std::string>> pem_blocks(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (out.size() < 64) {
    size_t b = text.find("-----BEGIN ", pos);
    if (b == std::string::npos) break;
    size_t ne = text.find("-----", b + 11);
    if (ne == std::string::npos) break;
    std::string name = text.substr(b + 11, ne - (b + 11));
    std::string end = "-----END " + name + "-----";
    size_t e = text.find(end, ne);
    if (e == std::string::npos) break;
    out.emplace_back(name, text.substr(b, e + end.size() - b) + "\n");
    pos = e + end.size();
  }
  return out;
}

// True when `issuer` issued `subject`: names and key identifiers agree and the signature verifies.
bool issued_by(X509* subject, X509* issuer) {
  bool ok = X509_check_issued(issuer, subject) == X509_V_OK;
  if (ok) {
    EVP_PKEY* pk = X509_get0_pubkey(issuer);
    ok = pk && X509_verify(subject, pk) == 1;
  }
  ERR_clear_error();
  return ok;
}

// Self-issued and self-signed (a leaf without keyCertSign counts: X509_check_issued would not).
bool self_signed(X509* x) {
  bool ok = X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0 &&
            X509_verify(x, X509_get0_pubkey(x)) == 1;
  ERR_clear_error();
  return ok;
}

std::string short_subject(X509* x) { return name_text(X509_get_subject_name(x)); }

// Leaf first, then each certificate's issuer. "" or why not (and which refusal).
std::string check_chain(const std::vector<X509Ptr>& c, Refusal& r) {
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    if (issued_by(c[i].get(), c[i + 1].get())) continue;
    bool elsewhere = false;
    for (size_t j = 0; j < c.size(); ++j)
      if ((j != i + 1 && j != i && issued_by(c[i].get(), c[j].get())) || (j > i && issued_by(c[j].get(), c[i].get())))
        elsewhere = true;  // its issuer is elsewhere in the bundle, or it issued one that comes later
    if (elsewhere) {
      r = Refusal::kChainOutOfOrder;
      return "chain out of order: certificate " + std::to_string(i + 2) + " (" + short_subject(c[i + 1].get()) +
             ") does not issue certificate " + std::to_string(i + 1) + " (" + short_subject(c[i].get()) +
             "); put the leaf first, then each certificate's issuer";
    }
    r = Refusal::kChainIncomplete;
    return "chain incomplete: the issuer of " + short_subject(c[i].get()) + " (" +
           name_text(X509_get_issuer_name(c[i].get())) + ") is missing from the bundle";
  }
  r = Refusal::kNone;
  return "";
}

std::string to_pem(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), x) != 1) return "";
  return bio_string(b.get());
}

Refusal read_key(const std::string& pem, const std::string& pass, PkeyPtr& out, std::string& error) {
  if (pem.find("-----BEGIN ") == std::string::npos) {
    error = "the private key is not PEM (expected -----BEGIN ... PRIVATE KEY-----)";
    return Refusal::kNotPem;
  }
  bool encrypted = pem.find("ENCRYPTED") != std::string::npos;
  if (encrypted && pass.empty()) {
    error = "the private key is encrypted: a passphrase is needed";
    return Refusal::kNeedPassphrase;
  }
  if (auto e = check_encrypted_pkcs8_pem(pem); !e.empty()) {  // before any derivation runs
    error = "the private key is refused: " + e;
    return Refusal::kBadInput;
  }
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::string p = pass;
  out.reset(b ? PEM_read_bio_PrivateKey(b.get(), nullptr, passphrase_cb, &p) : nullptr);
  wipe(p);
  if (out) {
    ERR_clear_error();
    return Refusal::kNone;
  }
  if (encrypted) {
    ERR_clear_error();
    error = "wrong passphrase for the private key";
    return Refusal::kWrongPassphrase;
  }
  error = "cannot read the private key: " + ossl_errors();
  return Refusal::kBadInput;
}

// Chain order from a set without one (PKCS#12 bags): the leaf, then each one's issuer.
std::vector<X509Ptr> order_chain(X509Ptr leaf, std::vector<X509Ptr> pool) {
  std::vector<X509Ptr> out;
  out.push_back(std::move(leaf));
  while (!pool.empty() && out.size() <= kMaxChain) {
    X509* cur = out.back().get();
    if (self_signed(cur)) break;  // the top
    auto it = std::find_if(pool.begin(), pool.end(), [&](const X509Ptr& c) { return issued_by(cur, c.get()); });
    if (it == pool.end()) break;
    out.push_back(std::move(*it));
    pool.erase(it);
  }
  ERR_clear_error();
  return out;
}

ParseResult from_pkcs12(const ImportInput& in, std::vector<X509Ptr>& certs, PkeyPtr& key) {
  if (in.pkcs12_der.size() > kMaxPkcs12Input) return refuse(Refusal::kBadInput, "the PKCS#12 file is larger than 256 KiB");
  const auto* p = reinterpret_cast<const unsigned char*>(in.pkcs12_der.data());
  std::unique_ptr<PKCS12, decltype(&PKCS12_free)> p12(d2i_PKCS12(nullptr, &p, static_cast<long>(in.pkcs12_der.size())),
                                                      &PKCS12_free);
  if (!p12) return refuse(Refusal::kBadInput, "not a PKCS#12 file: " + ossl_errors());
  const std::string& pass = in.passphrase.s;
  if (auto e = check_pkcs12(p12.get(), pass); !e.empty())  // before the MAC or any bag is derived
    return refuse(Refusal::kBadInput, "the PKCS#12 file is refused: " + e);
  if (PKCS12_mac_present(p12.get()) && PKCS12_verify_mac(p12.get(), pass.c_str(), static_cast<int>(pass.size())) != 1) {
    if (pass.empty()) return refuse(Refusal::kNeedPassphrase, "the PKCS#12 file is protected: a passphrase is needed");
    return refuse(Refusal::kWrongPassphrase, "wrong passphrase for the PKCS#12 file");
  }
  EVP_PKEY* k = nullptr;
  X509* leaf = nullptr;
  STACK_OF(X509)* ca = nullptr;
  if (PKCS12_parse(p12.get(), pass.c_str(), &k, &leaf, &ca) != 1)
    return refuse(Refusal::kBadInput, "cannot read the PKCS#12 file: " + ossl_errors());
  key.reset(k);
  X509Ptr l(leaf);
  std::vector<X509Ptr> pool;
  while (ca && sk_X509_num(ca) > 0) pool.emplace_back(sk_X509_shift(ca));
  sk_X509_free(ca);
  if (!l) return refuse(Refusal::kNoCertificate, "the PKCS#12 file holds no certificate");
  certs = order_chain(std::move(l), std::move(pool));
  return {};
}

ParseResult from_pem(const ImportInput& in, std::vector<X509Ptr>& certs, PkeyPtr& key) {
  if (in.cert_pem.size() > kMaxPemInput || in.key_pem.s.size() > kMaxPemInput)
    return refuse(Refusal::kBadInput, "the certificate or key file is larger than 256 KiB");
  auto blocks = pem_blocks(in.cert_pem);
  if (blocks.empty())
    return refuse(Refusal::kNotPem, "the certificate file is not PEM (expected -----BEGIN CERTIFICATE-----)");
  Secret key_text(in.key_pem.s);
  for (auto& [name, text] : blocks) {
    if (is_cert_block(name)) {
      if (certs.size() > kMaxChain)
        return refuse(Refusal::kBadInput, "more than " + std::to_string(kMaxChain) + " certificates in the bundle");
      BioPtr b(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
      X509Ptr x(b ? PEM_read_bio_X509_AUX(b.get(), nullptr, nullptr, nullptr) : nullptr);
      if (!x)
        return refuse(Refusal::kBadInput, "certificate " + std::to_string(certs.size() + 1) +
                                              " in the bundle does not parse: " + ossl_errors());
      certs.push_back(std::move(x));
    } else if (name.find("PRIVATE KEY") != std::string::npos && key_text.s.empty()) {
      key_text.s = text;  // a combined file: the key beside the certificates
    }
    wipe(text);
  }
  if (certs.empty()) return refuse(Refusal::kNoCertificate, "no certificate in the file (PEM, but no -----BEGIN CERTIFICATE----- block)");
  if (!key_text.s.empty()) {
    ParseResult pr;
    pr.refusal = read_key(key_text.s, in.passphrase.s, key, pr.error);
    if (!pr.ok()) return pr;
  }
  return {};
}

}  // namespace

ParseResult parse_import(const ImportInput& in) {
  std::vector<X509Ptr> certs;
  PkeyPtr key;
  ParseResult pr = in.pkcs12_der.empty() ? from_pem(in, certs, key) : from_pkcs12(in, certs, key);
  if (!pr.ok()) return pr;
  Refusal r = Refusal::kNone;
  if (auto e = check_chain(certs, r); !e.empty()) return refuse(r, e);
  EVP_PKEY* leaf_key = X509_get0_pubkey(certs[0].get());
  if (!leaf_key) {
    ERR_clear_error();
    return refuse(Refusal::kBadInput, "the certificate's public key cannot be read (unknown or malformed key)");
  }
  if (key && EVP_PKEY_eq(leaf_key, key.get()) != 1)
    return refuse(Refusal::kKeyMismatch, "the private key does not match the certificate (" +
                                             short_subject(certs[0].get()) + ")");
  ERR_clear_error();
  pr.m.cert_pem = to_pem(certs[0].get());
  for (size_t i = 1; i < certs.size(); ++i) pr.m.chain_pem += to_pem(certs[i].get());
  if (key) {
    BioPtr b(BIO_new(BIO_s_mem()));
    if (!b || PEM_write_bio_PrivateKey(b.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
      return refuse(Refusal::kBadInput, "cannot re-encode the private key: " + ossl_errors());
    pr.m.key_pem.s = bio_string(b.get());
  }
  std::string err;
  if (!describe(pr.m.cert_pem, pr.m.chain_pem, pr.m.key_pem.s, pr.m.meta, err)) return refuse(Refusal::kBadInput, err);
  return pr;
}

Refusal check_dates(const CertMeta& meta, std::time_t now, std::string& error) {
  if (meta.not_after <= now) {
    error = "the certificate has expired (notAfter " + iso_time(meta.not_after) + ")";
    return Refusal::kExpired;
  }
  if (meta.not_before > now) {
    error = "the certificate is not valid yet (notBefore " + iso_time(meta.not_before) + ")";
    return Refusal::kNotYetValid;
  }
  return Refusal::kNone;
}

Refusal validate(const Material& m, std::time_t now, std::string& error) {
  CertMeta meta;
  if (!describe(m.cert_pem, m.chain_pem, m.key_pem.s, meta, error)) return Refusal::kBadInput;
  if (!meta.has_key) {
    error = "no private key for this certificate";
    return Refusal::kNoKey;
  }
  if (!meta.key_matches) {
    error = "the private key does not match the certificate";
    return Refusal::kKeyMismatch;
  }
  if (!meta.chain_ok) {
    error = meta.chain_error;
    return meta.chain_error.rfind("chain out of order", 0) == 0 ? Refusal::kChainOutOfOrder : Refusal::kChainIncomplete;
  }
  return check_dates(meta, now, error);
}

bool describe(const std::string& cert_pem, const std::string& chain_pem, const std::string& key_pem, CertMeta& out,
              std::string& error) {
  std::vector<X509Ptr> certs;
  for (auto& [name, text] : pem_blocks(cert_pem + chain_pem)) {
    if (!is_cert_block(name)) continue;
    BioPtr b(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    X509Ptr x(b ? PEM_read_bio_X509_AUX(b.get(), nullptr, nullptr, nullptr) : nullptr);
    if (!x) {
      error = "stored certificate does not parse: " + ossl_errors();
      return false;
    }
    certs.push_back(std::move(x));
  }
  if (certs.empty()) {
    error = "no certificate";
    return false;
  }
  X509* leaf = certs[0].get();
  out = CertMeta{};
  out.subject = name_text(X509_get_subject_name(leaf));
  out.issuer = name_text(X509_get_issuer_name(leaf));
  out.serial = serial_hex(leaf);
  out.fingerprint = fingerprint(leaf);
  EVP_PKEY* pub = X509_get0_pubkey(leaf);
  if (!pub) {  // an unknown or malformed key algorithm (found by fuzz_cert_import: a NULL dereference)
    ERR_clear_error();
    error = "the certificate's public key cannot be read (unknown or malformed key)";
    return false;
  }
  out.spki_sha256 = spki_hex(pub);
  describe_key(pub, out.key_type, out.key_bits, out.curve);
  out.sans = subject_alt_names(leaf);
  out.not_before = asn1_to_unix(X509_get0_notBefore(leaf));
  out.not_after = asn1_to_unix(X509_get0_notAfter(leaf));
  out.chain_length = certs.size() - 1;
  out.self_signed = self_signed(leaf);
  Refusal r;
  out.chain_error = check_chain(certs, r);
  out.chain_ok = out.chain_error.empty();
  if (!key_pem.empty()) {
    PkeyPtr k;
    std::string e;
    if (read_key(key_pem, "", k, e) == Refusal::kNone) {
      out.has_key = true;
      out.key_matches = EVP_PKEY_eq(pub, k.get()) == 1;
    }
  }
  ERR_clear_error();
  return true;
}

std::string spki_of_cert(const std::string& cert_pem) {
  BioPtr b(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
  X509Ptr x(b ? PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  return x ? spki_hex(X509_get0_pubkey(x.get())) : "";
}

std::string spki_of_csr(const std::string& csr_pem) {
  BioPtr b(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> r(b ? PEM_read_bio_X509_REQ(b.get(), nullptr, nullptr, nullptr) : nullptr,
                                                        &X509_REQ_free);
  ERR_clear_error();
  return r ? spki_hex(X509_REQ_get0_pubkey(r.get())) : "";
}

std::string spki_of_key(const std::string& key_pem) {
  PkeyPtr k;
  std::string e;
  if (read_key(key_pem, "", k, e) != Refusal::kNone) return "";
  return spki_hex(k.get());
}

std::string iso_time(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string base64_encode(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

bool base64_decode(const std::string& text, std::string& out) {
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return false;  // data after padding
    size_t v = alphabet.find(c);
    if (v == std::string::npos) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return pad <= 2;
}

}  // namespace postern::certs
