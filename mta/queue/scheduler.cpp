// scheduler.cpp — see scheduler.h. Everything here runs on the control loop except submit()
// and the job callbacks, which only lock the inbox and wake the loop.
#include "mta/queue/scheduler.h"

#include <spdlog/spdlog.h>

#include <ctime>
#include <random>
#include <set>

#include "base/time_format.h"
#include "mta/queue/dsn.h"
#include "mta/worker.h"
#include "policy/tls_policy.h"

namespace postern::mta {
namespace {

const char* outcome_word(smtp::Outcome o) {
  switch (o) {
    case smtp::Outcome::kDelivered: return "sent";
    case smtp::Outcome::kDeferred: return "deferred";
    case smtp::Outcome::kFailed: return "bounced";
  }
  return "?";
}

bool pending(const Envelope& e) {
  for (auto& r : e.rcpts)
    if (r.state == RcptState::kPending) return true;
  return false;
}

constexpr size_t kMaxReturnedBytes = 10 * 1024 * 1024;

}  // namespace

Scheduler::Scheduler(uv_loop_t* loop, Runtime& rt, std::vector<Worker*> workers)
    : loop_(loop), rt_(rt), workers_(std::move(workers)) {
  uv_async_init(loop_, &async_, [](uv_async_t* a) { static_cast<Scheduler*>(a->data)->on_async(); });
  async_.data = this;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Scheduler*>(t->data)->tick(); }, 1000, 1000);
}

Scheduler::~Scheduler() = default;

int64_t Scheduler::now() const { return static_cast<int64_t>(std::time(nullptr)); }

void Scheduler::stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lk(mu_);
    closed_ = true;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

void Scheduler::submit(const Envelope& env) {
  std::lock_guard lk(mu_);
  if (closed_) return;  // stopping: the message is on disk and is found again at start-up
  inbox_msgs_.push_back(env);
  uv_async_send(&async_);
}

void Scheduler::load(const std::vector<Envelope>& envs) {
  for (auto& env : envs) add(std::make_shared<Envelope>(env));
  dispatch();
}

void Scheduler::add(std::shared_ptr<Envelope> env) {
  std::string qid = env->queue_id;
  Entry e;
  e.path = rt_.spool->msg_path(qid);
  e.size = env->message_size;  // the message is the queue file's first message_size bytes
  e.env = std::move(env);
  auto [it, inserted] = msgs_.emplace(qid, std::move(e));
  if (!inserted) return;
  Entry& en = it->second;
  if (!pending(*en.env)) {  // every recipient was done before a restart: finish the removal
    rt_.spool->remove(qid);
    msgs_.erase(it);
    return;
  }
  if (en.env->held) return;
  if (en.env->next_attempt > now()) {
    en.retry_it = retry_.emplace(en.env->next_attempt, qid);
    en.in_retry = true;
  } else {
    make_ready(en);
  }
}

void Scheduler::on_async() {
  std::vector<Envelope> msgs;
  std::vector<delivery::JobResult> results;
  {
    std::lock_guard lk(mu_);
    msgs.swap(inbox_msgs_);
    results.swap(inbox_results_);
  }
  for (auto& r : results) apply(std::move(r));
  for (auto& m : msgs) add(std::make_shared<Envelope>(std::move(m)));
  dispatch();
}

void Scheduler::tick() {
  int64_t t = now();
  while (!retry_.empty() && retry_.begin()->first <= t) {
    std::string qid = retry_.begin()->second;
    retry_.erase(retry_.begin());
    auto it = msgs_.find(qid);
    if (it == msgs_.end()) continue;
    it->second.in_retry = false;
    make_ready(it->second);
  }
  for (auto it = dests_.begin(); it != dests_.end();) {
    auto& d = it->second;
    while (!d.cached.empty() && d.cached.front().second < t) d.cached.pop_front();
    if (d.active == 0 && d.waiting.empty() && d.cached.empty()) it = dests_.erase(it);
    else ++it;
  }
  dispatch();
}

std::string Scheduler::dest_key(const std::string& domain, Dest& d) const {
  auto cfg = rt_.config.load();
  d.domain = domain;
  d.tls = policy::outbound_tls_level(cfg->outbound, domain);
  auto it = cfg->routes.find(domain);
  if (it == cfg->routes.end()) it = cfg->routes.find("*");
  std::string key;
  if (it != cfg->routes.end()) {
    d.has_route = true;
    d.route = it->second;
    key = "route:" + d.route.host + ":" + std::to_string(d.route.port) + (d.route.mx ? "/mx" : "");
  } else {
    key = "mx:" + domain;
  }
  return key + "|tls=" + std::to_string(static_cast<int>(d.tls));
}

