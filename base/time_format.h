// time_format.h — dates as mail headers and DSNs write them.
#pragma once

#include <ctime>
#include <string>

namespace postern {

// "Sun, 22 Nov 2026 06:10:48 +0000": local time with offset (utc = false) or UTC.
std::string rfc5322_date(std::time_t t, bool utc = false);
inline std::string rfc5322_now() { return rfc5322_date(std::time(nullptr)); }

}  // namespace postern
