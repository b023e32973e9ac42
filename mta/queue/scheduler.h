// scheduler.h — the queue manager. Runs on the control loop. Knows every queued message and the
// state of each recipient; groups pending recipients by destination (static route or MX domain,
// with its TLS policy), keeps per-destination and global connection limits, hands workers
// DeliveryJobs of several messages (connection reuse), applies the results: delivered recipients
// are done, 4xx/connection trouble retries on a backoff schedule, 5xx and expiry bounce (RFC 3464
// DSN, never to the null sender). Every change of a recipient's state is written to the spool
// before the message is retried or removed, so a restart neither loses nor re-sends.
#pragma once

#include <uv.h>

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mta/delivery/delivery_job.h"
#include "mta/queue/dsn.h"
#include "mta/runtime.h"

namespace postern::mta {

class Worker;

struct QueueInfo {
  std::string qid;
  std::string from;
  int64_t received_at = 0;
  uint64_t size = 0;
  uint32_t attempts = 0;
  int64_t next_attempt = 0;
  bool held = false;
  bool in_flight = false;
  std::vector<Recipient> rcpts;
};

class Scheduler {
 public:
  Scheduler(uv_loop_t* loop, Runtime& rt, std::vector<Worker*> workers);
  ~Scheduler();
  // Control loop: the messages found in the spool at start-up.
  void load(const std::vector<Envelope>& envs);
  // Any thread: a message was committed (inbound or a DSN).
  void submit(const Envelope& env);
  // Control loop: stop dispatching and close the handles. Results still in flight are dropped;
  // their messages stay queued on disk.
  void stop();

  // Queue tools (control loop). false: no such message (or not in a state that allows it).
  std::vector<QueueInfo> list() const;
  bool show(const std::string& qid, QueueInfo& out) const;
  bool flush(const std::string& qid);
  size_t flush_all();
  bool hold(const std::string& qid);
  bool release(const std::string& qid);
  bool remove(const std::string& qid);
  size_t size() const { return msgs_.size(); }
  size_t active_connections() const { return active_; }
  size_t destinations() const { return dests_.size(); }

 private:
  struct Entry {
    std::shared_ptr<Envelope> env;
    std::string path;
    uint64_t size = 0;
    int parts = 0;              // destination parts queued or in flight
    bool in_retry = false;
    std::multimap<int64_t, std::string>::iterator retry_it;
    std::vector<size_t> newly_failed;
    bool removed = false;       // deleted by an admin while in flight
  };
  struct Part {
    std::string qid;
    std::vector<size_t> rcpts;
  };
  struct Dest {
    std::deque<Part> waiting;
    uint32_t active = 0;
    std::string domain;
    bool has_route = false;
    NextHop route;
    TlsLevel tls = TlsLevel::kMay;
    // Workers that reported an idle connection to this destination, and until when (unix
    // seconds) it may still be there; pruned by tick() so quiet destinations are forgotten.
    std::deque<std::pair<unsigned, int64_t>> cached;
  };

  void on_async();
  void tick();
  void add(std::shared_ptr<Envelope> env);
  void make_ready(Entry& e);
  void dispatch();
  void apply(delivery::JobResult r);
  void settle(const std::string& qid);
  void bounce(Entry& e, const std::vector<size_t>& rcpts, queue::DsnKind kind = queue::DsnKind::kFailed);
  void unschedule(Entry& e);
  std::string dest_key(const std::string& domain, Dest& proto) const;
  int64_t now() const;

  uv_loop_t* loop_;
  Runtime& rt_;
  std::vector<Worker*> workers_;
  size_t rr_ = 0;
  uint64_t next_job_ = 1;
  uint32_t active_ = 0;
  std::unordered_map<std::string, Entry> msgs_;
  std::multimap<int64_t, std::string> retry_;
  std::map<std::string, Dest> dests_;
  uv_async_t async_{};
  uv_timer_t timer_{};
  bool stopped_ = false;
  std::mutex mu_;
  bool closed_ = false;  // under mu_: no more uv_async_send
  std::vector<Envelope> inbox_msgs_;
  std::vector<delivery::JobResult> inbox_results_;
};

}  // namespace postern::mta
