#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "mta/queue/spool.h"

using namespace postern;
namespace fs = std::filesystem;

namespace {
std::string tmpdir() {
  auto p = fs::temp_directory_path() / ("postern-spool-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(p);
  return p.string();
}
Envelope env_for(const std::string& qid) {
  Envelope e;
  e.queue_id = qid;
  e.mail_from = "a@b.example";
  e.rcpts.push_back({"c@example.test", "", ""});
  return e;
}
}  // namespace

namespace {
bool commit_one(queue::Spool& s, const std::string& qid, const std::string& body) {
  auto w = s.open(qid);
  if (!w || !w->write(body)) return false;
  std::promise<bool> p;
  auto f = p.get_future();
  s.commit(std::move(w), env_for(qid), [&p](bool ok) { p.set_value(ok); });
  return f.get();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Waits (bounded) until the changes thread has retired or rewritten what it was given.
template <class F>
bool eventually(F f) {
  for (int i = 0; i < 500 && !f(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return f();
}
}  // namespace

TEST(Spool, CommitAndRecover) {
  auto dir = tmpdir();
  std::vector<std::string> ids;
  {
    queue::Spool s(dir);
    std::vector<std::future<bool>> done;
    for (int i = 0; i < 20; ++i) {
      auto qid = s.new_queue_id();
      ids.push_back(qid);
      auto w = s.open(qid);
      ASSERT_TRUE(w);
      ASSERT_TRUE(w->write("Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n"));
      auto p = std::make_shared<std::promise<bool>>();
      done.push_back(p->get_future());
      s.commit(std::move(w), env_for(qid), [p](bool ok) { p->set_value(ok); });
    }
    for (auto& f : done) EXPECT_TRUE(f.get());
    EXPECT_GE(s.stats().messages, 20u);
    // What a crash leaves: a file being written (free-*), a renamed file whose data never
    // reached the disk (no footer), an update being written, the .env of a retired message.
    std::ofstream(dir + "/active/free-HALF") << "half a message";
    std::ofstream(dir + "/active/TORN.msg") << "Subject: x\r\n\r\nno footer";
    std::ofstream(dir + "/active/TORN.env") << "{}";
    std::ofstream(dir + "/active/" + ids[0] + ".env.tmp") << "{";
    std::ofstream(dir + "/active/GONE.env") << "{}";
  }
  queue::Spool again(dir);
  auto recovered = again.recover_all();
  std::vector<std::string> rec;
  for (auto& e : recovered) rec.push_back(e.queue_id);
  std::sort(rec.begin(), rec.end());
  auto want = ids;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(rec, want);
  for (auto& e : recovered) {  // "Subject: N\r\n\r\nbody\r\n": 20 or 21 bytes
    EXPECT_GE(e.message_size, 20u);
    EXPECT_LE(e.message_size, 21u);
  }
  EXPECT_FALSE(fs::exists(dir + "/active/TORN.msg"));
  EXPECT_TRUE(fs::exists(dir + "/corrupt/TORN.msg"));  // never delivered, kept for the admin
  EXPECT_TRUE(fs::exists(dir + "/corrupt/TORN.env"));
  EXPECT_FALSE(fs::exists(dir + "/active/GONE.env"));
  EXPECT_FALSE(fs::exists(dir + "/active/" + ids[0] + ".env.tmp"));
  EXPECT_EQ(again.pool_size(), 1u);  // free-HALF is reused, not deleted
  fs::remove_all(dir);
}

TEST(Spool, QueueFileIsMessageThenEnvelope) {
  auto dir = tmpdir();
  queue::Spool s(dir);
  auto qid = s.new_queue_id();
  ASSERT_TRUE(commit_one(s, qid, "Subject: a\r\n\r\nhello\r\n"));
  std::string file = slurp(s.msg_path(qid));
  EXPECT_TRUE(file.starts_with("Subject: a\r\n\r\nhello\r\n{"));
  Envelope env;
  uint64_t len = 0;
  std::string err;
  ASSERT_TRUE(queue::Spool::read_queue_file(s.msg_path(qid), qid, env, len, err)) << err;
  EXPECT_EQ(len, 21u);
  EXPECT_EQ(env.rcpts.at(0).address, "c@example.test");
  // Under another name (an old occupant of a recycled file), it is not that message.
  EXPECT_FALSE(queue::Spool::read_queue_file(s.msg_path(qid), "OTHER", env, len, err));
  // One flipped byte anywhere: the checksum says so.
  file[3] ^= 1;
  std::ofstream(dir + "/active/FLIP.msg", std::ios::binary) << file;
  EXPECT_FALSE(queue::Spool::read_queue_file(dir + "/active/FLIP.msg", qid, env, len, err));
  EXPECT_NE(err.find("checksum"), std::string::npos) << err;
  fs::remove_all(dir);
}

TEST(Spool, RetiredFilesAreRecycledAndTrimmed) {
  auto dir = tmpdir();
  queue::Spool s(dir);
  auto big = s.new_queue_id();
  ASSERT_TRUE(commit_one(s, big, "Subject: big\r\n\r\n" + std::string(50000, 'b') + "\r\n"));
  struct stat st_big {};
  ASSERT_EQ(::stat(s.msg_path(big).c_str(), &st_big), 0);
  s.remove(big);
  ASSERT_TRUE(eventually([&] { return s.pool_size() == 1; }));
  EXPECT_FALSE(fs::exists(s.msg_path(big)));
  // The next message is written over the retired file, which is cut to its new length.
  auto small = s.new_queue_id();
  ASSERT_TRUE(commit_one(s, small, "Subject: small\r\n\r\nx\r\n"));
  struct stat st_small {};
  ASSERT_EQ(::stat(s.msg_path(small).c_str(), &st_small), 0);
  EXPECT_EQ(st_small.st_ino, st_big.st_ino);
  EXPECT_LT(st_small.st_size, 1000);
  EXPECT_EQ(s.pool_size(), 0u);
  Envelope env;
  uint64_t len = 0;
  std::string err;
  ASSERT_TRUE(queue::Spool::read_queue_file(s.msg_path(small), small, env, len, err)) << err;
  EXPECT_EQ(slurp(s.msg_path(small)).substr(0, len), "Subject: small\r\n\r\nx\r\n");
  fs::remove_all(dir);
}

TEST(Spool, EnvelopeUpdatesOverrideAndAreRemovedWithTheMessage) {
  auto dir = tmpdir();
  std::string qid;
  {
    queue::Spool s(dir);
    qid = s.new_queue_id();
    ASSERT_TRUE(commit_one(s, qid, "Subject: u\r\n\r\nx\r\n"));
    Envelope e = env_for(qid);
    e.attempts = 3;
    e.rcpts[0].state = RcptState::kPending;
    e.rcpts[0].diag = "451 later";
    s.update(e);
    ASSERT_TRUE(eventually([&] { return fs::exists(dir + "/active/" + qid + ".env"); }));
  }
  {
    queue::Spool s(dir);
    auto rec = s.recover_all();
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0].attempts, 3u);
    EXPECT_EQ(rec[0].rcpts[0].diag, "451 later");
    EXPECT_EQ(rec[0].message_size, 17u);
    s.remove(qid);
    ASSERT_TRUE(eventually([&] { return !fs::exists(dir + "/active/" + qid + ".env"); }));
    EXPECT_FALSE(fs::exists(s.msg_path(qid)));
  }
  queue::Spool s(dir);
  EXPECT_TRUE(s.recover_all().empty());
  fs::remove_all(dir);
}

TEST(Spool, TrimPoolGivesTheSpaceBack) {
  auto dir = tmpdir();
  queue::Spool s(dir);
  auto qid = s.new_queue_id();
  ASSERT_TRUE(commit_one(s, qid, "Subject: t\r\n\r\n" + std::string(20000, 'x') + "\r\n"));
  s.remove(qid);
  ASSERT_TRUE(eventually([&] { return s.pool_size() == 1; }));
  EXPECT_EQ(s.trim_pool(), 1u);
  EXPECT_EQ(s.pool_size(), 0u);
  EXPECT_TRUE(fs::is_empty(dir + "/active"));
  fs::remove_all(dir);
}

TEST(Spool, AbandonedWriterReturnsItsFile) {
  auto dir = tmpdir();
  queue::Spool s(dir);
  {
    auto w = s.open(s.new_queue_id());
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write("Subject: never finished\r\n"));
  }  // the client went away mid-DATA
  EXPECT_EQ(s.pool_size(), 1u);
  auto qid = s.new_queue_id();
  ASSERT_TRUE(commit_one(s, qid, "S: 1\r\n\r\n"));
  EXPECT_EQ(s.pool_size(), 0u);
  size_t files = 0;
  for (auto& e : fs::directory_iterator(dir + "/active")) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  fs::remove_all(dir);
}

TEST(Spool, UniqueIds) {
  auto dir = tmpdir();
  queue::Spool s(dir);
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) EXPECT_TRUE(seen.insert(s.new_queue_id()).second);
  fs::remove_all(dir);
}

