// snapshot.h — an immutable value published by one thread and read by many.
//
// Everything that reloads (TLS contexts, config, later licenses and patterns) is published as a
// Snapshot: a writer builds a complete new value and stores it atomically; readers load the
// current shared_ptr and keep it as long as they need it. Readers never see a half-built value,
// and an old value dies with its last user.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace postern {

template <typename T>
class Snapshot {
 public:
  Snapshot() = default;
  explicit Snapshot(std::shared_ptr<const T> initial) : cur_(std::move(initial)) {}

  std::shared_ptr<const T> load() const { return cur_.load(std::memory_order_acquire); }

  void publish(std::shared_ptr<const T> next) {
    cur_.store(std::move(next), std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }

  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::shared_ptr<const T>> cur_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace postern
