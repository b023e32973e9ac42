// scan_pool.h — the scan threads: a fixed number of threads and a bounded queue of tasks.
//
// Security-sensitive: the queue never grows past its bound (a message flood cannot make it
// unbounded): submit() says false when it is full or the pool is stopping, and the caller answers
// with scan.failure_action. Tasks are run on the pool's threads only, never on a loop thread; a
// task posts its result back to its loop itself (ConnectionHost::post).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace postern::scan {

class ScanPool {
 public:
  ScanPool(unsigned threads, size_t max_queued);
  ~ScanPool();  // stop()
  ScanPool(const ScanPool&) = delete;
  ScanPool& operator=(const ScanPool&) = delete;

  // false: the queue holds max_queued tasks already, or the pool is stopping (the task is not
  // run: the caller answers for it).
  bool submit(std::function<void()> task);
  // Runs what is queued, then joins the threads. Later submits are refused.
  void stop();
  size_t queued() const;
  size_t running() const;

 private:
  void run();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  size_t max_;
  size_t running_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace postern::scan
