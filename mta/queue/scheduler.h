// scheduler.h — the queue manager. Runs on the control loop. Knows every queued message and the
// state of each recipient; groups pending recipients by destination (static route or MX domain,
// with its TLS policy), keeps per-destination and global connection limits, hands workers
// DeliveryJobs of several messages (connection reuse), applies the results: delivered recipients
// are done, 4xx/connection trouble retries on a backoff schedule, 5xx and expiry bounce (RFC 3464
// DSN, never to the null sender). Every change of a recipient's state is written to the spool
// before the message is retried or removed, so a restart neither loses nor re-sends.
//
// Time: every due time is unix seconds from the Runtime's Clock, and the tick (every second,
// a libuv timer) compares them with the clock's now. So a clock that jumps (posternd
// --test-clock, an NTP step) is noticed within a second; no libuv timer is armed for a due time.
//
// Memory: a queued message costs a small index entry (times, counts, flags) and its place in
// the waiting lists; its envelope (sender, recipients, states) stays in memory only while it is
// about to be delivered, in flight or waiting for its DSN, and at most kMaxHotEnvelopes waiting
// ones. The others are read back from the spool (Spool::load_envelope) when they are due.
//
// Bounces are never lost: a failed recipient is marked dsn_owed in its envelope; the original
// leaves the queue only once the DSN's own commit succeeded; a failed DSN commit is retried.
//
// Security-sensitive: none of the inputs here come from the network directly; reply texts from
// next hops go to the log through esc() and to DSNs through queue::make_dsn's cleaning.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
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

// One page of the queue, in queue ID order (which is arrival order).
struct QueuePage {
  std::vector<QueueInfo> msgs;
  size_t total = 0;        // messages in the queue
  std::string next_after;  // pass as `after` for the next page; "" on the last page
};

class Scheduler {
 public:
  using Done = std::function<void(delivery::JobResult)>;
  // Hands `job` to worker number `w` (< workers); done runs once, on any thread.
  using Deliver = std::function<void(size_t w, delivery::DeliveryJob job, Done done)>;

  static constexpr size_t kMaxHotEnvelopes = 4096;  // waiting messages with their envelope in memory
  static constexpr size_t kMaxReadyPerTick = 2000;  // due messages read back per tick (then 10 ms)
  static constexpr int64_t kDsnRetrySeconds = 60;   // a DSN whose commit failed is made again

  Scheduler(uv_loop_t* loop, Runtime& rt, size_t workers, Deliver deliver);
  ~Scheduler();
  // Control loop, at start-up: one message found in the spool (Spool::recover), then loaded().
  void load(Envelope env);
  void loaded();
  // Any thread: a message was committed (inbound or a DSN).
  void submit(const Envelope& env);
  // Any thread: results for some recipients of job `job_id`, as soon as their transaction
  // ended (DeliveryJob::record calls this). Applied and written to the spool at once; the
  // job's final JobResult may repeat them (ignored).
  void record(uint64_t job_id, std::vector<smtp::RcptResult> results, std::string remote);
  // Control loop: stop dispatching and close the handles. Results still in flight are dropped;
  // their messages stay queued on disk.
  void stop();
  // Runs every second from the scheduler's timer: due retries, DSN retries, the connection
  // cache, then dispatch. Public so unit tests drive it with a FakeClock.
  void tick();

  // Queue tools (control loop). false: no such message (or not in a state that allows it).
  // list: up to `limit` messages with a queue ID after `after` ("" = from the start).
  QueuePage list(const std::string& after, size_t limit) const;
  bool show(const std::string& qid, QueueInfo& out) const;
  bool flush(const std::string& qid);
  size_t flush_all();
  bool hold(const std::string& qid);
  bool release(const std::string& qid);
  bool remove(const std::string& qid);
  size_t size() const { return msgs_.size(); }
  size_t active_connections() const { return active_; }
  size_t destinations() const { return dests_.size(); }
  size_t hot_envelopes() const { return hot_; }

