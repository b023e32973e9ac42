// licensing_state_test.cpp — states, notices, mails and the check schedule of seed 004, driven
// by dates (the clock is an argument), with D = 2020-01-31 as in the seed.
#include <gtest/gtest.h>

#include "licensing/calendar.h"
#include "licensing/license_state.h"
#include "licensing/licenses.h"

using namespace postern::licensing;

namespace {
Day day(const char* s) { return *parse_date(s); }
const Day D = day("2020-01-31");
}  // namespace

TEST(LicensingCalendar, DatesAndZones) {
  EXPECT_EQ(format_date(D), "2020-01-31");
  EXPECT_EQ(format_date(D + 90), "2020-04-30");
  EXPECT_FALSE(parse_date("2020-02-30"));
  EXPECT_FALSE(parse_date("2020-1-31"));
  EXPECT_FALSE(parse_date("2020-01-31x"));
  auto jst = TimeZone::parse("+09:00");
  ASSERT_TRUE(jst);
  // 2020-01-30 15:00 UTC is 2020-01-31 00:00 in Japan.
  int64_t t = jst->midnight(D);
  EXPECT_EQ(t, D * 86400 - 9 * 3600);
  EXPECT_EQ(jst->day_of(t), D);
  EXPECT_EQ(jst->day_of(t - 1), D - 1);
  EXPECT_EQ(TimeZone::parse("UTC")->day_of(t), D - 1);
  EXPECT_EQ(TimeZone::parse("-05:30")->offset_seconds, -(5 * 3600 + 30 * 60));
  EXPECT_FALSE(TimeZone::parse("Asia/Tokyo"));
  EXPECT_FALSE(TimeZone::parse("+15:00"));
  EXPECT_FALSE(TimeZone::parse("+9:00"));
}

TEST(LicensingState, StateAndNoticeAtTheSeedsDates) {
  struct Case {
    int offset;
    State state;
    const char* notice;
  } cases[] = {
      {-61, State::kActive, ""},
      {-60, State::kExpiring,
       "The support contract for Antivirus and content filter ends in 60 days. Renew the contract to stay protected "
       "and keep the product components up to date."},
      {-15, State::kExpiring,
       "The support contract for Antivirus and content filter ends in 15 days. Renew the contract to stay protected "
       "and keep the product components up to date."},
      {-1, State::kExpiring,
       "The support contract for Antivirus and content filter ends in 1 day. Renew the contract to stay protected "
       "and keep the product components up to date."},
      {0, State::kGrace,
       "The support contract for Antivirus and content filter ended on 2020-01-31. The renewal grace period after "
       "the end of the contract has 90 days left. Renew the contract to keep your security up to date."},
      {89, State::kGrace,
       "The support contract for Antivirus and content filter ended on 2020-01-31. The renewal grace period after "
       "the end of the contract has 1 day left. Renew the contract to keep your security up to date."},
      {90, State::kExpired,
       "Product updates for Antivirus and content filter ended on 2020-04-30. The support contract ended on "
       "2020-01-31 and the renewal grace period ended on 2020-04-30. Renew the contract to stay protected and keep "
       "the product components up to date."},
      {91, State::kExpired,
       "Product updates for Antivirus and content filter ended on 2020-04-30. The support contract ended on "
       "2020-01-31 and the renewal grace period ended on 2020-04-30. Renew the contract to stay protected and keep "
       "the product components up to date."},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.offset);
    Status s = evaluate(D, D + c.offset);
    EXPECT_EQ(s.state, c.state);
    EXPECT_EQ(expiry_notice(LicenseKind::kAntivirus, s), c.notice);
    EXPECT_EQ(updates_allowed(s), c.offset < 90);
  }
  EXPECT_EQ(evaluate(std::nullopt, D).state, State::kNotActivated);
  EXPECT_EQ(state_name(State::kGrace), std::string("grace"));
}

