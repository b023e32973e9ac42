// scheduler.cpp — see scheduler.h. Everything here runs on the control loop except submit(),
// record() and the job and commit callbacks, which only lock the inbox and wake the loop.
#include "mta/queue/scheduler.h"

#include "mta/queue/scan_edits.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <set>

#include "base/log.h"
#include "base/time_format.h"
#include "mta/queue/dsn.h"
#include "policy/tls_policy.h"

namespace postern::mta {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

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

bool owes_dsn(const Envelope& e) {
  for (auto& r : e.rcpts)
    if (r.dsn_owed) return true;
  return false;
}

int64_t secs(std::chrono::milliseconds d) { return duration_cast<seconds>(d).count(); }

constexpr size_t kMaxReturnedBytes = 10 * 1024 * 1024;

}  // namespace

Scheduler::Scheduler(uv_loop_t* loop, Runtime& rt, size_t workers, Deliver deliver)
    : loop_(loop), rt_(rt), workers_(workers), deliver_(std::move(deliver)) {
  uv_async_init(loop_, &async_, [](uv_async_t* a) { static_cast<Scheduler*>(a->data)->on_async(); });
  async_.data = this;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<Scheduler*>(t->data)->tick(); }, 1000, 1000);
}

Scheduler::~Scheduler() = default;

int64_t Scheduler::now() const { return rt_.clock->unix_seconds(); }

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

void Scheduler::record(uint64_t job_id, std::vector<smtp::RcptResult> results, std::string remote) {
  if (results.empty()) return;
  std::lock_guard lk(mu_);
  if (closed_) return;
  inbox_records_.push_back({job_id, std::move(results), std::move(remote)});
  uv_async_send(&async_);
}

void Scheduler::load(Envelope env) { add(std::move(env)); }

void Scheduler::loaded() { dispatch(); }

void Scheduler::on_async() {
  std::vector<Envelope> msgs;
  std::vector<Record> records;
  std::vector<delivery::JobResult> results;
  std::vector<DsnDone> dsns;
  {
    std::lock_guard lk(mu_);
    msgs.swap(inbox_msgs_);
    records.swap(inbox_records_);
    results.swap(inbox_results_);
    dsns.swap(inbox_dsns_);
  }
  // A job's records were sent before its result: apply them first.
  for (auto& r : records) {
    auto f = flights_.find(r.job);
    if (f != flights_.end()) apply_results(f->second, r.results, r.remote);
  }
  for (auto& r : results) on_result(std::move(r));
  for (auto& d : dsns) on_dsn(std::move(d));
  for (auto& m : msgs) add(std::move(m));
  dispatch();
}

// --- the index and the envelopes it holds or reads back ----------------------------------------

void Scheduler::add(Envelope&& in) {
  std::string qid = in.queue_id;
  auto [it, inserted] = msgs_.try_emplace(qid);
  if (!inserted) return;
  Entry& e = it->second;
  e.received_at = in.received_at;
  e.next_attempt = in.next_attempt;
  e.size = in.message_size;  // the message is the queue file's first message_size bytes
  e.attempts = in.attempts;
  e.held = in.held;
  e.delay_warned = in.delay_warned;
  e.env = std::make_shared<Envelope>(std::move(in));
  ++hot_;
  send_owed(qid, e);  // failure notices owed from before a restart
  if (!pending(*e.env)) return finish_or_wait(it);  // every recipient was done before a restart
  if (!e.held) {
    if (e.next_attempt > now()) schedule_retry(qid, e);
    else make_ready(qid, e);
  }
  maybe_cool(e);
}

bool Scheduler::warm(const std::string& qid, Entry& e) {
  if (e.env) return true;
  auto env = std::make_shared<Envelope>();
  std::string err;
  if (!rt_.spool->load_envelope(qid, *env, err)) {
    spdlog::error("queue_id={} cannot read the envelope back from the spool: {}", qid, err);
    return false;
  }
  env->message_size = e.size;
  e.env = std::move(env);
  ++hot_;
  sync_env(e);
  return true;
}

