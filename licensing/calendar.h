// calendar.h — civil dates and the time zone licensing counts days in (server.timezone).
//
// Time zones: "UTC" and fixed offsets "+HH:MM" / "-HH:MM" (e.g. "+09:00" for Japan), nothing
// else. Named zones ("Asia/Tokyo") are refused at config load: GCC 12's libstdc++ has no
// std::chrono::tzdb, and the C library only converts through the process-wide TZ variable,
// which a running multi-threaded daemon must not setenv(). A fixed offset is exact for zones
// without daylight saving time (Japan, China, India, UTC); where DST applies, give the offset
// that 00:00 should follow. Nothing here reads the clock: every function takes the time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace postern::licensing {

using Day = int64_t;  // days since 1970-01-01 (a civil date, no time zone)

struct TimeZone {
  int32_t offset_seconds = 0;  // local = UTC + offset
  std::string name = "UTC";
  // "UTC", "+09:00", "-05:30" (hours 0..14, minutes 0..59). nullopt otherwise.
  static std::optional<TimeZone> parse(std::string_view text);
  // The local calendar day of a unix time, and the unix time of a local day's 00:00.
  Day day_of(int64_t unix_seconds) const;
  int64_t midnight(Day d) const;
};

std::optional<Day> parse_date(std::string_view yyyy_mm_dd);  // strict "YYYY-MM-DD"
std::string format_date(Day d);                              // "YYYY-MM-DD"

}  // namespace postern::licensing
