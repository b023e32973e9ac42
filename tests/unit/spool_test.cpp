#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <sys/stat.h>

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
  std::vector<std::string> rec;
  for (auto& e : again.recovered()) rec.push_back(e.queue_id);
  std::sort(rec.begin(), rec.end());
  auto want = ids;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(rec, want);
  for (auto& e : again.recovered()) {  // "Subject: N\r\n\r\nbody\r\n": 20 or 21 bytes
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
    ASSERT_EQ(s.recovered().size(), 1u);
    EXPECT_EQ(s.recovered()[0].attempts, 3u);
    EXPECT_EQ(s.recovered()[0].rcpts[0].diag, "451 later");
    EXPECT_EQ(s.recovered()[0].message_size, 17u);
    s.remove(qid);
    ASSERT_TRUE(eventually([&] { return !fs::exists(dir + "/active/" + qid + ".env"); }));
    EXPECT_FALSE(fs::exists(s.msg_path(qid)));
  }
  queue::Spool s(dir);
  EXPECT_TRUE(s.recovered().empty());
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