void Scheduler::cool(Entry& e) {
  if (!e.env || e.flying > 0 || e.dsn_inflight > 0) return;
  e.env.reset();
  --hot_;
}

// Waiting messages keep their envelope for the dispatch that comes soon, up to a bound; with
// delivery off nothing comes soon.
void Scheduler::maybe_cool(Entry& e) {
  if (e.parts == 0 || hot_ > kMaxHotEnvelopes || !rt_.config.load()->queue.deliver) cool(e);
}

void Scheduler::erase(Iter it) {
  unschedule(it->second);
  if (it->second.env) --hot_;
  msgs_.erase(it);
}

void Scheduler::sync_env(Entry& e) {
  e.env->attempts = e.attempts;
  e.env->next_attempt = e.next_attempt;
  e.env->held = e.held;
  e.env->delay_warned = e.delay_warned;
}

void Scheduler::persist(const std::string& qid, Entry& e) {
  if (!warm(qid, e)) return;
  sync_env(e);
  rt_.spool->update(*e.env);
}

void Scheduler::schedule_retry(const std::string& qid, Entry& e) {
  unschedule(e);
  e.retry_it = retry_.emplace(e.next_attempt, qid);
  e.in_retry = true;
}

void Scheduler::unschedule(Entry& e) {
  if (e.in_retry) {
    retry_.erase(e.retry_it);
    e.in_retry = false;
  }
}

// --- dispatch ----------------------------------------------------------------------------------

std::string Scheduler::dest_key(const std::string& domain, Dest& d) const {
  auto nh = delivery::choose_next_hop(*rt_.config.load(), domain);
  d.domain = domain;
  d.tls = nh.tls;
  d.has_route = nh.has_route;
  d.route = nh.route;
  return nh.key;
}

void Scheduler::make_ready(const std::string& qid, Entry& e) {
  std::map<std::string, Part> parts;
  for (size_t i = 0; i < e.env->rcpts.size(); ++i) {
    if (e.env->rcpts[i].state != RcptState::kPending) continue;
    Dest proto;
    std::string key = dest_key(e.env->rcpts[i].domain(), proto);
    auto& p = parts[key];
    p.qid = qid;
    p.rcpts.push_back(static_cast<uint32_t>(i));
    dests_.try_emplace(key, std::move(proto));
  }
  for (auto& [key, part] : parts) {
    dests_[key].waiting.push_back(std::move(part));
    ++e.parts;
  }
}

void Scheduler::dispatch() {
  if (stopped_ || workers_ == 0) return;
  auto cfg = rt_.config.load();
  if (!cfg->queue.deliver) return;  // queue only; the tick picks up again after a reload
  for (auto& [key, d] : dests_) dispatch_dest(key, d, *cfg);
}

void Scheduler::dispatch_dest(const std::string& key, Dest& d, const Config& cfg) {
  while (!d.waiting.empty() && active_ < cfg.outbound.max_connections &&
         d.active < cfg.outbound.destination_concurrency) {
    delivery::DeliveryJob job;
    job.id = next_job_++;
    job.dest = key;
    job.domain = d.domain;
    job.has_route = d.has_route;
    job.route = d.route;
    job.tls = d.tls;
    Flight f;
    f.dest = key;
    std::set<std::string> in_job;
    while (!d.waiting.empty() && job.msgs.size() < cfg.outbound.messages_per_connection &&
           !in_job.count(d.waiting.front().qid)) {
      Part p = std::move(d.waiting.front());
      d.waiting.pop_front();
      if (take_part(p, job, f)) in_job.insert(p.qid);
    }
    if (job.msgs.empty()) continue;
    ++d.active;
    ++active_;
    // Prefer a worker holding an idle connection to this destination (connection cache).
    size_t w;
    if (!d.cached.empty() && d.cached.front().first < workers_) {
      w = d.cached.front().first;
      d.cached.pop_front();
    } else {
      w = rr_++ % workers_;
    }
    spdlog::debug("delivery job={} dest={} messages={}", job.id, key, job.msgs.size());
    uint64_t id = job.id;
    flights_.emplace(id, std::move(f));
    job.record = [this, id](std::vector<smtp::RcptResult> results, const std::string& remote) {
      record(id, std::move(results), remote);
    };
    deliver_(w, std::move(job), [this](delivery::JobResult r) {
      std::lock_guard lk(mu_);
      if (closed_) return;
      inbox_results_.push_back(std::move(r));
      uv_async_send(&async_);
    });
  }
}

