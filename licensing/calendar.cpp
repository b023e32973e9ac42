// calendar.cpp — see calendar.h. Dates through std::chrono's civil calendar (C++20, no tzdb).
#include "licensing/calendar.h"

#include <chrono>
#include <cstdio>

namespace postern::licensing {
namespace {
int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
bool digits(std::string_view s) {
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return !s.empty();
}
int num(std::string_view s) {
  int n = 0;
  for (char c : s) n = n * 10 + (c - '0');
  return n;
}
}  // namespace

std::optional<TimeZone> TimeZone::parse(std::string_view t) {
  TimeZone tz;
  if (t == "UTC" || t == "Z" || t == "+00:00") return tz;
  if (t.size() != 6 || (t[0] != '+' && t[0] != '-') || t[3] != ':' || !digits(t.substr(1, 2)) ||
      !digits(t.substr(4, 2)))
    return std::nullopt;
  int h = num(t.substr(1, 2)), m = num(t.substr(4, 2));
  if (h > 14 || m > 59 || (h == 14 && m > 0)) return std::nullopt;
  tz.offset_seconds = (t[0] == '-' ? -1 : 1) * (h * 3600 + m * 60);
  tz.name = std::string(t);
  return tz;
}

Day TimeZone::day_of(int64_t unix_seconds) const { return floor_div(unix_seconds + offset_seconds, 86400); }

int64_t TimeZone::midnight(Day d) const { return d * 86400 - offset_seconds; }

std::optional<Day> parse_date(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-' || !digits(s.substr(0, 4)) || !digits(s.substr(5, 2)) ||
      !digits(s.substr(8, 2)))
    return std::nullopt;
  using namespace std::chrono;
  year_month_day ymd{year{num(s.substr(0, 4))}, month{static_cast<unsigned>(num(s.substr(5, 2)))},
                     day{static_cast<unsigned>(num(s.substr(8, 2)))}};
  if (!ymd.ok() || int(ymd.year()) < 1971) return std::nullopt;
  return sys_days(ymd).time_since_epoch().count();
}

std::string format_date(Day d) {
  using namespace std::chrono;
  year_month_day ymd{sys_days(days(d))};
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()));
  return buf;
}

}  // namespace postern::licensing
