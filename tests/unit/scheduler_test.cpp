// scheduler_test.cpp — the queue manager on a FakeClock, with a real spool in a temporary
// directory and a fake delivery side that keeps the jobs for the test to answer.
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "base/clock.h"
#include "base/time_format.h"
#include "mta/queue/scheduler.h"
#include "mta/queue/spool.h"

using namespace postern;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using smtp::Outcome;

namespace {

constexpr int64_t kT0 = 1'800'000'000;  // 2027-01-15

struct Job {
  delivery::DeliveryJob job;
  mta::Scheduler::Done done;
};

// One scheduler with its loop, spool and clock. The timer's real-time ticks are harmless: time
// only moves when the test advances the clock.
class Sched {
 public:
  explicit Sched(std::string dir, QueueConfig q = {}) : dir_(std::move(dir)) {
    auto cfg = std::make_shared<Config>();
    cfg->hostname = "mx.test";
    cfg->queue = q;
    cfg->routes["example.test"] = NextHop{"127.0.0.1", 2526, false};
    cfg->routes["remote.example"] = NextHop{"127.0.0.1", 2527, false};
    cfg->outbound.connection_cache_time = 0ms;
    rt.config.publish(cfg);
    rt.clock = &clock;
    open();
  }
  ~Sched() { close(); }

  // A restart: the scheduler and spool go (nothing more is written), new ones recover.
  void restart() {
    close();
    jobs.clear();
    open();
  }

  Envelope queue(std::vector<std::string> rcpts, std::string from = "sender@remote.example") {
    Envelope e;
    e.queue_id = spool->new_queue_id();
    e.mail_from = std::move(from);
    for (auto& r : rcpts) e.rcpts.push_back({r, "", ""});
    e.received_at = clock.unix_seconds();
    auto w = spool->open(e.queue_id);
    std::string msg = "Received: by mx.test; x\r\nSubject: t\r\nMessage-ID: <" + e.queue_id + "@t>\r\n\r\nbody\r\n";
    EXPECT_TRUE(w && w->write(msg));
    e.message_size = w->bytes();
    std::promise<bool> p;
    auto f = p.get_future();
    spool->commit(std::move(w), e, [&p](bool ok) { p.set_value(ok); });
    EXPECT_TRUE(f.get());
    sched->load(e);
    sched->loaded();
    return e;
  }

  // Answers a job: every recipient of every message with `o`.
  void answer(Job& j, Outcome o, const std::string& status, const std::string& diag) {
    delivery::JobResult r;
    r.id = j.job.id;
    r.dest = j.job.dest;
    r.remote = "peer[127.0.0.1]:2526";
    for (auto& m : j.job.msgs) {
      r.qids.push_back(m.qid);
      for (size_t i : m.rcpts) r.results.push_back({m.qid, i, o, status, diag, false});
    }
    j.done(std::move(r));
    pump();
  }
  void answer_last(Outcome o, const std::string& status = "4.3.0", const std::string& diag = "451 4.3.0 later") {
    ASSERT_FALSE(jobs.empty());
    Job j = std::move(jobs.back());
    jobs.pop_back();
    answer(j, o, status, diag);
  }