// One waiting part into the job being built; false when the message is not to go now.
bool Scheduler::take_part(Part& p, delivery::DeliveryJob& job, Flight& f) {
  auto it = msgs_.find(p.qid);
  if (it == msgs_.end()) return false;
  Entry& e = it->second;
  bool readable = !e.removed && !e.held && warm(p.qid, e);
  if (!readable) {  // changed while waiting (or unreadable): not now
    if (e.parts > 0) --e.parts;
    if (e.parts == 0) {
      if (e.removed) {
        rt_.spool->remove(p.qid);
        erase(it);
      } else if (!e.held) {  // unreadable: try again later
        e.next_attempt = now() + std::max<int64_t>(1, secs(rt_.config.load()->queue.min_backoff));
        schedule_retry(p.qid, e);
      }
    }
    return false;
  }
  sync_env(e);
  ++e.flying;
  std::vector<size_t> rcpts(p.rcpts.begin(), p.rcpts.end());
  job.msgs.push_back({p.qid, std::make_shared<const Envelope>(*e.env), rcpts, rt_.spool->msg_path(p.qid), e.size});
  f.parts.push_back({p.qid, std::move(rcpts), std::vector<bool>(p.rcpts.size(), false), false});
  return true;
}

// --- results -----------------------------------------------------------------------------------

void Scheduler::on_result(delivery::JobResult r) {
  auto dit = dests_.find(r.dest);
  if (dit != dests_.end()) {
    --dit->second.active;
    if (r.cached_on >= 0 && dit->second.cached.size() < 64) {
      auto keep = std::chrono::ceil<seconds>(rt_.config.load()->outbound.connection_cache_time).count();
      dit->second.cached.emplace_back(static_cast<unsigned>(r.cached_on), now() + keep);
    }
    if (dit->second.active == 0 && dit->second.waiting.empty() && dit->second.cached.empty()) dests_.erase(dit);
  }
  --active_;
  auto f = flights_.find(r.id);
  if (f == flights_.end()) return;
  apply_results(f->second, r.results, r.remote);
  // Every part of this job is answered now, even if a result was missing for some recipient
  // (such a recipient stays pending and is retried).
  for (auto& p : f->second.parts)
    if (!p.done) finish_part(p);
  flights_.erase(f);
}

void Scheduler::apply_results(Flight& f, std::vector<smtp::RcptResult>& results, const std::string& remote) {
  std::vector<size_t> touched;
  std::vector<bool> changed(f.parts.size(), false);
  for (auto& res : results) {
    size_t pi = 0;
    while (pi < f.parts.size() && f.parts[pi].qid != res.qid) ++pi;
    if (pi == f.parts.size() || f.parts[pi].done) continue;
    FlightPart& p = f.parts[pi];
    size_t k = 0;
    while (k < p.rcpts.size() && (p.rcpts[k] != res.index || p.answered[k])) ++k;
    if (k == p.rcpts.size()) continue;  // a repeat: recorded already
    p.answered[k] = true;
    auto it = msgs_.find(p.qid);
    if (it == msgs_.end() || !it->second.env) continue;
    if (apply_one(it->second, res, remote)) changed[pi] = true;
    if (std::find(touched.begin(), touched.end(), pi) == touched.end()) touched.push_back(pi);
  }
  for (size_t pi : touched) {
    FlightPart& p = f.parts[pi];
    if (std::all_of(p.answered.begin(), p.answered.end(), [](bool b) { return b; })) {
      finish_part(p);
    } else if (changed[pi]) {  // partway through: what the next hop took is on disk now
      auto it = msgs_.find(p.qid);
      if (it != msgs_.end() && !it->second.removed) persist(p.qid, it->second);
    }
  }
}