TEST(Spool, EnvelopeJsonRoundTrip) {
  Envelope e = env_for("ABC");
  e.smtputf8 = true;
  e.body = BodyType::k8BitMime;
  e.rcpts.push_back({"dörte@example.test", "NEVER", "rfc822;x"});
  Envelope back;
  ASSERT_TRUE(queue::envelope_from_json(queue::envelope_to_json(e), back));
  EXPECT_EQ(back.rcpts.size(), 2u);
  EXPECT_EQ(back.rcpts[1].address, "dörte@example.test");
  EXPECT_TRUE(back.smtputf8);
  EXPECT_FALSE(queue::envelope_from_json("{nope", back));
}

// --- durability: write-back errors (issue 9) -----------------------------------------------------

namespace {
// syncfs as Linux >= 5.8 reports write-back errors: once per open file description. An error
// "happens" with inject(); every descriptor that has not seen it yet gets EIO once.
struct ErrseqFs {
  std::mutex mu;
  uint64_t seq = 0;
  std::map<int, uint64_t> seen;
  int calls = 0;
  void inject() {
    std::lock_guard lk(mu);
    ++seq;
  }
  int syncfs(int fd) {
    std::lock_guard lk(mu);
    ++calls;
    if (seen[fd] < seq) {
      seen[fd] = seq;
      errno = EIO;
      return -1;
    }
    return 0;
  }
};

queue::SpoolOptions errseq_options(ErrseqFs& fs) {
  queue::SpoolOptions o;
  o.ops.syncfs = [&fs](int fd) { return fs.syncfs(fd); };
  o.kernel_release = "6.1.0";
  return o;
}

bool commit_writer(queue::Spool& s, std::unique_ptr<queue::SpoolWriter> w) {
  std::string qid = w->queue_id();
  std::promise<bool> p;
  auto f = p.get_future();
  s.commit(std::move(w), env_for(qid), [&p](bool ok) { p.set_value(ok); });
  return f.get();
}

std::set<std::string> recovered_ids(const std::string& dir) {
  queue::Spool s(dir, [] {
    queue::SpoolOptions o;
    o.ops.syncfs = [](int) { return 0; };
    return o;
  }());
  std::set<std::string> ids;
  for (auto& e : s.recover_all()) ids.insert(e.queue_id);
  return ids;
}
}  // namespace