 private:
  // The index entry of one queued message. While `env` is set it is the authority for the
  // recipients; the queue fields below are the authority for themselves and are copied into the
  // envelope (sync_env) whenever it is written or handed out.
  struct Entry {
    std::shared_ptr<Envelope> env;  // null while cold: on disk only
    int64_t received_at = 0;
    int64_t next_attempt = 0;
    uint64_t size = 0;
    std::multimap<int64_t, std::string>::iterator retry_it;
    uint32_t attempts = 0;
    uint16_t parts = 0;        // destination parts waiting or in flight
    uint16_t flying = 0;       // of which in flight
    uint8_t dsn_inflight = 0;  // DSNs handed to the committer, not yet answered
    bool held = false;
    bool in_retry = false;
    bool removed = false;  // deleted by an admin while in flight
    bool delay_warned = false;
    bool delay_inflight = false;
  };
  struct Part {
    std::string qid;
    std::vector<uint32_t> rcpts;
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
  // A job handed to a worker and not answered yet: which recipients it carries, which of them
  // have a result (record() and the JobResult may both bring one).
  struct FlightPart {
    std::string qid;
    std::vector<size_t> rcpts;
    std::vector<bool> answered;
    bool done = false;
  };
  struct Flight {
    std::string dest;
    std::vector<FlightPart> parts;
  };
  struct Record {
    uint64_t job;
    std::vector<smtp::RcptResult> results;
    std::string remote;
  };
  struct DsnDone {
    std::string orig;
    Envelope dsn;
    bool ok;
    queue::DsnKind kind;
    std::vector<size_t> rcpts;
  };
  using Iter = std::map<std::string, Entry>::iterator;

  void on_async();
  void add(Envelope&& env);
  bool warm(const std::string& qid, Entry& e);
  void cool(Entry& e);
  void maybe_cool(Entry& e);
  void erase(Iter it);
  void sync_env(Entry& e);
  void persist(const std::string& qid, Entry& e);
  void make_ready(const std::string& qid, Entry& e);
  void schedule_retry(const std::string& qid, Entry& e);
  void unschedule(Entry& e);
  void ready_due(int64_t t, size_t& budget);
  void dispatch();
  void dispatch_dest(const std::string& key, Dest& d, const Config& cfg);
  bool take_part(Part& p, delivery::DeliveryJob& job, Flight& f);
  void on_result(delivery::JobResult r);
  void apply_results(Flight& f, std::vector<smtp::RcptResult>& results, const std::string& remote);
  bool apply_one(Entry& e, const smtp::RcptResult& res, const std::string& remote);
  void finish_part(FlightPart& p);
  void settle(const std::string& qid);
  bool expire(const std::string& qid, Entry& e, int64_t t, const Config& cfg);
  void finish_or_wait(Iter it);
  void send_owed(const std::string& qid, Entry& e);
  void send_delay_warning(const std::string& qid, Entry& e);
  bool make_dsn(const std::string& qid, Entry& e, const std::vector<size_t>& rcpts, queue::DsnKind kind);
  void on_dsn(DsnDone d);
  void retry_dsns(int64_t t);
  void fill_info(const std::string& qid, const Entry& e, QueueInfo& q) const;
  std::string dest_key(const std::string& domain, Dest& proto) const;
  int64_t now() const;

  uv_loop_t* loop_;
  Runtime& rt_;
  size_t workers_;
  Deliver deliver_;
  size_t rr_ = 0;
  uint64_t next_job_ = 1;
  uint32_t active_ = 0;
  size_t hot_ = 0;  // entries holding their envelope
  std::map<std::string, Entry> msgs_;
  std::multimap<int64_t, std::string> retry_;
  std::multimap<int64_t, std::string> dsn_retry_;
  std::map<std::string, Dest> dests_;
  std::unordered_map<uint64_t, Flight> flights_;
  uv_async_t async_{};
  uv_timer_t timer_{};
  bool stopped_ = false;
  std::mutex mu_;
  bool closed_ = false;  // under mu_: no more uv_async_send
  std::vector<Envelope> inbox_msgs_;
  std::vector<Record> inbox_records_;
  std::vector<delivery::JobResult> inbox_results_;
  std::vector<DsnDone> inbox_dsns_;
};

}  // namespace postern::mta