// One recipient's result; true when its state changed (delivered or failed).
bool Scheduler::apply_one(Entry& e, const smtp::RcptResult& res, const std::string& remote) {
  if (res.index >= e.env->rcpts.size()) return false;
  Recipient& rc = e.env->rcpts[res.index];
  if (rc.state != RcptState::kPending) return false;
  rc.status = res.status;
  rc.diag = res.diag;
  rc.remote = remote;
  if (res.outcome == smtp::Outcome::kDelivered) {
    rc.state = RcptState::kDelivered;
    // The next hop takes no NOTIFY=SUCCESS on: the "relayed" notice is ours to send (RFC 3461 4.2).
    rc.dsn_owed = res.relayed_without_dsn && queue::may_bounce(*e.env);
    rt_.counters.rcpts_delivered.fetch_add(1);
  } else if (res.outcome == smtp::Outcome::kFailed) {
    rc.state = RcptState::kFailed;
    rc.dsn_owed = true;
    rt_.counters.rcpts_bounced.fetch_add(1);
  } else {
    rt_.counters.rcpts_deferred.fetch_add(1);
  }
  spdlog::info("queue_id={} to=<{}> relay={} attempt={} status={} dsn={} ({}){}", res.qid, esc(rc.address),
               remote.empty() ? "none" : esc(remote), e.attempts + 1, outcome_word(res.outcome), esc(res.status),
               esc(res.diag), res.maybe_duplicate ? " possible_duplicate=yes" : "");
  return res.outcome != smtp::Outcome::kDeferred;
}

void Scheduler::finish_part(FlightPart& p) {
  p.done = true;
  auto it = msgs_.find(p.qid);
  if (it == msgs_.end()) return;
  Entry& e = it->second;
  if (e.flying > 0) --e.flying;
  if (e.parts > 0) --e.parts;
  if (e.parts == 0) settle(p.qid);
  else if (!e.removed) persist(p.qid, e);  // other destinations still to go
}

// Every part of the message is answered: bounce what failed, then retire it or retry it.
void Scheduler::settle(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return;
  Entry& e = it->second;
  if (e.removed) {
    rt_.spool->remove(qid);
    return erase(it);
  }
  if (!warm(qid, e)) return;
  auto cfg = rt_.config.load();
  int64_t t = now();
  if (pending(*e.env)) {
    e.attempts++;
    expire(qid, e, t, *cfg);
  }
  send_owed(qid, e);  // one notice for the recipients refused now and those expired
  if (!pending(*e.env)) return finish_or_wait(it);
  // Still trying after queue.delay_warning: tell the sender once.
  int64_t warn_after = secs(cfg->queue.delay_warning);
  if (warn_after > 0 && !e.delay_warned && t - e.received_at >= warn_after) send_delay_warning(qid, e);
  // Backoff: min_backoff doubling up to max_backoff; the last try at the end of the lifetime, so
  // the bounce is not late by up to max_backoff.
  int64_t minb = std::max<int64_t>(1, secs(cfg->queue.min_backoff));
  int64_t maxb = std::max<int64_t>(minb, secs(cfg->queue.max_backoff));
  int64_t delay = minb;
  for (uint32_t i = 1; i < e.attempts && delay < maxb; ++i) delay *= 2;
  delay = std::min(delay, maxb);
  int64_t end = e.received_at + secs(cfg->queue.lifetime);
  if (t + delay > end) delay = std::max<int64_t>(1, end - t);
  e.next_attempt = t + delay;
  persist(qid, e);
  if (!e.held) schedule_retry(qid, e);
  spdlog::info("queue_id={} deferred attempts={} next_retry_in={}s", qid, e.attempts, delay);
  maybe_cool(e);
}

// Past queue.lifetime: every pending recipient fails with 4.4.7. true when it did.
bool Scheduler::expire(const std::string& qid, Entry& e, int64_t t, const Config& cfg) {
  if (t - e.received_at < secs(cfg.queue.lifetime)) return false;
  for (auto& rc : e.env->rcpts) {
    if (rc.state != RcptState::kPending) continue;
    rc.state = RcptState::kFailed;
    rc.dsn_owed = true;
    rc.status = "4.4.7";
    rc.diag = "delivery time expired after " + std::to_string(e.attempts) + " attempts; last: " + rc.diag;
    rt_.counters.rcpts_bounced.fetch_add(1);
    spdlog::info("queue_id={} to=<{}> status=expired dsn=4.4.7 ({})", qid, esc(rc.address), esc(rc.diag));
  }
  return true;
}