void Scheduler::make_ready(Entry& e) {
  std::map<std::string, Part> parts;
  for (size_t i = 0; i < e.env->rcpts.size(); ++i) {
    if (e.env->rcpts[i].state != RcptState::kPending) continue;
    Dest proto;
    std::string key = dest_key(e.env->rcpts[i].domain(), proto);
    auto& p = parts[key];
    p.qid = e.env->queue_id;
    p.rcpts.push_back(i);
    dests_.try_emplace(key, std::move(proto));
  }
  for (auto& [key, part] : parts) {
    dests_[key].waiting.push_back(std::move(part));
    ++e.parts;
  }
}

void Scheduler::dispatch() {
  if (stopped_ || workers_.empty()) return;
  auto cfg = rt_.config.load();
  if (!cfg->queue.deliver) return;  // queue only; the tick picks up again after a reload
  for (auto& [key, d] : dests_) {
    while (!d.waiting.empty() && active_ < cfg->outbound.max_connections &&
           d.active < cfg->outbound.destination_concurrency) {
      delivery::DeliveryJob job;
      job.id = next_job_++;
      job.dest = key;
      job.domain = d.domain;
      job.has_route = d.has_route;
      job.route = d.route;
      job.tls = d.tls;
      std::set<std::string> in_job;
      while (!d.waiting.empty() && job.msgs.size() < cfg->outbound.messages_per_connection &&
             !in_job.count(d.waiting.front().qid)) {
        Part p = std::move(d.waiting.front());
        d.waiting.pop_front();
        auto it = msgs_.find(p.qid);
        if (it == msgs_.end()) continue;
        if (it->second.removed || it->second.env->held) {  // changed while waiting: not now
          if (--it->second.parts <= 0) {
            it->second.parts = 0;
            if (it->second.removed) settle(p.qid);
          }
          continue;
        }
        in_job.insert(p.qid);
        Entry& e = it->second;
        job.msgs.push_back({p.qid, std::make_shared<const Envelope>(*e.env), std::move(p.rcpts), e.path, e.size});
      }
      if (job.msgs.empty()) continue;
      ++d.active;
      ++active_;
      // Prefer a worker holding an idle connection to this destination (connection cache).
      Worker* w;
      if (!d.cached.empty() && d.cached.front().first < workers_.size()) {
        w = workers_[d.cached.front().first];
        d.cached.pop_front();
      } else {
        w = workers_[rr_++ % workers_.size()];
      }
      spdlog::debug("delivery job={} dest={} messages={}", job.id, key, job.msgs.size());
      w->deliver(std::move(job), [this](delivery::JobResult r) {
        std::lock_guard lk(mu_);
        if (closed_) return;
        inbox_results_.push_back(std::move(r));
        uv_async_send(&async_);
      });
    }
  }
}

void Scheduler::apply(delivery::JobResult r) {
  auto dit = dests_.find(r.dest);
  if (dit != dests_.end()) {
    --dit->second.active;
    if (r.cached_on >= 0 && dit->second.cached.size() < 64) {
      auto keep = std::chrono::ceil<std::chrono::seconds>(rt_.config.load()->outbound.connection_cache_time).count();
      dit->second.cached.emplace_back(static_cast<unsigned>(r.cached_on), now() + keep);
    }
    if (dit->second.active == 0 && dit->second.waiting.empty() && dit->second.cached.empty()) dests_.erase(dit);
  }
  --active_;
  for (auto& res : r.results) {
    auto it = msgs_.find(res.qid);
    if (it == msgs_.end() || res.index >= it->second.env->rcpts.size()) continue;
    Entry& e = it->second;
    Recipient& rc = e.env->rcpts[res.index];
    if (rc.state != RcptState::kPending) continue;
    rc.status = res.status;
    rc.diag = res.diag;
    rc.remote = r.remote;
    if (res.outcome == smtp::Outcome::kDelivered) {
      rc.state = RcptState::kDelivered;
      rt_.counters.rcpts_delivered.fetch_add(1);
    } else if (res.outcome == smtp::Outcome::kFailed) {
      rc.state = RcptState::kFailed;
      e.newly_failed.push_back(res.index);
      rt_.counters.rcpts_bounced.fetch_add(1);
    } else {
      rt_.counters.rcpts_deferred.fetch_add(1);
    }
    spdlog::info("queue_id={} to=<{}> relay={} attempt={} status={} dsn={} ({}){}", res.qid, rc.address,
                 r.remote.empty() ? "none" : r.remote, e.env->attempts + 1, outcome_word(res.outcome),
                 res.status, res.diag, res.maybe_duplicate ? " possible_duplicate=yes" : "");
  }
  // Every part of this job is answered now, even if a result was missing for some recipient
  // (such a recipient stays pending and is retried).
  for (auto& qid : r.qids) {
    auto it = msgs_.find(qid);
    if (it == msgs_.end()) continue;
    if (--it->second.parts <= 0) {
      it->second.parts = 0;
      settle(qid);
    }
  }
}

