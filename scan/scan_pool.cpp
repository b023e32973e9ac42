// scan_pool.cpp — see scan_pool.h. The bound is checked under the same lock the threads take.
#include "scan/scan_pool.h"

namespace postern::scan {

ScanPool::ScanPool(unsigned threads, size_t max_queued) : max_(max_queued) {
  for (unsigned i = 0; i < std::max(1u, threads); ++i) threads_.emplace_back([this] { run(); });
}

ScanPool::~ScanPool() { stop(); }

bool ScanPool::submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_ || q_.size() >= max_) return false;
    q_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void ScanPool::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_ && threads_.empty()) return;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

size_t ScanPool::queued() const {
  std::lock_guard<std::mutex> lk(mu_);
  return q_.size();
}

size_t ScanPool::running() const {
  std::lock_guard<std::mutex> lk(mu_);
  return running_;
}

void ScanPool::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;  // stopping, and everything queued has run
      task = std::move(q_.front());
      q_.pop_front();
      ++running_;
    }
    task();
    std::lock_guard<std::mutex> lk(mu_);
    --running_;
  }
}

}  // namespace postern::scan
