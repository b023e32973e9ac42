// recipient_verifier.cpp — see recipient_verifier.h.
#include "mta/delivery/recipient_verifier.h"

#include <spdlog/spdlog.h>

#include <atomic>

#include "base/log.h"
#include "base/text.h"
#include "mta/connection_host.h"
#include "mta/delivery/outbound_connection.h"
#include "mta/server/inbound_connection.h"

namespace postern::delivery {
namespace {

// Probe jobs are numbered apart from the scheduler's (which count up from 1).
std::atomic<uint64_t> g_next_probe{1ull << 62};

struct ProbeTimer {
  RecipientVerifier* self;
  std::string address;
};

int64_t seconds(std::chrono::milliseconds d) { return std::chrono::duration_cast<std::chrono::seconds>(d).count(); }

// A reply from the next hop itself ("550 5.1.1 ..."), not a reason Postern made up (a loop, a
// server without SMTPUTF8, a lost connection): only such a refusal says the address does not exist.
bool server_refusal(const smtp::RcptResult& r) {
  const std::string& d = r.diag;
  return r.outcome == smtp::Outcome::kFailed && d.size() >= 3 && d[0] == '5' && d[1] >= '0' && d[1] <= '9' &&
         d[2] >= '0' && d[2] <= '9';
}

}  // namespace

// close() ran at the worker's drain, while its loop still ran; by now the loop is gone.
RecipientVerifier::~RecipientVerifier() { *alive_ = false; }

smtp::RcptCheck RecipientVerifier::unreachable(const std::string& why) const {
  if (w_.runtime().config.load()->relay.verify_unreachable_accept) return {smtp::RcptVerdict::kAccept, why};
  return {smtp::RcptVerdict::kDefer, why};
}

smtp::RcptCheck RecipientVerifier::check(const std::string& address, uint64_t conn_id) {
  auto& rt = w_.runtime();
  policy::VerifyCache::Answer a;
  if (rt.verify_cache.get(address, rt.clock->unix_seconds(), a)) {
    rt.counters.verify_cached.fetch_add(1);
    return a.exists ? smtp::RcptCheck{smtp::RcptVerdict::kAccept, ""} : smtp::RcptCheck{smtp::RcptVerdict::kReject, a.detail};
  }
  if (closed_ || w_.draining()) return unreachable("the server is shutting down");
  auto it = probes_.find(address);
  if (it != probes_.end()) {
    // Being asked already: wait with the others, unless that probe's time is up.
    if (!it->second->timer) return unreachable("no answer from the next hop in time");
    it->second->waiters.push_back(conn_id);
    return {smtp::RcptVerdict::kPending, ""};
  }
  if (probes_.size() >= kMaxProbes) {
    rt.counters.verify_unreachable.fetch_add(1);
    return unreachable("too many verifications in progress");
  }
  start_probe(address);
  probes_[address]->waiters.push_back(conn_id);
  return {smtp::RcptVerdict::kPending, ""};
}

void RecipientVerifier::start_probe(const std::string& address) {
  auto cfg = w_.runtime().config.load();
  auto p = std::make_unique<Probe>();
  p->address = address;
  p->timer = new uv_timer_t;
  uv_timer_init(w_.loop(), p->timer);
  p->timer->data = new ProbeTimer{this, address};
  uv_timer_start(p->timer, [](uv_timer_t* t) {
    auto* td = static_cast<ProbeTimer*>(t->data);
    td->self->timed_out(td->address);
  }, static_cast<uint64_t>(cfg->relay.verify_timeout.count()), 0);

  auto env = std::make_shared<Envelope>();
  env->mail_from = cfg->relay.verify_sender;
  env->rcpts.push_back({address, "", ""});
  env->smtputf8 = has_8bit(address);
  env->received_at = w_.runtime().clock->unix_seconds();
  std::string domain = env->rcpts[0].domain();
  auto nh = choose_next_hop(*cfg, domain);
  DeliveryJob job;
  job.id = g_next_probe.fetch_add(1);
  job.dest = nh.key;
  job.domain = domain;
  job.has_route = nh.has_route;
  job.route = nh.route;
  job.tls = nh.tls;
  JobMessage m;
  m.qid = "verify";
  m.env = env;
  m.rcpts = {0};
  m.probe = true;
  job.msgs.push_back(std::move(m));
  spdlog::info("verify job={} to=<{}> dest={} started", job.id, esc(address), esc(nh.key));
  w_.runtime().counters.verify_probes.fetch_add(1);
  probes_[address] = std::move(p);
  std::weak_ptr<bool> alive = alive_;
  std::function<void(JobResult)> done = [this, alive, address](JobResult r) {
    if (auto a = alive.lock(); a && *a) finished(address, r);
  };
  // Started from the loop, not from inside the RCPT that asked: an answer that comes at once
  // (no route, say) must find the session waiting for it. A cached connection to that next hop
  // takes the probe, as it would a delivery.
  auto j = std::make_shared<DeliveryJob>(std::move(job));
  w_.post([this, alive, j, done]() mutable {
    if (auto a = alive.lock(); !a || !*a || closed_) return;
    if (!w_.take_parked(*j, done)) OutboundConnection::start(w_, std::move(*j), std::move(done));
  });
}

void RecipientVerifier::close_timer(Probe& p) {
  if (!p.timer) return;
  uv_timer_stop(p.timer);
  uv_close(reinterpret_cast<uv_handle_t*>(p.timer), [](uv_handle_t* h) {
    delete static_cast<ProbeTimer*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
  });
  p.timer = nullptr;
}

void RecipientVerifier::answer(Probe& p, const smtp::RcptCheck& c) {
  auto waiters = std::move(p.waiters);
  p.waiters.clear();
  for (uint64_t id : waiters)
    if (auto* conn = w_.find_conn(id)) conn->recipient_checked(c);
}

void RecipientVerifier::timed_out(const std::string& address) {
  auto it = probes_.find(address);
  if (it == probes_.end()) return;
  Probe& p = *it->second;
  close_timer(p);
  w_.runtime().counters.verify_unreachable.fetch_add(1);
  spdlog::info("verify to=<{}> no answer within relay.verify_timeout: answered as unreachable; the probe goes on",
               esc(address));
  answer(p, unreachable("no answer from the next hop in time"));
}

void RecipientVerifier::finished(const std::string& address, const JobResult& r) {
  auto it = probes_.find(address);
  if (it == probes_.end()) return;
  std::unique_ptr<Probe> p = std::move(it->second);
  probes_.erase(it);
  close_timer(*p);
  auto& rt = w_.runtime();
  auto cfg = rt.config.load();
  const smtp::RcptResult* res = r.results.empty() ? nullptr : &r.results.front();
  int64_t now = rt.clock->unix_seconds();
  smtp::RcptCheck c;
  std::string remote = r.remote.empty() ? "the next hop" : r.remote;
  if (res && res->outcome == smtp::Outcome::kDelivered) {
    c = {smtp::RcptVerdict::kAccept, ""};
    rt.verify_cache.put(address, {true, "", now + seconds(cfg->relay.verify_positive_ttl)});
  } else if (res && server_refusal(*res)) {
    c = {smtp::RcptVerdict::kReject, remote + " said: " + res->diag};
    rt.verify_cache.put(address, {false, c.detail, now + seconds(cfg->relay.verify_negative_ttl)});
  } else {
    rt.counters.verify_unreachable.fetch_add(1);
    c = unreachable(res ? remote + ": " + res->diag : "no answer from " + remote);
  }
  const char* word = c.verdict == smtp::RcptVerdict::kAccept && res && res->outcome == smtp::Outcome::kDelivered
                         ? "exists"
                     : c.verdict == smtp::RcptVerdict::kReject ? "unknown"
                                                               : "unreachable";
  spdlog::info("verify job={} to=<{}> relay={} result={} ({})", r.id, esc(address), esc(remote), word,
               esc(res ? res->diag : std::string("no result")));
  answer(*p, c);
}

void RecipientVerifier::close() {
  if (closed_) return;
  closed_ = true;
  auto c = unreachable("the server is shutting down");
  for (auto& [addr, p] : probes_) {
    close_timer(*p);
    answer(*p, c);
  }
  // The probes' connections are the worker's outbound connections: drained with the others;
  // their answers find no probe (or no verifier: alive_) and are dropped.
  probes_.clear();
}

}  // namespace postern::delivery