  // Runs the loop until pred holds (bounded: 5 s).
  template <class F>
  bool pump_until(F pred) {
    for (int i = 0; i < 5000; ++i) {
      uv_run(&loop_, UV_RUN_NOWAIT);
      if (pred()) return true;
      std::this_thread::sleep_for(1ms);
    }
    return pred();
  }
  void pump() {
    for (int i = 0; i < 20; ++i) {
      uv_run(&loop_, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(1ms);
    }
  }
  void advance(std::chrono::seconds d) {
    clock.advance(d);
    sched->tick();
    pump();
  }

  mta::QueueInfo info(const std::string& qid) {
    mta::QueueInfo q;
    EXPECT_TRUE(sched->show(qid, q)) << qid;
    return q;
  }
  Envelope on_disk(const std::string& qid) {
    Envelope e;
    std::string err;
    EXPECT_TRUE(spool->load_envelope(qid, e, err)) << err;
    return e;
  }
  std::string file(const std::string& qid) {
    std::ifstream in(spool->msg_path(qid), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::vector<Job> dsn_jobs() {
    std::vector<Job> out;
    for (auto& j : jobs)
      if (!j.job.msgs.empty() && j.job.msgs[0].env->mail_from.empty()) out.push_back(j);
    return out;
  }

  FakeClock clock{kT0};
  mta::Runtime rt;
  std::atomic<bool> fail_sync{false};
  std::unique_ptr<queue::Spool> spool;
  std::unique_ptr<mta::Scheduler> sched;
  std::vector<Job> jobs;

 private:
  void open() {
    uv_loop_init(&loop_);
    queue::SpoolOptions o;
    o.clock = &clock;
    o.ops.syncfs = [this](int) {
      if (!fail_sync) return 0;  // a temporary directory: durability is not what is tested here
      errno = EIO;
      return -1;
    };
    spool = std::make_unique<queue::Spool>(dir_, o);
    rt.spool = spool.get();
    sched = std::make_unique<mta::Scheduler>(&loop_, rt, 1, [this](size_t, delivery::DeliveryJob j, mta::Scheduler::Done d) {
      jobs.push_back({std::move(j), std::move(d)});
    });
    spool->recover([this](Envelope&& e) { sched->load(std::move(e)); });
    sched->loaded();
  }
  void close() {
    if (!sched) return;
    sched->stop();
    uv_run(&loop_, UV_RUN_DEFAULT);  // the handles close
    spool->stop();
    sched.reset();
    spool.reset();
    uv_loop_close(&loop_);
  }

  std::string dir_;
  uv_loop_t loop_{};
};

std::string tmpdir() {
  auto p = fs::temp_directory_path() / ("postern-sched-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(p);
  return p.string();
}

QueueConfig queue_config(std::chrono::seconds min_backoff, std::chrono::seconds max_backoff,
                         std::chrono::seconds lifetime, std::chrono::seconds delay_warning = 0s) {
  QueueConfig q;
  q.min_backoff = min_backoff;
  q.max_backoff = max_backoff;
  q.lifetime = lifetime;
  q.delay_warning = delay_warning;
  return q;
}

}  // namespace

TEST(Scheduler, RetriesDoubleFromMinBackoffUpToMaxBackoff) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(60s, 400s, 24h));
    auto e = s.queue({"a@example.test"});
    ASSERT_EQ(s.jobs.size(), 1u);  // delivered at once
    s.answer_last(Outcome::kDeferred);
    for (int64_t delay : {60, 120, 240, 400, 400}) {
      auto q = s.info(e.queue_id);
      EXPECT_EQ(q.next_attempt, s.clock.unix_seconds() + delay);
      EXPECT_EQ(s.on_disk(e.queue_id).next_attempt, q.next_attempt);  // written before the wait
      EXPECT_EQ(s.sched->hot_envelopes(), 0u);                         // waiting on disk only
      s.advance(std::chrono::seconds(delay - 1));
      EXPECT_TRUE(s.jobs.empty()) << "retried " << delay << "s early";
      s.advance(1s);
      ASSERT_EQ(s.jobs.size(), 1u) << "not retried after " << delay << "s";
      // Read back from the spool, the job carries the whole envelope.
      EXPECT_EQ(s.jobs[0].job.msgs[0].env->mail_from, "sender@remote.example");
      EXPECT_EQ(s.jobs[0].job.msgs[0].env->rcpts[0].address, "a@example.test");
      s.answer_last(Outcome::kDeferred);
    }
    EXPECT_EQ(s.info(e.queue_id).attempts, 6u);
    EXPECT_EQ(s.rt.counters.rcpts_deferred.load(), 6u);
  }
  fs::remove_all(dir);
}

TEST(Scheduler, LifetimeOverBouncesWith447AndTheLastTryIsAtTheEnd) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(40 * 60s, 40 * 60s, 3600s));
    auto e = s.queue({"a@example.test"});
    s.answer_last(Outcome::kDeferred);  // t0: next at t0+40m
    s.advance(40 * 60s);
    s.answer_last(Outcome::kDeferred);  // t0+40m: next at t0+60m, the end of the lifetime, not t0+80m
    EXPECT_EQ(s.info(e.queue_id).next_attempt, kT0 + 3600);
    s.advance(20 * 60s);
    ASSERT_EQ(s.jobs.size(), 1u);
    s.answer_last(Outcome::kDeferred, "4.4.1", "connect: refused");
    // Expired: one non-delivery DSN to the sender, queued and dispatched; then the original goes.
    ASSERT_TRUE(s.pump_until([&] { return s.dsn_jobs().size() == 1; }));
    auto dsn = s.dsn_jobs()[0].job.msgs[0];
    EXPECT_EQ(dsn.env->rcpts[0].address, "sender@remote.example");
    EXPECT_TRUE(dsn.env->is_bounce);
    EXPECT_EQ(dsn.env->received_at, kT0 + 3600);
    std::string text = s.file(dsn.qid).substr(0, dsn.size);
    EXPECT_NE(text.find("Action: failed\r\nStatus: 4.4.7"), std::string::npos) << text;
    EXPECT_NE(text.find("delivery time expired after 3 attempts; last: connect: refused"), std::string::npos);
    EXPECT_NE(text.find("Date: " + rfc5322_date(kT0 + 3600) + "\r\n"), std::string::npos);  // the clock's date
    EXPECT_NE(text.find("Message-ID: <" + e.queue_id + "@t>"), std::string::npos);          // the original
    EXPECT_FALSE(s.sched->show(e.queue_id, *std::make_unique<mta::QueueInfo>()));
    ASSERT_TRUE(s.pump_until([&] { return !fs::exists(s.spool->msg_path(e.queue_id)); }));
    EXPECT_EQ(s.sched->size(), 1u);  // the DSN
    EXPECT_EQ(s.rt.counters.dsns_generated.load(), 1u);
  }
  fs::remove_all(dir);
}