// No recipient left to try: the message goes once its DSNs are safely queued.
void Scheduler::finish_or_wait(Iter it) {
  Entry& e = it->second;
  if (e.parts > 0) return;
  if (e.dsn_inflight > 0 || (e.env && owes_dsn(*e.env))) {
    persist(it->first, e);  // failed recipients and the notices they are owed
    return;
  }
  spdlog::info("queue_id={} removed (all recipients done)", it->first);
  rt_.spool->remove(it->first);
  erase(it);
}

// --- DSNs --------------------------------------------------------------------------------------

// One notice at a time (its answer re-checks): first the failure notice for the recipients
// that failed, then the "relayed" notice for those delivered to a next hop without DSN.
void Scheduler::send_owed(const std::string& qid, Entry& e) {
  if (e.dsn_inflight > 0 || !e.env) return;
  for (auto kind : {queue::DsnKind::kFailed, queue::DsnKind::kRelayed}) {
    auto state = kind == queue::DsnKind::kFailed ? RcptState::kFailed : RcptState::kDelivered;
    std::vector<size_t> owed;
    for (size_t i = 0; i < e.env->rcpts.size(); ++i)
      if (e.env->rcpts[i].dsn_owed && e.env->rcpts[i].state == state) owed.push_back(i);
    if (owed.empty()) continue;
    auto want = queue::wants_dsn(*e.env, owed, kind);
    for (size_t i : owed)
      if (std::find(want.begin(), want.end(), i) == want.end()) e.env->rcpts[i].dsn_owed = false;
    if (want.empty()) {
      spdlog::info("queue_id={} no {}: {}", qid, kind == queue::DsnKind::kFailed ? "DSN" : "relayed notice",
                   e.env->mail_from.empty() ? "null sender" : e.env->is_bounce ? "a DSN itself" : "NOTIFY says no");
      continue;
    }
    if (!make_dsn(qid, e, want, kind)) dsn_retry_.emplace(now() + kDsnRetrySeconds, qid);
    return;
  }
}

void Scheduler::send_delay_warning(const std::string& qid, Entry& e) {
  if (e.delay_inflight) return;
  std::vector<size_t> waiting;
  for (size_t i = 0; i < e.env->rcpts.size(); ++i)
    if (e.env->rcpts[i].state == RcptState::kPending) waiting.push_back(i);
  auto want = queue::wants_dsn(*e.env, waiting, queue::DsnKind::kDelayed);
  if (want.empty()) {
    e.delay_warned = true;
    spdlog::info("queue_id={} no delay notice: {}", qid,
                 e.env->mail_from.empty() ? "null sender" : e.env->is_bounce ? "a DSN itself" : "NOTIFY says no");
    return;
  }
  e.delay_inflight = make_dsn(qid, e, want, queue::DsnKind::kDelayed);  // else: at the next attempt
}

