#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>

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
    // What a crash leaves: a half-written message in tmp/, a .msg renamed without its envelope.
    std::ofstream(dir + "/active/ORPHAN.msg") << "x";
    std::ofstream(dir + "/tmp/LEFT.msg") << "half";
    std::ofstream(dir + "/tmp/LEFT.env") << "{";
  }
  queue::Spool again(dir);
  auto rec = again.recovered();
  std::sort(rec.begin(), rec.end());
  auto want = ids;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(rec, want);
  EXPECT_FALSE(fs::exists(dir + "/active/ORPHAN.msg"));
  EXPECT_TRUE(fs::is_empty(dir + "/tmp"));
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