TEST(Scheduler, DelayWarningOnceAfterQueueDelayWarning) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(3600s, 3600s, 5 * 24h, 2h));
    auto e = s.queue({"a@example.test"});
    s.answer_last(Outcome::kDeferred, "4.2.1", "451 4.2.1 mailbox busy");  // t0
    s.advance(3600s);
    s.answer_last(Outcome::kDeferred, "4.2.1", "451 4.2.1 mailbox busy");  // t0+1h: too early
    s.pump();
    EXPECT_TRUE(s.dsn_jobs().empty());
    s.advance(3600s);
    ASSERT_EQ(s.jobs.size(), 1u);
    s.answer_last(Outcome::kDeferred, "4.2.1", "451 4.2.1 mailbox busy");  // t0+2h: warn
    ASSERT_TRUE(s.pump_until([&] { return s.dsn_jobs().size() == 1; }));
    auto dsn = s.dsn_jobs()[0].job.msgs[0];
    std::string text = s.file(dsn.qid).substr(0, dsn.size);
    EXPECT_NE(text.find("Action: delayed\r\nStatus: 4.2.1"), std::string::npos) << text;
    EXPECT_NE(text.find("Will-Retry-Until: " + rfc5322_date(kT0 + 5 * 86400, true)), std::string::npos) << text;
    EXPECT_TRUE(s.pump_until([&] { return s.on_disk(e.queue_id).delay_warned; }));
    for (auto& j : s.jobs) s.answer(j, Outcome::kDelivered, "2.0.0", "250 ok");  // the DSN goes out
    s.jobs.clear();
    s.advance(3600s);
    s.answer_last(Outcome::kDeferred, "4.2.1", "451 4.2.1 mailbox busy");  // t0+3h: no second warning
    s.pump();
    EXPECT_TRUE(s.dsn_jobs().empty());
    EXPECT_EQ(s.rt.counters.dsns_generated.load(), 1u);
    EXPECT_TRUE(s.sched->show(e.queue_id, *std::make_unique<mta::QueueInfo>()));  // still retried
  }
  fs::remove_all(dir);
}

