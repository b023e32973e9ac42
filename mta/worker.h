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
#include "mta/delivery/recipient_verifier.h"
#include "mta/dns/resolver.h"
#include "mta/connection_host.h"
#include "mta/runtime.h"
#include "tls/acceptor.h"

namespace postern::mta {

class Worker final : public ConnectionHost {
 public:
  Worker(Runtime& rt, unsigned index);
  ~Worker() override;
  // Binds the listeners (throws std::runtime_error naming the address on failure).
  void bind(const std::vector<ListenAddr>& addrs);
  void start();
  // Thread-safe: stop accepting, tell sessions to finish, force-close after the deadline.
  void drain(std::chrono::milliseconds deadline);
  void join();
  bool finished() const { return finished_flag_.load(); }
  // Outbound delivery on this loop.
  void deliver(delivery::DeliveryJob job, std::function<void(delivery::JobResult)> done);

  // ConnectionHost
  uv_loop_t* loop() override { return &loop_; }
  Runtime& runtime() override { return rt_; }
  unsigned index() const override { return index_; }
  void post(std::function<void()> fn) override;  // thread-safe
  bool draining() const override { return draining_; }
  uint64_t register_conn(InboundConnection* c) override;
  void unregister_conn(uint64_t id) override;
  InboundConnection* find_conn(uint64_t id) override;
  void commit_started() override { ++pending_commits_; }
  void commit_answered() override;
  dns::Resolver& resolver() override;
  void outbound_started(delivery::OutboundConnection* c) override { outbound_.insert(c); }
  void outbound_finished(delivery::OutboundConnection* c) override;
  void park(const std::string& dest, delivery::OutboundConnection* c) override { idle_.emplace(dest, c); }
  void unpark(delivery::OutboundConnection* c) override;
  bool take_parked(delivery::DeliveryJob& job, std::function<void(delivery::JobResult)>& done) override;
  smtp::RcptCheck verify_recipient(const std::string& address, uint64_t conn_id) override;

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
  delivery::RecipientVerifier verifier_{*this};
  bool draining_ = false;
  bool finished_ = false;
  std::atomic<bool> finished_flag_{false};
  std::thread thread_;
};

}  // namespace postern::mta
