// worker.h — one event-loop thread: its own uv_loop_t, its own SO_REUSEPORT listeners and the
// sessions they accept. Nothing on a worker blocks on anything but its own sockets; the only
// cross-thread entry is post(), through a uv_async_t.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mta/delivery/delivery_job.h"
#include "mta/dns/resolver.h"
#include "mta/runtime.h"
#include "tls/acceptor.h"

namespace postern::mta {

class InboundConnection;
}  // namespace postern::mta
namespace postern::delivery {
class OutboundConnection;
}
namespace postern::mta {

class Worker {
 public:
  Worker(Runtime& rt, unsigned index);
  ~Worker();
  // Binds the listeners (throws std::runtime_error naming the address on failure).
  void bind(const std::vector<ListenAddr>& addrs);
  void start();
  // Thread-safe: runs fn on this worker's loop.
  void post(std::function<void()> fn);
  // Thread-safe: stop accepting, tell sessions to finish, force-close after the deadline.
  void drain(std::chrono::milliseconds deadline);
  void join();

  Runtime& runtime() { return rt_; }
  bool finished() const { return finished_flag_.load(); }
  unsigned index() const { return index_; }
  uv_loop_t* loop() { return &loop_; }
  uint64_t register_conn(InboundConnection* c);
  void unregister_conn(uint64_t id);
  InboundConnection* find_conn(uint64_t id);
  // Outbound delivery on this loop.
  void deliver(delivery::DeliveryJob job, std::function<void(delivery::JobResult)> done);
  dns::Resolver& resolver();
  void outbound_started(delivery::OutboundConnection* c) { outbound_.insert(c); }
  void outbound_finished(delivery::OutboundConnection* c);
  // The connection cache: open connections waiting for the next job to their destination.
  void park(const std::string& dest, delivery::OutboundConnection* c) { idle_.emplace(dest, c); }
  void unpark(delivery::OutboundConnection* c);
  bool draining() const { return draining_; }
  // Spool commits in flight: the loop stays up until every one has answered.
  void commit_started() { ++pending_commits_; }
  void commit_answered();

 private:
  static void on_async(uv_async_t* a);
  void begin_drain(std::chrono::milliseconds deadline);
  void maybe_finish();

  Runtime& rt_;
  unsigned index_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_timer_t drain_timer_{};
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_;
  std::vector<std::unique_ptr<tls::Acceptor>> listeners_;
  std::unordered_map<uint64_t, InboundConnection*> conns_;
  uint64_t pending_commits_ = 0;
  std::unique_ptr<dns::Resolver> resolver_;
  std::unordered_set<delivery::OutboundConnection*> outbound_;
  std::unordered_multimap<std::string, delivery::OutboundConnection*> idle_;
  bool draining_ = false;
  bool finished_ = false;
  std::atomic<bool> finished_flag_{false};
  std::thread thread_;
};

}  // namespace postern::mta