// The bug: the original was removed as soon as its DSN was handed to the committer, so a DSN
// whose commit failed was lost (only logged).
TEST(Scheduler, AFailedDsnCommitKeepsTheOriginalAndTheDsnIsMadeAgain) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(60s, 60s, 24h));
    auto e = s.queue({"a@example.test"});
    s.fail_sync = true;  // the DSN's commit will fail
    s.answer_last(Outcome::kFailed, "5.1.1", "550 5.1.1 no such user");
    ASSERT_TRUE(s.pump_until([&] { return s.spool->stats().sync_errors >= 1; }));
    s.pump();
    EXPECT_EQ(s.sched->size(), 1u);  // the original, still here
    EXPECT_TRUE(fs::exists(s.spool->msg_path(e.queue_id)));
    EXPECT_TRUE(s.dsn_jobs().empty());
    auto d = s.on_disk(e.queue_id);
    EXPECT_EQ(d.rcpts[0].state, RcptState::kFailed);
    EXPECT_TRUE(d.rcpts[0].dsn_owed);
    s.fail_sync = false;
    s.advance(std::chrono::seconds(mta::Scheduler::kDsnRetrySeconds));
    ASSERT_TRUE(s.pump_until([&] { return s.dsn_jobs().size() == 1; }));
    std::string text = s.file(s.dsn_jobs()[0].job.msgs[0].qid);
    EXPECT_NE(text.find("Status: 5.1.1"), std::string::npos);
    ASSERT_TRUE(s.pump_until([&] { return !fs::exists(s.spool->msg_path(e.queue_id)); }));
    EXPECT_EQ(s.sched->size(), 1u);  // only the DSN now
  }
  fs::remove_all(dir);
}

TEST(Scheduler, AnOwedDsnSurvivesARestart) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(60s, 60s, 24h));
    auto e = s.queue({"a@example.test", "b@example.test"});
    s.fail_sync = true;
    Job j = std::move(s.jobs.back());
    s.jobs.clear();
    delivery::JobResult r;
    r.id = j.job.id;
    r.dest = j.job.dest;
    r.qids = {e.queue_id};
    r.results.push_back({e.queue_id, 0, Outcome::kFailed, "5.1.1", "550 5.1.1 no such user", false});
    r.results.push_back({e.queue_id, 1, Outcome::kDeferred, "4.2.1", "451 4.2.1 busy", false});
    j.done(std::move(r));
    ASSERT_TRUE(s.pump_until([&] { return s.spool->stats().sync_errors >= 1; }));
    ASSERT_TRUE(s.pump_until([&] { return s.on_disk(e.queue_id).rcpts[0].dsn_owed; }));
    s.fail_sync = false;
    s.restart();  // before the DSN retry
    ASSERT_TRUE(s.pump_until([&] { return s.dsn_jobs().size() == 1; }));  // made at start-up
    ASSERT_TRUE(s.pump_until([&] { return !s.on_disk(e.queue_id).rcpts[0].dsn_owed; }));
    EXPECT_EQ(s.on_disk(e.queue_id).rcpts[1].state, RcptState::kPending);  // b is still retried
  }
  fs::remove_all(dir);
}