// Writes a DSN for `rcpts` and hands it to the committer; on_dsn() learns how that went.
bool Scheduler::make_dsn(const std::string& qid, Entry& e, const std::vector<size_t>& rcpts, queue::DsnKind kind) {
  const bool delayed = kind == queue::DsnKind::kDelayed;
  std::string original, path = rt_.spool->msg_path(qid);
  if (!queue::Spool::read_message(path, std::min<uint64_t>(kMaxReturnedBytes, e.size), original)) {
    spdlog::warn("queue_id={} cannot read the queue file {} for the DSN", qid, path);
    original.clear();  // the notice goes out without the original attached
  }
  auto cfg = rt_.config.load();
  int64_t t = now();
  std::mt19937_64 rng(std::random_device{}());
  std::string boundary = qid + "." + std::to_string(rng());
  sync_env(e);
  if (!original.empty()) queue::apply_scan_edits(*e.env, original);  // as sent: X-Postern-Scan, the Subject tag
  auto dsn = queue::make_dsn(kind, *e.env, rcpts, original, cfg->hostname, t, boundary,
                             e.received_at + secs(cfg->queue.lifetime));
  dsn.env.queue_id = rt_.spool->new_queue_id();
  std::string received = "Received: by " + cfg->hostname + " (Postern) id " + dsn.env.queue_id + "; " +
                         rfc5322_date(static_cast<std::time_t>(t)) + "\r\n";
  auto w = rt_.spool->open(dsn.env.queue_id);
  if (!w || !w->write(received) || !w->write(dsn.text)) {
    spdlog::error("queue_id={} cannot write the {}; retried later", qid, delayed ? "delay notice" : "DSN");
    return false;
  }
  dsn.env.message_size = w->bytes();
  ++e.dsn_inflight;
  spdlog::info("queue_id={} dsn_queue_id={} sender {} notification to=<{}> rcpts={}", qid, dsn.env.queue_id,
               delayed ? "delay" : kind == queue::DsnKind::kRelayed ? "relayed" : "non-delivery",
               esc(e.env->mail_from), rcpts.size());
  Envelope copy = dsn.env;
  rt_.spool->commit(std::move(w), dsn.env, [this, qid, copy, kind, rcpts](bool ok) {
    std::lock_guard lk(mu_);
    if (closed_) return;  // on disk (or not) either way; the original still says what it owes
    inbox_dsns_.push_back({qid, copy, ok, kind, rcpts});
    uv_async_send(&async_);
  });
  return true;
}

void Scheduler::on_dsn(DsnDone d) {
  const bool delayed = d.kind == queue::DsnKind::kDelayed;
  if (d.ok) {
    rt_.counters.dsns_generated.fetch_add(1);
    add(Envelope(d.dsn));
  } else {
    spdlog::error("queue_id={} dsn_queue_id={} {} could not be queued; retried later", d.orig, d.dsn.queue_id,
                  delayed ? "delay notice" : "DSN");
  }
  auto it = msgs_.find(d.orig);
  if (it == msgs_.end()) return;  // deleted by an admin meanwhile
  Entry& e = it->second;
  if (e.dsn_inflight > 0) --e.dsn_inflight;
  if (delayed) {
    e.delay_inflight = false;
    if (d.ok) e.delay_warned = true;  // else at the next attempt
  } else if (d.ok) {
    for (size_t i : d.rcpts)
      if (i < e.env->rcpts.size()) e.env->rcpts[i].dsn_owed = false;
  } else {
    dsn_retry_.emplace(now() + kDsnRetrySeconds, d.orig);
  }
  if (e.parts == 0 && !pending(*e.env)) {
    if (d.ok) send_owed(d.orig, e);  // recipients that failed meanwhile
    return finish_or_wait(it);
  }
  persist(d.orig, e);
  maybe_cool(e);
}

void Scheduler::retry_dsns(int64_t t) {
  while (!dsn_retry_.empty() && dsn_retry_.begin()->first <= t) {
    std::string qid = dsn_retry_.begin()->second;
    dsn_retry_.erase(dsn_retry_.begin());
    auto it = msgs_.find(qid);
    if (it == msgs_.end() || it->second.dsn_inflight > 0 || !warm(qid, it->second)) continue;
    send_owed(qid, it->second);
    if (it->second.parts == 0 && !pending(*it->second.env)) finish_or_wait(it);
    else maybe_cool(it->second);
  }
}

// --- the tick ----------------------------------------------------------------------------------

void Scheduler::ready_due(int64_t t, size_t& budget) {
  while (!retry_.empty() && retry_.begin()->first <= t && budget > 0) {
    --budget;
    std::string qid = retry_.begin()->second;
    auto it = msgs_.find(qid);
    if (it == msgs_.end()) {
      retry_.erase(retry_.begin());
      continue;
    }
    Entry& e = it->second;
    unschedule(e);
    if (!warm(qid, e)) {  // unreadable for now: later
      e.next_attempt = t + std::max<int64_t>(1, secs(rt_.config.load()->queue.min_backoff));
      schedule_retry(qid, e);
      continue;
    }
    make_ready(qid, e);
    maybe_cool(e);
  }
}

