// kdf_bounds.cpp — reads PBES1/PBES2/PKCS#12 PBE parameters with OpenSSL's ASN.1 types and
// compares them with the bounds in kdf_bounds.h before anything is derived.
#include "certs/kdf_bounds.h"

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <memory>

namespace postern::certs {
namespace {

// An ASN1_INTEGER as uint64_t; false when negative or too large to matter (then: refused).
bool as_u64(const ASN1_INTEGER* a, uint64_t& out) {
  if (!a) return false;
  if (ASN1_INTEGER_get_uint64(&out, a) != 1) {
    ERR_clear_error();
    return false;
  }
  return true;
}

std::string too_many(uint64_t n) {
  return "the key derivation asks for " + std::to_string(n) + " iterations (at most " +
         std::to_string(kMaxKdfIterations) + " are accepted)";
}

std::string check_pbkdf2(const ASN1_TYPE* param) {
  std::unique_ptr<PBKDF2PARAM, decltype(&PBKDF2PARAM_free)> kdf(
      static_cast<PBKDF2PARAM*>(ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM), param)), &PBKDF2PARAM_free);
  uint64_t iter = 0;
  if (!kdf || !as_u64(kdf->iter, iter)) return "unreadable PBKDF2 parameters";
  return iter > kMaxKdfIterations ? too_many(iter) : "";
}

std::string check_scrypt(const ASN1_TYPE* param) {
  std::unique_ptr<SCRYPT_PARAMS, decltype(&SCRYPT_PARAMS_free)> sp(
      static_cast<SCRYPT_PARAMS*>(ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), param)),
      &SCRYPT_PARAMS_free);
  uint64_t n = 0, r = 0, p = 0;
  if (!sp || !as_u64(sp->costParameter, n) || !as_u64(sp->blockSize, r) || !as_u64(sp->parallelizationParameter, p))
    return "unreadable scrypt parameters";
  if (n == 0 || r == 0 || p == 0 || n > (1ull << 32) || r > (1ull << 20) || p > (1ull << 20) ||
      128 * n * r > kMaxScryptMemory || n * r * p > kMaxScryptWork)
    return "the key derivation asks for scrypt N=" + std::to_string(n) + " r=" + std::to_string(r) + " p=" +
           std::to_string(p) + " (at most " + std::to_string(kMaxScryptMemory >> 20) + " MiB and N*r*p " +
           std::to_string(kMaxScryptWork) + " are accepted)";
  return "";
}

}  // namespace

std::string check_pbe(const X509_ALGOR* alg) {
  if (!alg) return "";
  const ASN1_OBJECT* oid = nullptr;
  int ptype = 0;
  const void* pval = nullptr;
  X509_ALGOR_get0(&oid, &ptype, &pval, alg);
  int nid = OBJ_obj2nid(oid);
  if (ptype != V_ASN1_SEQUENCE) return "";  // no parameters: no KDF to bound (the decryption fails)
  const ASN1_TYPE* param = alg->parameter;
  if (nid == NID_pbes2) {
    std::unique_ptr<PBE2PARAM, decltype(&PBE2PARAM_free)> p2(
        static_cast<PBE2PARAM*>(ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), param)), &PBE2PARAM_free);
    if (!p2 || !p2->keyfunc) return "unreadable PBES2 parameters";
    int kdf = OBJ_obj2nid(p2->keyfunc->algorithm);
    if (kdf == NID_id_pbkdf2) return check_pbkdf2(p2->keyfunc->parameter);
    if (kdf == NID_id_scrypt) return check_scrypt(p2->keyfunc->parameter);
    return "unsupported key derivation " + std::to_string(kdf);
  }
  // PKCS#5 v1 and PKCS#12 PBEs: a salt and an iteration count.
  std::unique_ptr<PBEPARAM, decltype(&PBEPARAM_free)> pbe(
      static_cast<PBEPARAM*>(ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBEPARAM), param)), &PBEPARAM_free);
  uint64_t iter = 0;
  if (!pbe || !as_u64(pbe->iter, iter)) {
    ERR_clear_error();
    return "";  // not a PBE we know: OpenSSL refuses it when decrypting
  }
  return iter > kMaxKdfIterations ? too_many(iter) : "";
}

