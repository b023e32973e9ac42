#include "mta/worker.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>

#include "mta/delivery/outbound_connection.h"
#include "mta/server/inbound_connection.h"

namespace postern::mta {

bool IpLimiter::acquire(const std::string& ip, uint32_t max) {
  std::lock_guard lk(mu_);
  auto& n = n_[ip];
  if (n >= max) return false;
  ++n;
  return true;
}

void IpLimiter::release(const std::string& ip) {
  std::lock_guard lk(mu_);
  auto it = n_.find(ip);
  if (it != n_.end() && --it->second == 0) n_.erase(it);
}

Worker::Worker(Runtime& rt, unsigned index) : rt_(rt), index_(index) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, on_async);
  async_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
}

Worker::~Worker() {
  join();
  uv_loop_close(&loop_);
}

void Worker::bind(const std::vector<ListenAddr>& addrs) {
  for (auto& a : addrs) {
    auto l = std::make_unique<tls::Acceptor>(&loop_, "smtp worker=" + std::to_string(index_), [this](int fd) {
      if (draining_) {
        ::close(fd);
        return;
      }
      InboundConnection::accept(*this, fd);
    });
    l->count_pauses_in(&rt_.counters.accept_paused);
    l->listen(a.host, a.port, true);
    listeners_.push_back(std::move(l));
  }
}

void Worker::start() {
  thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::post(std::function<void()> fn) {
  {
    std::lock_guard lk(mu_);
    tasks_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
}

void Worker::on_async(uv_async_t* a) {
  auto* w = static_cast<Worker*>(a->data);
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lk(w->mu_);
    tasks.swap(w->tasks_);
  }
  for (auto& t : tasks) t();
}

uint64_t Worker::register_conn(InboundConnection* c) {
  static std::atomic<uint64_t> next{1};  // unique across workers, so logs can key on it
  uint64_t id = next.fetch_add(1);
  conns_[id] = c;
  return id;
}

void Worker::unregister_conn(uint64_t id) {
  conns_.erase(id);
  if (draining_) maybe_finish();
}

InboundConnection* Worker::find_conn(uint64_t id) {
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second;
}

void Worker::drain(std::chrono::milliseconds deadline) {
  post([this, deadline] { begin_drain(deadline); });
}

void Worker::begin_drain(std::chrono::milliseconds deadline) {
  if (draining_) return;
  draining_ = true;
  for (auto& l : listeners_) {
    auto* raw = l.release();
    raw->close([raw] { delete raw; });
  }
  listeners_.clear();
  std::vector<InboundConnection*> all;
  for (auto& [id, c] : conns_) all.push_back(c);
  for (auto* c : all) c->drain();
  verifier_.close();  // sessions waiting for a verification get the unreachable answer
  std::vector<delivery::OutboundConnection*> cached;
  for (auto& [dest, c] : idle_) cached.push_back(c);
  for (auto* c : cached) c->abort();  // idle cached connections: close now
  uv_timer_start(&drain_timer_, [](uv_timer_t* t) {
    auto* w = static_cast<Worker*>(t->data);
    std::vector<InboundConnection*> left;
    for (auto& [id, c] : w->conns_) left.push_back(c);
    if (!left.empty()) spdlog::warn("worker={} drain deadline: closing {} sessions", w->index_, left.size());
    for (auto* c : left) c->force_close();
    std::vector<delivery::OutboundConnection*> out(w->outbound_.begin(), w->outbound_.end());
    for (auto* o : out) o->abort();
    if (!w->conns_.empty()) uv_timer_start(t, t->timer_cb, 100, 0);  // commits still answering
  }, static_cast<uint64_t>(deadline.count()), 0);
  maybe_finish();
}

void Worker::deliver(delivery::DeliveryJob job, std::function<void(delivery::JobResult)> done) {
  auto j = std::make_shared<delivery::DeliveryJob>(std::move(job));
  post([this, j, done = std::move(done)]() mutable {
    if (draining_) return;  // the scheduler is stopping too; the messages stay queued
    if (take_parked(*j, done)) return;
    delivery::OutboundConnection::start(*this, std::move(*j), std::move(done));
  });
}

bool Worker::take_parked(delivery::DeliveryJob& job, std::function<void(delivery::JobResult)>& done) {
  auto it = idle_.find(job.dest);
  if (it == idle_.end()) return false;
  auto* c = it->second;
  idle_.erase(it);
  c->take_job(std::move(job), std::move(done));
  return true;
}

smtp::RcptCheck Worker::verify_recipient(const std::string& address, uint64_t conn_id) {
  return verifier_.check(address, conn_id);
}

dns::Resolver& Worker::resolver() {
  if (!resolver_) {
    resolver_ = std::make_unique<dns::Resolver>(&loop_, rt_.config.load()->outbound.dns_servers);
    if (!resolver_->init_error().empty()) spdlog::error("worker={} DNS: {}", index_, resolver_->init_error());
  }
  return *resolver_;
}

void Worker::unpark(delivery::OutboundConnection* c) {
  for (auto it = idle_.begin(); it != idle_.end(); ++it)
    if (it->second == c) {
      idle_.erase(it);
      return;
    }
}

void Worker::outbound_finished(delivery::OutboundConnection* c) {
  outbound_.erase(c);
  if (draining_) maybe_finish();
}

void Worker::commit_answered() {
  --pending_commits_;
  if (draining_) maybe_finish();
}

void Worker::maybe_finish() {
  if (finished_ || !conns_.empty() || pending_commits_ > 0 || !outbound_.empty()) return;
  finished_ = true;
  finished_flag_ = true;
  if (resolver_) resolver_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

}  // namespace postern::mta