void Scheduler::settle(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return;
  Entry& e = it->second;
  if (e.removed) {
    rt_.spool->remove(qid);
    msgs_.erase(it);
    return;
  }
  if (!e.newly_failed.empty()) {
    bounce(e, e.newly_failed);
    e.newly_failed.clear();
  }
  if (!pending(*e.env)) {
    spdlog::info("queue_id={} removed (all recipients done)", qid);
    rt_.spool->remove(qid);
    msgs_.erase(it);
    return;
  }
  auto cfg = rt_.config.load();
  e.env->attempts++;
  int64_t t = now();
  auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(cfg->queue.lifetime).count();
  if (t - e.env->received_at >= lifetime) {
    std::vector<size_t> expired;
    for (size_t i = 0; i < e.env->rcpts.size(); ++i) {
      Recipient& rc = e.env->rcpts[i];
      if (rc.state != RcptState::kPending) continue;
      rc.state = RcptState::kFailed;
      rc.status = "4.4.7";
      rc.diag = "delivery time expired after " + std::to_string(e.env->attempts) + " attempts; last: " + rc.diag;
      expired.push_back(i);
      rt_.counters.rcpts_bounced.fetch_add(1);
      spdlog::info("queue_id={} to=<{}> status=expired dsn=4.4.7 ({})", qid, rc.address, rc.diag);
    }
    bounce(e, expired);
    rt_.spool->remove(qid);
    msgs_.erase(it);
    return;
  }
  // Still trying after queue.delay_warning: tell the sender once (persisted with the update below).
  auto warn_after = std::chrono::duration_cast<std::chrono::seconds>(cfg->queue.delay_warning).count();
  if (warn_after > 0 && !e.env->delay_warned && t - e.env->received_at >= warn_after) {
    e.env->delay_warned = true;
    std::vector<size_t> waiting;
    for (size_t i = 0; i < e.env->rcpts.size(); ++i)
      if (e.env->rcpts[i].state == RcptState::kPending) waiting.push_back(i);
    bounce(e, waiting, queue::DsnKind::kDelayed);
  }
  // Backoff: min_backoff doubling up to max_backoff.
  auto minb = std::chrono::duration_cast<std::chrono::seconds>(cfg->queue.min_backoff).count();
  auto maxb = std::chrono::duration_cast<std::chrono::seconds>(cfg->queue.max_backoff).count();
  int64_t delay = std::max<int64_t>(1, minb);
  for (uint32_t i = 1; i < e.env->attempts && delay < maxb; ++i) delay *= 2;
  delay = std::min<int64_t>(delay, std::max<int64_t>(1, maxb));
  e.env->next_attempt = t + delay;
  rt_.spool->update(*e.env);
  if (!e.env->held) {
    e.retry_it = retry_.emplace(e.env->next_attempt, qid);
    e.in_retry = true;
  }
  spdlog::info("queue_id={} deferred attempts={} next_retry_in={}s", qid, e.env->attempts, delay);
}

