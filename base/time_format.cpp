#include "base/time_format.h"

namespace postern {

std::string rfc5322_date(std::time_t t, bool utc) {
  std::tm tm{};
  if (utc) gmtime_r(&t, &tm);
  else localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S %z", &tm);
  return buf;
}

}  // namespace postern
