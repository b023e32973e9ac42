// license_fuzz.cpp — activation codes and signed license records from hostile bytes.
// Codes: parse_code and code_valid_for for every license; an accepted code's canonical text
// parses to the same code. Records: verify_record on the bytes as a document, and on the bytes
// as the payload of a record signed with a key made at start (so the payload reader, behind the
// signature check, is reached too). Checks: nothing verifies under a key that did not sign it.
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "licensing/activation_code.h"
#include "licensing/license_record.h"

using namespace postern::licensing;

namespace {
Key g_key, g_other;

std::string b64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += t[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += t[(v >> 18) & 63], out += t[(v >> 12) & 63], out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[(v >> 18) & 63], out += t[(v >> 12) & 63], out += t[(v >> 6) & 63], out += '=';
  }
  return out;
}

std::string signed_doc(const std::string& payload) {
  size_t n = 64;
  std::string sig(n, '\0');
  auto* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, g_key.get()) == 1 &&
            EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &n,
                           reinterpret_cast<const unsigned char*>(payload.data()), payload.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) abort();
  return nlohmann::json{{"format", "postern-license-1"}, {"payload", payload}, {"signature", b64(sig)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  std::string err;
  g_key = generate_key(err);
  g_other = generate_key(err);
  if (!g_key || !g_other) abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  if (auto c = parse_code(in)) {
    auto again = parse_code(c->text);
    if (!again || again->text != c->text || again->kind != c->kind || again->serial != c->serial) abort();
  }
  for (LicenseKind k : {LicenseKind::kAntivirus, LicenseKind::kAntispam, LicenseKind::kReputation,
                        LicenseKind::kPrefilter, LicenseKind::kDlp, LicenseKind::kEncryption})
    (void)code_valid_for(in, k);
  std::string why;
  (void)verify_record(in, g_key.get(), why);
  if (size <= kMaxRecordSize / 2) {
    std::string doc = signed_doc(in);
    auto r = verify_record(doc, g_key.get(), why);
    if (r && verify_record(doc, g_other.get(), why)) abort();  // another key's record verified
  }
  ERR_clear_error();
  return 0;
}