std::string check_encrypted_pkcs8_pem(const std::string& pem) {
  if (pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") == std::string::npos) return "";
  std::unique_ptr<BIO, decltype(&BIO_free)> b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  std::unique_ptr<X509_SIG, decltype(&X509_SIG_free)> sig(
      b ? PEM_read_bio_PKCS8(b.get(), nullptr, nullptr, nullptr) : nullptr, &X509_SIG_free);
  ERR_clear_error();
  if (!sig) return "";  // not readable: the key reader says why
  const X509_ALGOR* alg = nullptr;
  X509_SIG_get0(sig.get(), &alg, nullptr);
  return check_pbe(alg);
}

namespace {

std::string check_bags(const STACK_OF(PKCS12_SAFEBAG) * bags) {
  for (int i = 0; i < sk_PKCS12_SAFEBAG_num(bags); ++i) {
    const PKCS12_SAFEBAG* bag = sk_PKCS12_SAFEBAG_value(bags, i);
    if (PKCS12_SAFEBAG_get_nid(bag) == NID_pkcs8ShroudedKeyBag) {
      const X509_ALGOR* alg = nullptr;
      X509_SIG_get0(PKCS12_SAFEBAG_get0_pkcs8(bag), &alg, nullptr);
      if (auto e = check_pbe(alg); !e.empty()) return e;
    } else if (PKCS12_SAFEBAG_get_nid(bag) == NID_safeContentsBag) {
      if (auto e = check_bags(PKCS12_SAFEBAG_get0_safes(bag)); !e.empty()) return e;
    }
  }
  return "";
}

}  // namespace

std::string check_pkcs12(PKCS12* p12, const std::string& pass) {
  const ASN1_INTEGER* mac_iter = nullptr;
  PKCS12_get0_mac(nullptr, nullptr, nullptr, &mac_iter, p12);
  uint64_t n = 1;
  if (mac_iter && !as_u64(mac_iter, n)) return "unreadable PKCS#12 MAC parameters";
  if (n > kMaxKdfIterations) return too_many(n);
  std::unique_ptr<STACK_OF(PKCS7), void (*)(STACK_OF(PKCS7)*)> safes(
      PKCS12_unpack_authsafes(p12), [](STACK_OF(PKCS7) * s) { sk_PKCS7_pop_free(s, PKCS7_free); });
  ERR_clear_error();
  if (!safes) return "";  // PKCS12_parse says why
  using Bags = std::unique_ptr<STACK_OF(PKCS12_SAFEBAG), void (*)(STACK_OF(PKCS12_SAFEBAG)*)>;
  auto free_bags = [](STACK_OF(PKCS12_SAFEBAG) * s) { sk_PKCS12_SAFEBAG_pop_free(s, PKCS12_SAFEBAG_free); };
  for (int i = 0; i < sk_PKCS7_num(safes.get()); ++i) {
    PKCS7* p7 = sk_PKCS7_value(safes.get(), i);
    int type = OBJ_obj2nid(p7->type);
    if (type == NID_pkcs7_encrypted) {
      if (!p7->d.encrypted || !p7->d.encrypted->enc_data) continue;
      if (auto e = check_pbe(p7->d.encrypted->enc_data->algorithm); !e.empty()) return e;
      Bags bags(PKCS12_unpack_p7encdata(p7, pass.c_str(), static_cast<int>(pass.size())), free_bags);
      ERR_clear_error();
      if (bags) {
        if (auto e = check_bags(bags.get()); !e.empty()) return e;
      }
    } else if (type == NID_pkcs7_data) {
      Bags bags(PKCS12_unpack_p7data(p7), free_bags);
      ERR_clear_error();
      if (bags) {
        if (auto e = check_bags(bags.get()); !e.empty()) return e;
      }
    }
  }
  return "";
}

}  // namespace postern::certs