TEST(LicensingState, DailyMailFromDMinus15ThroughTheLastDayOfGrace) {
  auto k = LicenseKind::kAntispam;
  EXPECT_FALSE(daily_mail(k, evaluate(D, D - 16)));
  auto m = daily_mail(k, evaluate(D, D - 15));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->subject, "The license for Antispam (content scanning) expires in 15 days.");
  EXPECT_EQ(m->body, m->subject);
  m = daily_mail(k, evaluate(D, D - 1));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->subject, "The license for Antispam (content scanning) expires in 1 day.");
  m = daily_mail(k, evaluate(D, D + 10));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->subject, "The license for Antispam (content scanning) expired 10 days ago.");
  EXPECT_EQ(m->body, "The license for Antispam (content scanning) expired 10 days ago.\n"
                     "The license is in its renewal grace period, which ends in 80 days.");
  m = daily_mail(k, evaluate(D, D + 89));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body, "The license for Antispam (content scanning) expired 89 days ago.\n"
                     "The license is in its renewal grace period, which ends in 1 day.");
  EXPECT_FALSE(daily_mail(k, evaluate(D, D + 90)));
  EXPECT_FALSE(daily_mail(k, evaluate(std::nullopt, D)));
}

TEST(LicensingSchedule, MatchesSeed004) {
  std::vector<std::string> got;
  for (Day d : check_days(D, day("2019-08-15"), day("2020-05-02"))) got.push_back(format_date(d));
  std::vector<std::string> want = {"2019-09-03", "2019-10-03", "2019-11-02", "2019-12-02", "2020-01-01", "2020-01-30",
                                   "2020-01-31", "2020-03-01", "2020-03-31", "2020-04-30", "2020-05-01", "2020-05-02"};
  EXPECT_EQ(got, want);
  EXPECT_EQ(format_date(next_check_day(D, day("2020-01-01"))), "2020-01-30");
  EXPECT_EQ(format_date(next_check_day(D, day("2020-01-30"))), "2020-01-31");
  EXPECT_EQ(format_date(next_check_day(D, day("2020-02-10"))), "2020-03-01");
  EXPECT_EQ(format_date(next_check_day(D, day("2020-04-30"))), "2020-05-01");
  EXPECT_EQ(format_date(next_check_day(D, day("2021-01-01"))), "2021-01-02");  // daily until renewed
}

TEST(LicensingState, ClockGoingBackDoesNotExtend) {
  ClockGuard g;
  bool back = false;
  int64_t late = TimeZone{}.midnight(D + 91);
  EXPECT_EQ(g.observe(late, back), late);
  EXPECT_FALSE(back);
  EXPECT_EQ(g.observe(late - 200 * 86400, back), late);  // someone set the clock back 200 days
  EXPECT_TRUE(back);
  EXPECT_EQ(evaluate(D, TimeZone{}.day_of(g.latest())).state, State::kExpired);
}

TEST(LicensingSnapshot, AntispamServesReputationAndOptionalNoticesHide) {
  LicenseRecord r;
  r.kind = LicenseKind::kAntispam;
  r.expires = D;
  std::map<LicenseKind, LicenseRecord> recs{{LicenseKind::kAntispam, r}};
  auto now = TimeZone{}.midnight(D - 100);
  auto l = evaluate_all(recs, now, TimeZone{}, false);
  EXPECT_EQ(l.get(LicenseKind::kReputation).status.state, State::kActive);
  EXPECT_EQ(l.get(LicenseKind::kAntispam).status.state, State::kActive);
  EXPECT_FALSE(l.scanning_allowed(LicenseKind::kAntivirus));
  EXPECT_EQ(l.get(LicenseKind::kDlp).notice,
            "Regulatory compliance (DLP) is not activated. Activate it to use this feature.");
  EXPECT_EQ(l.get(LicenseKind::kEncryption).notice,
            "Email encryption is not activated. Activate it to use this feature.");
  auto hidden = evaluate_all(recs, now, TimeZone{}, true);
  EXPECT_EQ(hidden.get(LicenseKind::kDlp).notice, "");
  EXPECT_EQ(hidden.get(LicenseKind::kPrefilter).notice, "");
  // Required licenses' notices are never hidden.
  EXPECT_EQ(hidden.get(LicenseKind::kAntivirus).notice,
            "Antivirus and content filter is not activated. Activate it to use this feature.");
  auto late = evaluate_all(recs, TimeZone{}.midnight(D + 95), TimeZone{}, true);
  EXPECT_FALSE(late.updates_allowed(LicenseKind::kReputation));
  EXPECT_TRUE(late.scanning_allowed(LicenseKind::kReputation));
}