void Scheduler::bounce(Entry& e, const std::vector<size_t>& rcpts, queue::DsnKind kind) {
  const bool delayed = kind == queue::DsnKind::kDelayed;
  auto want = queue::wants_dsn(*e.env, rcpts, kind);
  if (want.empty()) {
    if (!rcpts.empty())
      spdlog::info("queue_id={} no {}: {}", e.env->queue_id, delayed ? "delay notice" : "DSN",
                   e.env->mail_from.empty() ? "null sender" : e.env->is_bounce ? "a DSN itself" : "NOTIFY says no");
    return;
  }
  std::string original;
  if (!queue::Spool::read_message(e.path, std::min<uint64_t>(kMaxReturnedBytes, e.size), original)) {
    spdlog::warn("queue_id={} cannot read the queue file {} for the DSN", e.env->queue_id, e.path);
    original.clear();  // the notice goes out without the original attached
  }
  auto cfg = rt_.config.load();
  std::mt19937_64 rng(std::random_device{}());
  std::string boundary = e.env->queue_id + "." + std::to_string(rng());
  auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(cfg->queue.lifetime).count();
  auto dsn = queue::make_dsn(kind, *e.env, want, original, cfg->hostname, rfc5322_now(), boundary,
                             e.env->received_at + lifetime);
  dsn.env.queue_id = rt_.spool->new_queue_id();
  std::string received = "Received: by " + cfg->hostname + " (Postern) id " + dsn.env.queue_id + "; " + rfc5322_now() + "\r\n";
  auto w = rt_.spool->open(dsn.env.queue_id);
  if (!w || !w->write(received) || !w->write(dsn.text)) {
    spdlog::error("queue_id={} cannot write DSN; recipients stay failed", e.env->queue_id);
    return;
  }
  dsn.env.message_size = w->bytes();
  rt_.counters.dsns_generated.fetch_add(1);
  spdlog::info("queue_id={} dsn_queue_id={} sender {} notification to=<{}> rcpts={}", e.env->queue_id,
               dsn.env.queue_id, delayed ? "delay" : "non-delivery", e.env->mail_from, want.size());
  Envelope copy = dsn.env;
  rt_.spool->commit(std::move(w), dsn.env, [this, copy](bool ok) {
    if (ok) submit(copy);
    else spdlog::error("queue_id={} DSN commit failed", copy.queue_id);
  });
}

void Scheduler::unschedule(Entry& e) {
  if (e.in_retry) {
    retry_.erase(e.retry_it);
    e.in_retry = false;
  }
}

std::vector<QueueInfo> Scheduler::list() const {
  std::vector<QueueInfo> out;
  for (auto& [qid, e] : msgs_) {
    QueueInfo q;
    show(qid, q);
    out.push_back(std::move(q));
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.received_at < b.received_at; });
  return out;
}

bool Scheduler::show(const std::string& qid, QueueInfo& q) const {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return false;
  const Entry& e = it->second;
  q.qid = qid;
  q.from = e.env->mail_from;
  q.received_at = e.env->received_at;
  q.size = e.size;
  q.attempts = e.env->attempts;
  q.next_attempt = e.env->next_attempt;
  q.held = e.env->held;
  q.in_flight = e.parts > 0;
  q.rcpts = e.env->rcpts;
  return true;
}

bool Scheduler::flush(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end() || it->second.parts > 0 || it->second.env->held) return false;
  unschedule(it->second);
  it->second.env->next_attempt = 0;
  make_ready(it->second);
  dispatch();
  return true;
}

size_t Scheduler::flush_all() {
  size_t n = 0;
  std::vector<std::string> due;
  for (auto& [t, qid] : retry_) due.push_back(qid);
  for (auto& qid : due) n += flush(qid) ? 1 : 0;
  return n;
}

bool Scheduler::hold(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return false;
  Entry& e = it->second;
  e.env->held = true;
  unschedule(e);
  rt_.spool->update(*e.env);
  spdlog::info("queue_id={} held", qid);
  return true;
}

bool Scheduler::release(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end() || !it->second.env->held) return false;
  Entry& e = it->second;
  e.env->held = false;
  rt_.spool->update(*e.env);
  spdlog::info("queue_id={} released", qid);
  if (e.parts == 0) {
    e.env->next_attempt = 0;
    make_ready(e);
    dispatch();
  }
  return true;
}

bool Scheduler::remove(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return false;
  Entry& e = it->second;
  unschedule(e);
  spdlog::info("queue_id={} deleted by admin", qid);
  if (e.parts > 0) {  // in flight: finish the removal when the results come back
    e.removed = true;
    return true;
  }
  rt_.spool->remove(qid);
  msgs_.erase(it);
  return true;
}

}  // namespace postern::mta
