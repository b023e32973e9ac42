// activation_code.cpp — see activation_code.h.
#include "licensing/activation_code.h"

#include <array>

namespace postern::licensing {
namespace {

constexpr const char* kAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr size_t kDataSymbols = 19;
constexpr size_t kSymbols = kDataSymbols + 1;

int prefix_number(std::string_view p) {
  if (p == "IM") return 1;
  if (p == "AS") return 2;
  if (p == "DL") return 3;
  return 0;
}

int decode_symbol(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  if (c == 'O') c = '0';
  if (c == 'I' || c == 'L') c = '1';
  for (int i = 0; i < 32; ++i)
    if (kAlphabet[i] == c) return i;
  return -1;
}

// GF(32) with x^5 + x^2 + 1.
int gf_mul(int a, int b) {
  int r = 0;
  for (int i = 0; i < 5; ++i) {
    if (b & 1) r ^= a;
    b >>= 1;
    a <<= 1;
    if (a & 32) a ^= 0x25;
  }
  return r;
}

int check_symbol(int prefix, const std::array<int, kSymbols>& v) {
  int sum = 0, w = 2;  // a^1
  sum ^= gf_mul(w, prefix);
  for (size_t i = 0; i < kDataSymbols; ++i) {
    w = gf_mul(w, 2);
    sum ^= gf_mul(w, v[i]);
  }
  return sum;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

std::string format(std::string_view prefix, const std::array<int, kSymbols>& v) {
  std::string out(prefix);
  for (size_t i = 0; i < kSymbols; ++i) {
    if (i % 5 == 0) out += '-';
    out += kAlphabet[v[i]];
  }
  return out;
}

}  // namespace

std::optional<ActivationCode> parse_code(std::string_view text) {
  text = trim(text);
  if (text.size() != 2 + 4 * 6) return std::nullopt;  // "IM" + 4 x "-XXXXX"
  std::string prefix{static_cast<char>(text[0] & ~0x20), static_cast<char>(text[1] & ~0x20)};
  int pn = prefix_number(prefix);
  if (pn == 0) return std::nullopt;
  std::array<int, kSymbols> v{};
  size_t n = 0;
  for (size_t i = 2; i < text.size(); ++i) {
    if ((i - 2) % 6 == 0) {
      if (text[i] != '-') return std::nullopt;
      continue;
    }
    int s = decode_symbol(text[i]);
    if (s < 0) return std::nullopt;
    v[n++] = s;
  }
  if (n != kSymbols || check_symbol(pn, v) != v[kDataSymbols]) return std::nullopt;
  auto kind = kind_from_number(v[0]);
  if (!kind) return std::nullopt;
  ActivationCode c;
  c.prefix = prefix;
  c.kind = *kind;
  for (size_t i = 1; i <= 12; ++i) c.serial = (c.serial << 5) | static_cast<uint64_t>(v[i]);
  for (size_t i = 13; i <= 18; ++i) c.random = (c.random << 5) | static_cast<uint32_t>(v[i]);
  c.text = format(prefix, v);
  return c;
}

bool code_valid_for(std::string_view text, LicenseKind k) {
  auto c = parse_code(text);
  return c && code_fits(k, c->prefix, c->kind);
}

std::string make_code(LicenseKind k, std::string_view prefix, uint64_t serial, uint32_t random) {
  std::array<int, kSymbols> v{};
  v[0] = static_cast<int>(k);
  for (int i = 12; i >= 1; --i, serial >>= 5) v[static_cast<size_t>(i)] = static_cast<int>(serial & 31);
  for (int i = 18; i >= 13; --i, random >>= 5) v[static_cast<size_t>(i)] = static_cast<int>(random & 31);
  v[kDataSymbols] = check_symbol(prefix_number(prefix), v);
  return format(prefix, v);
}

}  // namespace postern::licensing