// The bug: the envelope rewrites, the retirement flushes and the commit shared one descriptor
// for syncfs, so whichever synced first after a write-back error took the EIO, and a batch
// committed after it was acknowledged although its sync had not been clean.
TEST(SpoolDurability, ASyncErrorSeenByAnotherCallerStillFailsTheCommit) {
  auto dir = tmpdir();
  ErrseqFs efs;
  std::string m0, m1, m2;
  {
    queue::Spool s(dir, errseq_options(efs));
    m0 = s.new_queue_id();
    ASSERT_TRUE(commit_one(s, m0, "Subject: 0\r\n\r\nx\r\n"));
    efs.inject();
    // Two envelope rewrites: the changes thread syncs them with one syncfs, which sees the error.
    Envelope a = env_for(m0), b = env_for("OTHER");
    a.attempts = 1;
    b.attempts = 1;
    s.update(a);
    s.update(b);
    ASSERT_TRUE(eventually([&] { return s.stats().sync_errors >= 1; }));
    m1 = s.new_queue_id();
    EXPECT_FALSE(commit_one(s, m1, "Subject: 1\r\n\r\nx\r\n"));  // the commit's own descriptor reports it
    m2 = s.new_queue_id();
    EXPECT_TRUE(commit_one(s, m2, "Subject: 2\r\n\r\nx\r\n"));  // and then a clean sync again
    EXPECT_FALSE(fs::exists(s.msg_path(m1)));
  }
  EXPECT_EQ(recovered_ids(dir), (std::set<std::string>{m0, m2}));
  fs::remove_all(dir);
}

// A message being written when a sync failed may be the one whose pages were lost; the commit's
// next syncfs does not report that error again. It is refused, and so is every message opened
// before the error, until messages opened after it commit on a clean sync.
TEST(SpoolDurability, MessagesWrittenBeforeASyncErrorAreNotAcknowledged) {
  auto dir = tmpdir();
  ErrseqFs efs;
  queue::Spool s(dir, errseq_options(efs));
  auto early = s.open(s.new_queue_id());
  ASSERT_TRUE(early && early->write("Subject: early\r\n\r\nx\r\n"));
  efs.inject();
  EXPECT_FALSE(commit_one(s, s.new_queue_id(), "Subject: b\r\n\r\nx\r\n"));  // this batch's sync fails
  EXPECT_EQ(s.stats().sync_errors, 1u);
  std::string early_id = early->queue_id();
  EXPECT_FALSE(commit_writer(s, std::move(early)));  // clean sync, but written across the error
  EXPECT_FALSE(fs::exists(s.msg_path(early_id)));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(commit_one(s, s.new_queue_id(), "Subject: after\r\n\r\nx\r\n"));
  fs::remove_all(dir);
}

