// Tests of the spool's quarantine area (mta/queue/spool.h): a quarantined commit is durable like
// any commit but kept out of recovery; it is listed, released into the active queue (with its
// envelope saying so, and the scan header kept) and deleted. Envelope JSON carries the gate's
// fields.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <future>

#include "mta/queue/spool.h"

using namespace postern;
namespace fs = std::filesystem;

namespace {

std::string tmpdir() {
  auto p = fs::temp_directory_path() / ("postern-quarantine-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(p);
  return p.string();
}

bool commit(queue::Spool& s, const Envelope& env, const std::string& body) {
  auto w = s.open(env.queue_id);
  if (!w || !w->write(body)) return false;
  std::promise<bool> p;
  auto f = p.get_future();
  s.commit(std::move(w), env, [&p](bool ok) { p.set_value(ok); });
  return f.get();
}

Envelope env_for(const std::string& qid, const std::string& quarantined) {
  Envelope e;
  e.queue_id = qid;
  e.mail_from = "a@b.example";
  e.rcpts.push_back({"c@example.test", "", ""});
  e.scan_header = "X-Postern-Scan: clamav/1.4.6; patterns=bundle:1 age=0s; verdict=infected (Eicar-Test-Signature)\r\n";
  e.quarantined = quarantined;
  return e;
}

}  // namespace

TEST(Quarantine, EnvelopeJsonCarriesTheGateFields) {
  auto e = env_for("Q1", "Eicar-Test-Signature");
  e.released_at = 42;
  Envelope back;
  ASSERT_TRUE(queue::envelope_from_json(queue::envelope_to_json(e), back));
  EXPECT_EQ(back.scan_header, e.scan_header);
  EXPECT_EQ(back.quarantined, "Eicar-Test-Signature");
  EXPECT_EQ(back.released_at, 42);
}

TEST(Quarantine, KeptOutOfTheQueueListedReleasedDeleted) {
  auto dir = tmpdir();
  std::string q1, q2, clean;
  {
    queue::Spool s(dir);
    q1 = s.new_queue_id();
    q2 = s.new_queue_id();
    clean = s.new_queue_id();
    ASSERT_TRUE(commit(s, env_for(q1, "Eicar-Test-Signature"), "Subject: one\r\n\r\nbody\r\n"));
    ASSERT_TRUE(commit(s, env_for(q2, "Eicar-Test-Signature"), "Subject: two\r\n\r\nbody\r\n"));
    ASSERT_TRUE(commit(s, env_for(clean, ""), "Subject: clean\r\n\r\nbody\r\n"));
    EXPECT_TRUE(fs::exists(s.quarantine_path(q1)));
    EXPECT_FALSE(fs::exists(s.msg_path(q1)));
  }
  queue::Spool s(dir);
  auto rec = s.recover_all();
  ASSERT_EQ(rec.size(), 1u);  // a quarantined message is never loaded for delivery
  EXPECT_EQ(rec[0].queue_id, clean);
  auto list = s.list_quarantined(100);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].queue_id, q1);
  EXPECT_EQ(list[0].quarantined, "Eicar-Test-Signature");
  EXPECT_EQ(list[0].message_size, std::string("Subject: one\r\n\r\nbody\r\n").size());

  Envelope rel;
  std::string err;
  ASSERT_TRUE(s.release_quarantined(q1, 1767225600, rel, err)) << err;
  EXPECT_TRUE(rel.quarantined.empty());
  EXPECT_EQ(rel.released_at, 1767225600);
  EXPECT_EQ(rel.scan_header, env_for(q1, "").scan_header);
  EXPECT_TRUE(fs::exists(s.msg_path(q1)));
  EXPECT_FALSE(fs::exists(s.quarantine_path(q1)));
  EXPECT_FALSE(s.release_quarantined(q1, 0, rel, err));  // once

  EXPECT_TRUE(s.delete_quarantined(q2, err)) << err;
  EXPECT_FALSE(s.delete_quarantined(q2, err));
  EXPECT_FALSE(s.delete_quarantined("../active/" + clean, err));  // IDs never become paths
  EXPECT_FALSE(s.load_quarantined("..", rel, err));
  EXPECT_TRUE(s.list_quarantined(100).empty());
  Envelope loaded;
  ASSERT_TRUE(s.load_envelope(q1, loaded, err)) << err;  // the released envelope, for the scheduler
  EXPECT_EQ(loaded.released_at, 1767225600);
  s.stop();  // its changes thread may still be writing the released envelope
  std::error_code ec;
  fs::remove_all(dir, ec);
}
