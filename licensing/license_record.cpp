// license_record.cpp — see license_record.h. Security-sensitive throughout: every OpenSSL return
// code is checked, and nothing from the document is used before its signature verifies.
#include "licensing/license_record.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "licensing/activation_code.h"

namespace postern::licensing {
namespace {
using nlohmann::json;

std::string ssl_error(const char* what) {
  std::string s = what;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    s += std::string(": ") + buf;
  }
  return s;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;
struct MdDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdDeleter>;

std::string base64(const std::string& raw) {
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(raw.size()));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

std::optional<std::string> unbase64(const std::string& text) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > 1024) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  size_t pad = text.size() >= 2 && text[text.size() - 1] == '=' ? (text[text.size() - 2] == '=' ? 2 : 1) : 0;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string pem_of(EVP_PKEY* k, bool priv) {
  Bio b(BIO_new(BIO_s_mem()));
  if (!b) return "";
  int ok = priv ? PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr)
                : PEM_write_bio_PUBKEY(b.get(), k);
  if (ok != 1) return "";
  char* p = nullptr;
  long n = BIO_get_mem_data(b.get(), &p);
  return n > 0 ? std::string(p, static_cast<size_t>(n)) : "";
}

Key key_from_pem(const std::string& pem, bool priv, std::string& err) {
  ERR_clear_error();
  Bio b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!b) return err = "out of memory", nullptr;
  Key k(priv ? PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr)
             : PEM_read_bio_PUBKEY(b.get(), nullptr, nullptr, nullptr));
  if (!k) return err = ssl_error(priv ? "not a PEM private key" : "not a PEM public key"), nullptr;
  if (EVP_PKEY_get_id(k.get()) != EVP_PKEY_ED25519) return err = "not an Ed25519 key", nullptr;
  return k;
}

// Parses and checks a verified payload.
std::optional<LicenseRecord> read_payload(const std::string& payload, std::string& why) {
  auto j = json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return why = "the payload is not a JSON object", std::nullopt;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : ""; };
  auto num = [&](const char* k) { return j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : -1; };
  LicenseRecord r;
  auto code = parse_code(str("code"));
  auto kind = kind_from_cli(str("license"));
  auto exp = parse_date(str("expires"));
  if (!code) return why = "the record's activation code is malformed", std::nullopt;
  if (!kind || *kind != code->kind) return why = "the record's license does not match its code", std::nullopt;
  if (!exp) return why = "the record's expiry date is malformed", std::nullopt;
  if (num("serial") < 0 || num("signed_at") < 0 || num("issued_at") < 0)
    return why = "the record's serial or dates are malformed", std::nullopt;
  r.code = code->text;
  r.kind = *kind;
  r.expires = *exp;
  r.serial = static_cast<uint64_t>(num("serial"));
  r.issued_at = num("issued_at");
  r.signed_at = num("signed_at");
  return r;
}

}  // namespace

Key generate_key(std::string& err) {
  ERR_clear_error();
  EVP_PKEY* k = nullptr;
  EVP_PKEY_CTX* c = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  if (!c || EVP_PKEY_keygen_init(c) != 1 || EVP_PKEY_keygen(c, &k) != 1) err = ssl_error("Ed25519 key generation failed");
  EVP_PKEY_CTX_free(c);
  return Key(k);
}

Key private_key_from_pem(const std::string& pem, std::string& err) { return key_from_pem(pem, true, err); }
Key public_key_from_pem(const std::string& pem, std::string& err) { return key_from_pem(pem, false, err); }
std::string private_key_pem(EVP_PKEY* k) { return pem_of(k, true); }
std::string public_key_pem(EVP_PKEY* k) { return pem_of(k, false); }

std::string sign_record(const LicenseRecord& r, EVP_PKEY* key, std::string& err) {
  json p{{"code", r.code},       {"license", cli_name(r.kind)}, {"expires", format_date(r.expires)},
         {"serial", r.serial},   {"issued_at", r.issued_at},    {"signed_at", r.signed_at}};
  std::string payload = p.dump();
  ERR_clear_error();
  MdCtx ctx(EVP_MD_CTX_new());
  std::vector<unsigned char> sig(64);
  size_t n = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &n, reinterpret_cast<const unsigned char*>(payload.data()),
                     payload.size()) != 1) {
    err = ssl_error("signing failed");
    return "";
  }
  json doc{{"format", "postern-license-1"},
           {"payload", payload},
           {"signature", base64(std::string(reinterpret_cast<char*>(sig.data()), n))}};
  return doc.dump();
}

std::optional<LicenseRecord> verify_record(const std::string& document, EVP_PKEY* key, std::string& why) {
  if (!key) return why = "no public key to verify with", std::nullopt;
  if (document.size() > kMaxRecordSize) return why = "the record is too large", std::nullopt;
  auto j = json::parse(document, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "postern-license-1" || !j.contains("payload") ||
      !j["payload"].is_string() || !j.contains("signature") || !j["signature"].is_string())
    return why = "not a signed license record", std::nullopt;
  std::string payload = j["payload"].get<std::string>();
  auto sig = unbase64(j["signature"].get<std::string>());
  if (!sig || sig->size() != 64) return why = "the record's signature is malformed", std::nullopt;
  ERR_clear_error();
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1 ||
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig->data()), sig->size(),
                       reinterpret_cast<const unsigned char*>(payload.data()), payload.size()) != 1) {
    ERR_clear_error();
    return why = "the record's signature does not verify against the pinned license key", std::nullopt;
  }
  auto r = read_payload(payload, why);
  if (r) r->document = document;
  return r;
}

}  // namespace postern::licensing
