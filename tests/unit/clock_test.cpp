// clock_test.cpp — the injected clock: the fake for unit tests and the --test-clock file clock.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/clock.h"

using namespace postern;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {
std::string tmpfile_path() {
  auto p = fs::temp_directory_path() / ("postern-clock-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove(p);
  return p.string();
}
void write(const std::string& path, const std::string& text) {
  std::ofstream(path + ".tmp", std::ios::trunc) << text;
  fs::rename(path + ".tmp", path);  // as a test would: never a half-written file
}
int64_t real_unix() { return real_clock().unix_seconds(); }
}  // namespace

TEST(Clock, FakeClockMovesOnlyWhenTold) {
  FakeClock c(1'800'000'000);
  EXPECT_EQ(c.unix_seconds(), 1'800'000'000);
  auto s0 = c.steady();
  c.advance(90s);
  EXPECT_EQ(c.unix_seconds(), 1'800'000'090);
  EXPECT_EQ(c.steady() - s0, 90s);
  c.set_wall(1'700'000'000);  // a step of the calendar only
  EXPECT_EQ(c.unix_seconds(), 1'700'000'000);
  EXPECT_EQ(c.steady() - s0, 90s);
  EXPECT_EQ(c.unix_micros(), 1'700'000'000'000'000);
}

TEST(Clock, OffsetsAreSecondsOrDurationsWithASign) {
  using O = OffsetFileClock;
  EXPECT_EQ(O::parse_offset(""), 0ns);
  EXPECT_EQ(O::parse_offset("  \n"), 0ns);
  EXPECT_EQ(O::parse_offset("3600\n"), 3600s);
  EXPECT_EQ(O::parse_offset("+90s"), 90s);
  EXPECT_EQ(O::parse_offset("-2h"), -2h);
  EXPECT_EQ(O::parse_offset("6d"), 6 * 24h);
  EXPECT_FALSE(O::parse_offset("soon"));
  EXPECT_FALSE(O::parse_offset("1.5"));
  EXPECT_FALSE(O::parse_offset("--5"));
  EXPECT_FALSE(O::parse_offset("99999999d"));
}

TEST(Clock, FileClockFollowsTheFile) {
  auto path = tmpfile_path();
  OffsetFileClock c(path, 0ms);  // look at the file on every call
  EXPECT_EQ(c.offset(), 0ns);     // no file yet: real time
  EXPECT_LE(std::abs(c.unix_seconds() - real_unix()), 2);
  auto s0 = c.steady();
  write(path, "86400\n");
  EXPECT_EQ(c.offset(), 86400s);
  EXPECT_LE(std::abs(c.unix_seconds() - (real_unix() + 86400)), 2);
  EXPECT_GE(c.steady() - s0, 86400s);
  write(path, "not a number");  // malformed: the last good offset stays
  EXPECT_EQ(c.offset(), 86400s);
  write(path, "-60");
  EXPECT_EQ(c.offset(), -60s);
  EXPECT_LE(std::abs(c.unix_seconds() - (real_unix() - 60)), 2);
  EXPECT_GE(c.steady() - s0, 86400s);  // steady time never runs backwards
  write(path, "100");
  ::chmod(path.c_str(), 0666);  // anyone could move the clock: refused
  EXPECT_EQ(c.offset(), -60s);
  fs::remove(path);
  EXPECT_EQ(c.offset(), 0ns);  // gone: back to real time
}

TEST(Clock, FileIsReadAtMostOncePerRecheck) {
  auto path = tmpfile_path();
  write(path, "10");
  OffsetFileClock c(path, std::chrono::hours(1));
  EXPECT_EQ(c.offset(), 10s);  // read at construction
  write(path, "20");
  EXPECT_EQ(c.offset(), 10s);  // not looked at again within the hour
  c.reload();
  EXPECT_EQ(c.offset(), 20s);
  fs::remove(path);
}