void Scheduler::tick() {
  if (stopped_) return;
  int64_t t = now();
  size_t budget = kMaxReadyPerTick;
  ready_due(t, budget);
  retry_dsns(t);
  for (auto it = dests_.begin(); it != dests_.end();) {
    auto& d = it->second;
    while (!d.cached.empty() && d.cached.front().second < t) d.cached.pop_front();
    if (d.active == 0 && d.waiting.empty() && d.cached.empty()) it = dests_.erase(it);
    else ++it;
  }
  dispatch();
  // More due than one tick reads back: the rest in 10 ms, so a large queue coming due (after
  // an outage, a flush of everything) never holds the control loop for long.
  if (budget == 0) uv_timer_start(&timer_, [](uv_timer_t* h) { static_cast<Scheduler*>(h->data)->tick(); }, 10, 1000);
}

// --- queue tools -------------------------------------------------------------------------------

void Scheduler::fill_info(const std::string& qid, const Entry& e, QueueInfo& q) const {
  q.qid = qid;
  q.received_at = e.received_at;
  q.size = e.size;
  q.attempts = e.attempts;
  q.next_attempt = e.next_attempt;
  q.held = e.held;
  q.in_flight = e.parts > 0;
  if (e.env) {
    q.from = e.env->mail_from;
    q.rcpts = e.env->rcpts;
    return;
  }
  Envelope env;
  std::string err;
  if (rt_.spool->load_envelope(qid, env, err)) {
    q.from = std::move(env.mail_from);
    q.rcpts = std::move(env.rcpts);
  } else {
    spdlog::warn("queue_id={} queue listing: {}", qid, err);
  }
}

QueuePage Scheduler::list(const std::string& after, size_t limit) const {
  QueuePage page;
  page.total = msgs_.size();
  auto it = after.empty() ? msgs_.begin() : msgs_.upper_bound(after);
  for (; it != msgs_.end() && page.msgs.size() < limit; ++it) {
    page.msgs.emplace_back();
    fill_info(it->first, it->second, page.msgs.back());
  }
  if (it != msgs_.end() && !page.msgs.empty()) page.next_after = page.msgs.back().qid;
  return page;
}

bool Scheduler::show(const std::string& qid, QueueInfo& q) const {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return false;
  fill_info(qid, it->second, q);
  return true;
}

bool Scheduler::flush(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end() || it->second.parts > 0 || it->second.held) return false;
  Entry& e = it->second;
  if (!warm(qid, e)) return false;
  if (!pending(*e.env)) {  // only waiting for its DSN
    maybe_cool(e);
    return false;
  }
  unschedule(e);
  e.next_attempt = 0;
  make_ready(qid, e);
  dispatch();
  return true;
}

// Every deferred message is due now; the tick reads them back kMaxReadyPerTick at a time.
size_t Scheduler::flush_all() {
  std::vector<std::string> due;
  for (auto& [t, qid] : retry_) due.push_back(qid);
  for (auto& qid : due) {
    Entry& e = msgs_.find(qid)->second;
    e.next_attempt = 0;
    schedule_retry(qid, e);
  }
  tick();
  return due.size();
}

bool Scheduler::hold(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end()) return false;
  Entry& e = it->second;
  e.held = true;
  unschedule(e);
  persist(qid, e);
  spdlog::info("queue_id={} held", qid);
  maybe_cool(e);
  return true;
}

bool Scheduler::release(const std::string& qid) {
  auto it = msgs_.find(qid);
  if (it == msgs_.end() || !it->second.held) return false;
  Entry& e = it->second;
  e.held = false;
  spdlog::info("queue_id={} released", qid);
  if (e.parts == 0) e.next_attempt = 0;
  persist(qid, e);
  if (e.parts == 0 && e.env && pending(*e.env)) {
    make_ready(qid, e);
    dispatch();
  }
  maybe_cool(e);
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
  erase(it);
  return true;
}

}  // namespace postern::mta