// NOTIFY=SUCCESS delivered to a next hop without DSN: the "relayed" notice is owed on disk until
// its own commit succeeded (a restart in between makes it at start-up), then the original goes.
TEST(Scheduler, ARelayedNoticeIsOwedDurablyAndSentOnce) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(60s, 60s, 24h));
    Envelope e;
    e.queue_id = s.spool->new_queue_id();
    e.mail_from = "sender@remote.example";
    e.rcpts.push_back({"a@example.test", "SUCCESS", ""});
    e.rcpts.push_back({"b@example.test", "", ""});
    e.received_at = s.clock.unix_seconds();
    auto w = s.spool->open(e.queue_id);
    ASSERT_TRUE(w && w->write("Received: by mx.test; x\r\nSubject: t\r\n\r\nbody\r\n"));
    e.message_size = w->bytes();
    std::promise<bool> p;
    auto f = p.get_future();
    s.spool->commit(std::move(w), e, [&p](bool ok) { p.set_value(ok); });
    ASSERT_TRUE(f.get());
    s.sched->load(e);
    s.sched->loaded();
    ASSERT_EQ(s.jobs.size(), 1u);
    s.fail_sync = true;  // the notice's commit fails the first time
    Job j = std::move(s.jobs.back());
    s.jobs.clear();
    delivery::JobResult r;
    r.id = j.job.id;
    r.dest = j.job.dest;
    r.remote = "peer[127.0.0.1]:2526";
    r.qids = {e.queue_id};
    smtp::RcptResult a{e.queue_id, 0, Outcome::kDelivered, "2.0.0", "250 2.0.0 Ok", false, true};
    smtp::RcptResult b{e.queue_id, 1, Outcome::kDelivered, "2.0.0", "250 2.0.0 Ok", false, false};
    r.results = {a, b};
    j.done(std::move(r));
    ASSERT_TRUE(s.pump_until([&] { return s.spool->stats().sync_errors >= 1; }));
    s.pump();
    auto d = s.on_disk(e.queue_id);
    EXPECT_EQ(d.rcpts[0].state, RcptState::kDelivered);
    EXPECT_TRUE(d.rcpts[0].dsn_owed);
    EXPECT_FALSE(d.rcpts[1].dsn_owed);  // no NOTIFY=SUCCESS: nothing owed
    EXPECT_TRUE(s.dsn_jobs().empty());
    s.fail_sync = false;
    s.restart();
    ASSERT_TRUE(s.pump_until([&] { return s.dsn_jobs().size() == 1; }));
    std::string text = s.file(s.dsn_jobs()[0].job.msgs[0].qid);
    EXPECT_NE(text.find("Action: relayed"), std::string::npos);
    EXPECT_NE(text.find("Final-Recipient: rfc822; a@example.test"), std::string::npos);
    EXPECT_EQ(text.find("Final-Recipient: rfc822; b@example.test"), std::string::npos);
    ASSERT_TRUE(s.pump_until([&] { return !fs::exists(s.spool->msg_path(e.queue_id)); }));
    EXPECT_EQ(s.sched->size(), 1u);  // only the notice
  }
  fs::remove_all(dir);
}

// The bug: results reached the scheduler only when the whole job ended, so after a crash the
// messages the next hop had already taken were sent again.
TEST(Scheduler, RecordedResultsAreOnDiskAtOnceAndNotAppliedTwice) {
  auto dir = tmpdir();
  std::string m1, m2;
  {
    Sched s(dir, queue_config(60s, 60s, 24h));
    QueueConfig q = queue_config(60s, 60s, 24h);
    q.deliver = false;  // queue both, then deliver them in one job
    auto cfg = std::make_shared<Config>(*s.rt.config.load());
    cfg->queue = q;
    s.rt.config.publish(cfg);
    m1 = s.queue({"a@example.test", "b@example.test"}).queue_id;
    m2 = s.queue({"c@example.test"}).queue_id;
    cfg = std::make_shared<Config>(*cfg);
    cfg->queue.deliver = true;
    s.rt.config.publish(cfg);
    s.advance(0s);
    ASSERT_EQ(s.jobs.size(), 1u);
    ASSERT_EQ(s.jobs[0].job.msgs.size(), 2u);
    ASSERT_TRUE(s.jobs[0].job.record);
    auto& rec = s.jobs[0].job.record;
    rec({{m1, 0, Outcome::kDelivered, "2.0.0", "250 ok", false}}, "peer[127.0.0.1]:2526");
    // Partway through m1: a is on disk as delivered already.
    ASSERT_TRUE(s.pump_until([&] { return s.on_disk(m1).rcpts[0].state == RcptState::kDelivered; }));
    EXPECT_EQ(s.on_disk(m1).rcpts[1].state, RcptState::kPending);
    rec({{m1, 1, Outcome::kDelivered, "2.0.0", "250 ok", false}}, "peer[127.0.0.1]:2526");
    // m1 done: retired before the job ends.
    ASSERT_TRUE(s.pump_until([&] { return !fs::exists(s.spool->msg_path(m1)); }));
    EXPECT_FALSE(s.sched->show(m1, *std::make_unique<mta::QueueInfo>()));
    // The job's own result repeats m1's and brings m2's: m1's are not counted again.
    s.answer_last(Outcome::kDelivered, "2.0.0", "250 ok");
    EXPECT_EQ(s.rt.counters.rcpts_delivered.load(), 3u);
    EXPECT_EQ(s.sched->size(), 0u);
  }
  fs::remove_all(dir);
}

