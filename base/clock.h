// clock.h — the one source of time for logic with deadlines (retry schedules, queue lifetime,
// delay warnings, DSN dates, queue IDs; later certificate expiry, licensing, pattern schedules,
// console tickets). Such code takes a `const Clock&` (the mta::Runtime carries the daemon's) and
// never reads std::chrono clocks or time() itself, so unit tests drive it with a FakeClock and
// end-to-end tests move the daemon's time with `posternd --test-clock FILE`.
//
// Three implementations:
//   RealClock       system_clock and steady_clock as they are.
//   FakeClock       unit tests: time moves only when the test says so.
//   OffsetFileClock `posternd --test-clock FILE` only (never a config key): real time plus an
//                   offset read from FILE, re-read at most every 100 ms when time is asked.
//
// What the offset does NOT move: libuv timers (uv_now, uv_timer_*), socket timeouts and other
// waits measured by the kernel. Code with deadlines must therefore re-check its due times
// against the Clock from a periodic tick (the scheduler does, every second) instead of
// arming a libuv timer for "due in N hours".
//
// Security-sensitive: OffsetFileClock lets whoever can write FILE move the daemon's notion of
// time; it exists for tests, is only enabled from the command line, logs a warning at start
// and on every change, and ignores a FILE that others may write.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace postern {

class Clock {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  using SteadyTime = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  // Calendar time: what goes into envelopes, DSN dates and persisted schedules.
  virtual WallTime wall() const = 0;
  // Monotonic time: for durations measured within one run of the process.
  virtual SteadyTime steady() const = 0;

  int64_t unix_seconds() const;
  int64_t unix_micros() const;
};

class RealClock final : public Clock {
 public:
  WallTime wall() const override { return std::chrono::system_clock::now(); }
  SteadyTime steady() const override { return std::chrono::steady_clock::now(); }
};

// The process-wide real clock (the default wherever no other is injected).
const Clock& real_clock();

// For unit tests: starts at `start_unix` (wall) and a fixed steady origin; both move together
// with advance(); set_wall() steps only the calendar (like an NTP step). Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_unix = 1'800'000'000);
  WallTime wall() const override;
  SteadyTime steady() const override;
  void advance(std::chrono::nanoseconds d);
  void set_wall(int64_t unix_seconds);

 private:
  std::atomic<int64_t> wall_ns_;
  std::atomic<int64_t> steady_ns_{0};
};

// posternd --test-clock FILE. FILE holds one offset: an optional sign and a duration as the
// config writes them ("3600", "90s", "-2h", "6d"; a bare number is seconds). A missing or empty
// file means 0; a malformed one keeps the last good offset (logged once per change of FILE).
// Wall time is real time + offset. Steady time is real steady time + the largest offset seen so
// far, so it never runs backwards when the offset is lowered.
class OffsetFileClock final : public Clock {
 public:
  explicit OffsetFileClock(std::string path, std::chrono::milliseconds recheck = std::chrono::milliseconds(100));
  WallTime wall() const override;
  SteadyTime steady() const override;
  // The current offset (re-reading FILE if `recheck` has passed since the last look).
  std::chrono::nanoseconds offset() const;
  // Reads FILE now (start-up; tests).
  void reload() const;
  const std::string& path() const { return path_; }

  static std::optional<std::chrono::nanoseconds> parse_offset(std::string_view text);

 private:
  void maybe_reload() const;

  std::string path_;
  std::chrono::nanoseconds recheck_;
  mutable std::atomic<int64_t> offset_ns_{0};
  mutable std::atomic<int64_t> max_offset_ns_{0};
  mutable std::atomic<int64_t> next_check_ns_{0};  // real steady time of the next look at FILE
  mutable std::mutex mu_;                          // one reader of FILE at a time
  mutable std::string last_text_;                  // under mu_: what FILE held at the last look
};

}  // namespace postern
