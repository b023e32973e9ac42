// license_state.cpp — see license_state.h.
#include "licensing/license_state.h"

namespace postern::licensing {
namespace {
std::string days(int64_t n) { return std::to_string(n) + (n == 1 ? " day" : " days"); }
int64_t mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }
}  // namespace

const char* state_name(State s) {
  switch (s) {
    case State::kNotActivated: return "not activated";
    case State::kActive: return "active";
    case State::kExpiring: return "expiring";
    case State::kGrace: return "grace";
    case State::kExpired: return "expired";
  }
  return "?";
}

Status evaluate(std::optional<Day> expires, Day today) {
  Status s;
  if (!expires) return s;
  s.expires = *expires;
  s.grace_end = *expires + kGraceDays;
  s.days_left = *expires - today;
  s.grace_left = s.grace_end - today;
  if (today >= s.grace_end) s.state = State::kExpired;
  else if (today >= *expires) s.state = State::kGrace;
  else if (s.days_left <= kExpiringDays) s.state = State::kExpiring;
  else s.state = State::kActive;
  return s;
}

bool updates_allowed(const Status& s) { return s.state != State::kNotActivated && s.state != State::kExpired; }

std::string expiry_notice(LicenseKind k, const Status& s) {
  std::string name = display_name(k);
  switch (s.state) {
    case State::kExpiring:
      return "The support contract for " + name + " ends in " + days(s.days_left) +
             ". Renew the contract to stay protected and keep the product components up to date.";
    case State::kGrace:
      return "The support contract for " + name + " ended on " + format_date(s.expires) +
             ". The renewal grace period after the end of the contract has " + days(s.grace_left) +
             " left. Renew the contract to keep your security up to date.";
    case State::kExpired:
      return "Product updates for " + name + " ended on " + format_date(s.grace_end) +
             ". The support contract ended on " + format_date(s.expires) + " and the renewal grace period ended on " +
             format_date(s.grace_end) + ". Renew the contract to stay protected and keep the product components up to date.";
    default: return "";
  }
}

std::string not_activated_notice(LicenseKind k, const Status& s) {
  if (s.state != State::kNotActivated) return "";
  return std::string(display_name(k)) + " is not activated. Activate it to use this feature.";
}

std::optional<AdminMail> daily_mail(LicenseKind k, const Status& s) {
  if (s.state == State::kNotActivated) return std::nullopt;
  std::string name = display_name(k);
  if (s.days_left >= 1 && s.days_left <= kMailDays) {
    std::string t = "The license for " + name + " expires in " + days(s.days_left) + ".";
    return AdminMail{t, t};
  }
  if (s.state == State::kGrace) {
    std::string t = "The license for " + name + " expired " + days(-s.days_left) + " ago.";
    return AdminMail{t, t + "\nThe license is in its renewal grace period, which ends in " + days(s.grace_left) + "."};
  }
  return std::nullopt;
}

bool is_check_day(Day d0, Day d) {
  if (d == d0 - 1 || d >= d0 + kGraceDays) return true;
  return mod(d - d0, kCheckInterval) == 0;
}

Day next_check_day(Day d0, Day after) {
  for (Day d = after + 1;; ++d)  // at most 30 steps
    if (is_check_day(d0, d)) return d;
}

std::vector<Day> check_days(Day d0, Day from, Day to) {
  std::vector<Day> out;
  for (Day d = from; d <= to; ++d)
    if (is_check_day(d0, d)) out.push_back(d);
  return out;
}

int64_t ClockGuard::observe(int64_t now, bool& went_back) {
  went_back = now < latest_;
  if (!went_back) latest_ = now;
  return latest_;
}

}  // namespace postern::licensing
