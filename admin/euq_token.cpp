// euq_token.cpp — see euq_token.h.
#include "admin/euq_token.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

namespace postern::admin {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string mac(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

}  // namespace

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) throw std::runtime_error("no randomness");
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : raw) s += hex[c >> 4], s += hex[c & 15];
  return s;
}

std::string base64url(const std::string& raw) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : raw) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  return out;
}

std::optional<std::string> base64url_decode(const std::string& text) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : text) {
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '-') v = 62;
    else if (ch == '_') v = 63;
    else return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string hmac_hex(const std::string& key, const std::string& data) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : mac(key, data)) s += hex[c >> 4], s += hex[c & 15];
  return s;
}

std::string euq_sign(const std::string& key, EuqToken t) {
  if (t.nonce.empty()) t.nonce = random_hex(16);
  nlohmann::json j{{"p", t.purpose}, {"r", t.recipient}, {"e", t.expires}, {"n", t.nonce}};
  if (!t.qid.empty()) j["q"] = t.qid;
  std::string payload = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return base64url(payload) + "." + base64url(mac(key, payload));
}

std::optional<EuqToken> euq_verify(const std::string& key, const std::string& token, const std::string& purpose,
                                   int64_t now, std::string& why) {
  why = "malformed";
  if (key.empty() || token.empty() || token.size() > kMaxEuqToken) return std::nullopt;
  auto dot = token.find('.');
  if (dot == std::string::npos) return std::nullopt;
  auto payload = base64url_decode(token.substr(0, dot));
  auto sig = base64url_decode(token.substr(dot + 1));
  if (!payload || !sig) return std::nullopt;
  std::string want = mac(key, *payload);
  if (sig->size() != want.size() || CRYPTO_memcmp(sig->data(), want.data(), want.size()) != 0) {
    why = "bad signature";
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(*payload, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("p") || !j["p"].is_string() || !j.contains("r") ||
      !j["r"].is_string() || !j.contains("e") || !j["e"].is_number_integer() || !j.contains("n") || !j["n"].is_string())
    return std::nullopt;
  EuqToken t{j["p"].get<std::string>(), j["r"].get<std::string>(), j["e"].get<int64_t>(), j["n"].get<std::string>(), ""};
  if (j.contains("q") && j["q"].is_string()) t.qid = j["q"].get<std::string>();
  if (t.purpose != purpose) {
    why = "wrong purpose";
    return std::nullopt;
  }
  if (t.expires <= now) {
    why = "expired";
    return std::nullopt;
  }
  why.clear();
  return t;
}

}  // namespace postern::admin