TEST(Scheduler, ACrashAfterARecordedResultDoesNotResendIt) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(60s, 60s, 24h));
    auto e = s.queue({"a@example.test", "b@example.test"});
    ASSERT_EQ(s.jobs.size(), 1u);
    s.jobs[0].job.record({{e.queue_id, 0, Outcome::kDelivered, "2.0.0", "250 ok", false}}, "peer");
    ASSERT_TRUE(s.pump_until([&] { return s.on_disk(e.queue_id).rcpts[0].state == RcptState::kDelivered; }));
    s.restart();  // the job never ends: the daemon died
    ASSERT_EQ(s.jobs.size(), 1u);
    EXPECT_EQ(s.jobs[0].job.msgs[0].rcpts, std::vector<size_t>{1});  // only b goes again
  }
  fs::remove_all(dir);
}

TEST(Scheduler, ListPagesInQueueIdOrderFromDisk) {
  auto dir = tmpdir();
  {
    QueueConfig q;
    q.deliver = false;
    Sched s(dir, q);
    std::vector<std::string> ids;
    for (int i = 0; i < 25; ++i) ids.push_back(s.queue({"u" + std::to_string(i) + "@example.test"}).queue_id);
    EXPECT_EQ(s.sched->hot_envelopes(), 0u);  // nothing to deliver: the index only
    std::vector<std::string> seen;
    std::string after;
    for (int page = 0; page < 10; ++page) {
      auto p = s.sched->list(after, 10);
      EXPECT_EQ(p.total, 25u);
      for (auto& m : p.msgs) {
        seen.push_back(m.qid);
        EXPECT_EQ(m.from, "sender@remote.example");  // read back from the spool
        ASSERT_EQ(m.rcpts.size(), 1u);
      }
      if (p.next_after.empty()) break;
      EXPECT_EQ(p.msgs.size(), 10u);
      after = p.next_after;
    }
    EXPECT_EQ(seen, ids);
    EXPECT_TRUE(s.sched->list(ids.back(), 10).msgs.empty());
  }
  fs::remove_all(dir);
}

TEST(Scheduler, AClockJumpIsNoticedAtTheNextTick) {
  auto dir = tmpdir();
  {
    Sched s(dir, queue_config(3600s, 3600s, 24h));
    auto e = s.queue({"a@example.test"});
    s.answer_last(Outcome::kDeferred);
    s.sched->tick();
    EXPECT_TRUE(s.jobs.empty());
    s.clock.set_wall(kT0 + 2 * 86400);  // the wall clock steps two days ahead
    s.sched->tick();
    s.pump();
    ASSERT_EQ(s.jobs.size(), 1u);
    s.answer_last(Outcome::kDeferred);
    ASSERT_TRUE(s.pump_until([&] { return s.dsn_jobs().size() == 1; }));  // and the lifetime is over
    EXPECT_FALSE(s.sched->show(e.queue_id, *std::make_unique<mta::QueueInfo>()));
  }
  fs::remove_all(dir);
}
