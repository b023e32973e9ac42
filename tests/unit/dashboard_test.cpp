// dashboard_test.cpp — the throughput ring behind GET /api/v1/stats/throughput.
#include <gtest/gtest.h>

#include "admin/dashboard_api.h"

using postern::admin::Throughput;

TEST(Throughput, PerMinuteDeltasOverTheLastHour) {
  Throughput t;
  int64_t t0 = 1'800'000'000 / 60 * 60;  // a minute boundary
  t.sample(t0, {10, 5, 1, 0, 0});        // the first sample is the base: nothing counted
  t.sample(t0 + 1, {12, 5, 1, 0, 0});
  t.sample(t0 + 30, {13, 7, 1, 1, 2});
  t.sample(t0 + 61, {14, 7, 3, 1, 2});
  auto j = t.to_json(t0 + 61);
  ASSERT_EQ(j["minutes"].size(), 60u);
  auto& last = j["minutes"][59];
  auto& prev = j["minutes"][58];
  EXPECT_EQ(last["t"], t0 + 60);
  EXPECT_EQ(prev["t"], t0);
  EXPECT_EQ(prev["in"], 3);
  EXPECT_EQ(prev["delivered"], 2);
  EXPECT_EQ(prev["bounced"], 1);
  EXPECT_EQ(prev["rejected"], 2);
  EXPECT_EQ(last["in"], 1);
  EXPECT_EQ(last["deferred"], 2);
  EXPECT_EQ(j["totals"]["in"], 4);
  EXPECT_EQ(j["minutes"][0]["in"], 0);
  // An hour later the minute has left the window.
  t.sample(t0 + 3600, {14, 7, 3, 1, 2});
  auto k = t.to_json(t0 + 3600);
  EXPECT_EQ(k["totals"]["in"], 1);  // minute t0+60 is still inside (t0+60 .. t0+3600)
  auto l = t.to_json(t0 + 3660);
  EXPECT_EQ(l["totals"]["in"], 0);
}

TEST(Throughput, ClockJumpsLeaveNoStaleMinutes) {
  Throughput t;
  int64_t t0 = 1'800'000'000 / 60 * 60;
  t.sample(t0, {0, 0, 0, 0, 0});
  t.sample(t0 + 5, {3, 0, 0, 0, 0});
  // Three days later (the test clock): same ring slot, another minute: nothing old shows.
  int64_t later = t0 + 3 * 86400;
  t.sample(later, {3, 0, 0, 0, 0});
  auto j = t.to_json(later);
  EXPECT_EQ(j["totals"]["in"], 0);
  t.sample(later + 1, {5, 1, 0, 0, 0});
  EXPECT_EQ(t.to_json(later + 1)["totals"]["in"], 2);
  // A counter that reads lower (never expected) adds nothing rather than wrapping.
  t.sample(later + 2, {4, 1, 0, 0, 0});
  EXPECT_EQ(t.to_json(later + 2)["totals"]["in"], 2);
}