TEST(SpoolDurability, FileModeFailsTheFileWhoseSyncFailed) {
  auto dir = tmpdir();
  std::atomic<bool> fail{false};
  queue::SpoolOptions o;
  o.sync = queue::SyncMode::kFile;
  o.kernel_release = "5.4.0";  // per-file sync works on any kernel
  o.ops.syncfs = [](int) -> int { ADD_FAILURE() << "syncfs in file mode"; return 0; };
  o.ops.fdatasync = [&fail](int fd) {
    if (fail) {
      errno = EIO;
      return -1;
    }
    return ::fdatasync(fd);
  };
  queue::Spool s(dir, o);
  fail = true;
  auto bad = s.new_queue_id();
  EXPECT_FALSE(commit_one(s, bad, "Subject: bad\r\n\r\nx\r\n"));
  fail = false;
  auto good = s.new_queue_id();
  EXPECT_TRUE(commit_one(s, good, "Subject: good\r\n\r\nx\r\n"));
  EXPECT_FALSE(fs::exists(s.msg_path(bad)));
  EXPECT_TRUE(fs::exists(s.msg_path(good)));
  fs::remove_all(dir);
}

TEST(SpoolDurability, RefusesAKernelWhoseSyncfsHidesErrors) {
  EXPECT_FALSE(queue::Spool::syncfs_reports_errors("5.4.0-150-generic"));
  EXPECT_FALSE(queue::Spool::syncfs_reports_errors("4.19.0-26-amd64"));
  EXPECT_FALSE(queue::Spool::syncfs_reports_errors("5.7.19"));
  EXPECT_TRUE(queue::Spool::syncfs_reports_errors("5.8.0"));
  EXPECT_TRUE(queue::Spool::syncfs_reports_errors("5.10.0-28-amd64"));
  EXPECT_TRUE(queue::Spool::syncfs_reports_errors("6.1.0-13-amd64"));
  EXPECT_FALSE(queue::Spool::syncfs_reports_errors("garbage"));
  auto dir = tmpdir();
  queue::SpoolOptions o;
  o.kernel_release = "5.4.0";
  try {
    queue::Spool s(dir, o);
    ADD_FAILURE() << "started on Linux 5.4 with syncfs";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("queue.sync = \"file\""), std::string::npos) << e.what();
  }
  o.sync = queue::SyncMode::kFile;
  EXPECT_NO_THROW(queue::Spool(dir, o));
  fs::remove_all(dir);
}

// --- reading envelopes back, queue IDs --------------------------------------------------------------

TEST(Spool, LoadEnvelopeSeesAnUpdateNotYetOnDisk) {
  auto dir = tmpdir();
  std::atomic<bool> slow{false};
  queue::SpoolOptions o;
  o.ops.fdatasync = [&slow](int fd) {
    for (int i = 0; i < 100 && slow; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return ::fdatasync(fd);
  };
  queue::Spool s(dir, o);
  auto qid = s.new_queue_id();
  ASSERT_TRUE(commit_one(s, qid, "Subject: l\r\n\r\nx\r\n"));
  Envelope back;
  std::string err;
  ASSERT_TRUE(s.load_envelope(qid, back, err)) << err;  // the one stored with the message
  EXPECT_EQ(back.attempts, 0u);
  slow = true;  // the rewrite is stuck in fdatasync for a while
  Envelope e = env_for(qid);
  e.attempts = 5;
  e.rcpts[0].state = RcptState::kDelivered;
  s.update(e);
  ASSERT_TRUE(s.load_envelope(qid, back, err)) << err;
  EXPECT_EQ(back.attempts, 5u);
  EXPECT_EQ(back.rcpts[0].state, RcptState::kDelivered);
  EXPECT_FALSE(fs::exists(dir + "/active/" + qid + ".env"));
  slow = false;
  ASSERT_TRUE(eventually([&] { return fs::exists(dir + "/active/" + qid + ".env"); }));
  ASSERT_TRUE(s.load_envelope(qid, back, err)) << err;
  EXPECT_EQ(back.attempts, 5u);
  EXPECT_FALSE(s.load_envelope("NOSUCH", back, err));
  fs::remove_all(dir);
}

TEST(Spool, QueueIdsOnlyMoveForwardWhateverTheClockDoes) {
  auto dir = tmpdir();
  FakeClock clock(1'800'000'000);
  queue::SpoolOptions o;
  o.clock = &clock;
  std::string last;
  {
    queue::Spool s(dir, o);
    for (int i = 0; i < 100; ++i) {
      if (i == 50) clock.set_wall(1'799'000'000);  // the clock steps back
      auto id = s.new_queue_id();
      EXPECT_GT(id, last);
      last = id;
    }
    ASSERT_TRUE(commit_one(s, last, "Subject: q\r\n\r\nx\r\n"));
  }
  clock.set_wall(1'700'000'000);  // and is even further back after a restart
  queue::Spool s(dir, o);
  EXPECT_GT(s.new_queue_id(), last);
  fs::remove_all(dir);
}
