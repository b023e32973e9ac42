#include "base/text.h"

#include <cstdint>
#include <cstring>

namespace postern {

bool has_8bit(std::string_view s) {
  // Thirty-two bytes at a time, then the tail.
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 32) {
    uint64_t w[4];
    std::memcpy(w, p, sizeof w);
    if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ull) return true;
    p += 32;
    n -= 32;
  }
  for (; n > 0; ++p, --n)
    if (static_cast<unsigned char>(*p) >= 0x80) return true;
  return false;
}

std::string ascii_lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return r;
}

}  // namespace postern
