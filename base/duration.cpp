#include "base/duration.h"

#include <charconv>

namespace postern {

std::optional<std::chrono::milliseconds> parse_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  long long n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || n < 0) return std::nullopt;
  std::string_view unit(p, s.data() + s.size() - p);
  long long ms_per;
  if (unit.empty() || unit == "s") ms_per = 1000;
  else if (unit == "ms") ms_per = 1;
  else if (unit == "m") ms_per = 60'000;
  else if (unit == "h") ms_per = 3'600'000;
  else if (unit == "d") ms_per = 86'400'000;
  else if (unit == "w") ms_per = 7 * 86'400'000LL;
  else return std::nullopt;
  return std::chrono::milliseconds(n * ms_per);
}

}  // namespace postern
