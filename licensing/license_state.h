// license_state.h — the pure date rules of licensing (SPEC.md section 5, seed 004): the state of
// a license from its expiry date D and today, the check schedule, the dashboard notices and the
// admin mails, with every number filled in. Functions of (D, today); "today" is a local calendar
// day in server.timezone (calendar.h), so 00:00 is local midnight.
//
//   active      more than 60 days before D
//   expiring    D-60 .. D-1
//   grace       D .. D+89, i.e. [D 00:00, D+90 00:00)  (D = 2020-01-31: grace ends 2020-04-30)
//   expired     from D+90 on (component updates stop; scanning goes on)
//
// The clock guard keeps the latest time seen: a clock stepped back below it does not bring a
// license back from grace or expiry. Security-sensitive: only that guard; the rest is arithmetic.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "licensing/calendar.h"
#include "licensing/license_kind.h"

namespace postern::licensing {

inline constexpr int kGraceDays = 90;
inline constexpr int kExpiringDays = 60;
inline constexpr int kMailDays = 15;
inline constexpr int kCheckInterval = 30;

enum class State { kNotActivated, kActive, kExpiring, kGrace, kExpired };
const char* state_name(State s);  // "not activated", "active", "expiring", "grace", "expired"

struct Status {
  State state = State::kNotActivated;
  Day expires = 0;            // D (valid unless not activated)
  Day grace_end = 0;          // D + 90: the first day after grace
  int64_t days_left = 0;      // D - today (negative once D has passed)
  int64_t grace_left = 0;     // grace_end - today (days of grace left; <= 0 when expired)
};

Status evaluate(std::optional<Day> expires, Day today);
// Component (pattern) updates are allowed: activated and not past grace.
bool updates_allowed(const Status& s);

// The dashboard notice shown from D-60 until renewed, or "" (not suppressible).
std::string expiry_notice(LicenseKind k, const Status& s);
// "<license> is not activated. Activate it to use this feature." ("" when activated).
std::string not_activated_notice(LicenseKind k, const Status& s);

struct AdminMail {
  std::string subject;
  std::string body;
};
// The mail due on `today` (sent at 00:00): D-15 .. D-1 and D .. D+89 (the last day of grace).
std::optional<AdminMail> daily_mail(LicenseKind k, const Status& s);

// Seed 004's check schedule: D + 30k for every k up to D+90 (before D too: D-30, D-60, ...),
// D-1, and every day from D+90 on.
bool is_check_day(Day expires, Day d);
// The first check day strictly after `after`.
Day next_check_day(Day expires, Day after);
// The check days in [from, to].
std::vector<Day> check_days(Day expires, Day from, Day to);

// The latest wall time seen; a clock below it is "gone back" and the latest is used instead.
class ClockGuard {
 public:
  explicit ClockGuard(int64_t latest = 0) : latest_(latest) {}
  // The time to evaluate with; went_back is set when `now` is below the latest seen.
  int64_t observe(int64_t now, bool& went_back);
  int64_t latest() const { return latest_; }

 private:
  int64_t latest_;
};

}  // namespace postern::licensing
