// scan_wait.h — the session side of a scan in flight: its deadline and its ticket. Pure (the
// driver gives the time, from the injected clock); unit-tested.
//
// Security-sensitive: a verdict is taken only for the scan it belongs to, once. A scan that
// misses its deadline is answered by scan.failure_action, and its late verdict (the scan thread
// still finishes: libclamav cannot be interrupted) is refused, even when the session has a newer
// message waiting for its own verdict by then: the ticket says which scan a verdict is for.
#pragma once

#include <chrono>
#include <cstdint>

#include "base/clock.h"

namespace postern::mta {

class ScanWait {
 public:
  // What libclamav's own limit (scan.timeout) may overrun by, and a scan's wait in the queue.
  static constexpr std::chrono::seconds kMargin{5};

  // A scan was handed to the pool: the ticket its verdict must show. Waiting until then.
  uint64_t begin(Clock::SteadyTime now, std::chrono::milliseconds timeout) {
    deadline_ = now + timeout + kMargin;
    waiting_ = true;
    return ++ticket_;
  }
  bool waiting() const { return waiting_; }
  Clock::SteadyTime deadline() const { return deadline_; }
  // The verdict with this ticket arrived: true = it is the one waited for (taken; waiting ends).
  bool take(uint64_t ticket) {
    if (!waiting_ || ticket != ticket_) return false;
    waiting_ = false;
    return true;
  }
  // true (once) when the deadline has passed with no verdict: waiting ends, the verdict to come
  // will be refused by take().
  bool expire(Clock::SteadyTime now) {
    if (!waiting_ || now < deadline_) return false;
    waiting_ = false;
    return true;
  }
  // The session no longer waits (the client left, the message was refused).
  void cancel() { waiting_ = false; }

 private:
  Clock::SteadyTime deadline_{};
  uint64_t ticket_ = 0;
  bool waiting_ = false;
};

}  // namespace postern::mta
