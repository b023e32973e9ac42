// What the SMTP session accepts, the queue keeps and reports byte-exact: the session feeding a
// real Spool (write, commit, read back), and the DSN built from its envelope.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <filesystem>
#include <future>

#include "mta/queue/dsn.h"
#include "mta/queue/spool.h"
#include "mta/server/smtp_server_session.h"

using namespace postern;
using namespace postern::smtp;
namespace fs = std::filesystem;

namespace {

// Session hooks over a real spool, committing synchronously.
struct SpoolHooks : SessionHooks {
  queue::Spool& spool;
  std::unique_ptr<queue::SpoolWriter> w;
  std::vector<Envelope> committed;
  SmtpServerSession* session = nullptr;
  explicit SpoolHooks(queue::Spool& s) : spool(s) {}
  std::string new_queue_id() override { return spool.new_queue_id(); }
  std::string rfc5322_date() override { return "Thu, 01 Jan 2026 00:00:00 +0000"; }
  int64_t now_unix() override { return 1767225600; }
  bool disk_below_floor() override { return false; }
  bool begin_message(const Envelope& env) override {
    w = spool.open(env.queue_id);
    return w != nullptr;
  }
  bool write_body(std::string_view b) override { return w && w->write(b); }
  void commit_message(const Envelope& env) override {
    std::promise<bool> p;
    auto f = p.get_future();
    spool.commit(std::move(w), env, [&p](bool ok) { p.set_value(ok); });
    bool ok = f.get();
    if (ok) committed.push_back(env);
    session->commit_done(ok);
  }
  void abort_message() override { w.reset(); }
};

std::string tmpdir() {
  auto p = fs::temp_directory_path() / ("postern-sessq-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(p);
  return p.string();
}

std::shared_ptr<Config> config() {
  auto c = std::make_shared<Config>();
  c->hostname = "mx.test";
  c->relay.domains = {"example.test"};
  c->relay.networks.clear();
  return c;
}

ClientInfo client() {
  ClientInfo ci;
  ci.ip = "192.0.2.7";
  ci.family = AF_INET;
  ci.addr[0] = 192, ci.addr[1] = 0, ci.addr[2] = 2, ci.addr[3] = 7;
  return ci;
}

// One transaction, a reply awaited after each command.
void transact(SmtpServerSession& s, const std::vector<std::string>& cmds, const std::string& body) {
  for (auto& c : cmds) s.feed(c + "\r\n");
  s.feed("DATA\r\n");
  s.feed(body + ".\r\n");
}

}  // namespace

TEST(SessionQueue, Utf8AddressesRoundTripByteExact) {
  const std::string from = "j\xc3\xbcrgen@m\xc3\xbcnchen.example";
  const std::string rcpts[] = {"d\xc3\xb6rte@example.test", "\xf0\x9f\x93\xa7\xe2\x82\xac@example.test",
                               "\"quoted \\\"x\\\" \xe6\x97\xa5\"@example.test"};
  const std::string helo = "h\xc3\xa9llo.example";
  auto dir = tmpdir();
  std::string qid;
  {
    queue::Spool spool(dir);
    SpoolHooks hooks(spool);
    SmtpServerSession s(config(), client(), hooks, false);
    hooks.session = &s;
    transact(s, {"EHLO " + helo, "MAIL FROM:<" + from + "> SMTPUTF8", "RCPT TO:<" + rcpts[0] + ">",
                 "RCPT TO:<" + rcpts[1] + ">", "RCPT TO:<" + rcpts[2] + ">"},
             "Subject: utf8\r\n\r\nhi\r\n");
    std::string out = s.take_output();
    ASSERT_EQ(hooks.committed.size(), 1u) << out;
    qid = hooks.committed[0].queue_id;
    spool.stop();
  }
  queue::Spool again(dir);  // recovery reads the envelope back from the queue file
  auto recovered = again.recover_all();
  ASSERT_EQ(recovered.size(), 1u);
  const Envelope& env = recovered[0];
  EXPECT_EQ(env.queue_id, qid);
  EXPECT_EQ(env.mail_from, from);
  EXPECT_EQ(env.helo, helo);
  ASSERT_EQ(env.rcpts.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(env.rcpts[i].address, rcpts[i]);
  EXPECT_TRUE(env.smtputf8);
  // And straight through the JSON writer and reader.
  Envelope back;
  ASSERT_TRUE(queue::envelope_from_json(queue::envelope_to_json(env), back));
  EXPECT_EQ(back.mail_from, from);
  EXPECT_EQ(back.rcpts[1].address, rcpts[1]);
  again.stop();
  fs::remove_all(dir);
}

TEST(SessionQueue, DsnShowsOrcptAndEnvidDecoded) {
  auto dir = tmpdir();
  queue::Spool spool(dir);
  SpoolHooks hooks(spool);
  SmtpServerSession s(config(), client(), hooks, false);
  hooks.session = &s;
  transact(s, {"EHLO client.example", "MAIL FROM:<a@b.example> ENVID=id+2B1", 
               "RCPT TO:<c@example.test> ORCPT=rfc822;c+2Bfilter@example.test"},
           "Subject: x\r\n\r\nhi\r\n");
  ASSERT_EQ(hooks.committed.size(), 1u) << s.take_output();
  Envelope env = hooks.committed[0];
  EXPECT_EQ(env.rcpts[0].orcpt, "rfc822;c+2Bfilter@example.test");  // kept as given, for ORCPT= downstream
  env.rcpts[0].status = "5.1.1";
  env.rcpts[0].diag = "550 5.1.1 no such user";
  auto d = queue::make_dsn(queue::DsnKind::kFailed, env, {0}, "Subject: x\r\n\r\nhi\r\n", "mx.test",
                           1767225600, "BOUNDARY", 0);
  EXPECT_NE(d.text.find("\r\nOriginal-Recipient: rfc822; c+filter@example.test\r\n"), std::string::npos) << d.text;
  EXPECT_NE(d.text.find("\r\nOriginal-Envelope-Id: id+1\r\n"), std::string::npos) << d.text;
  spool.stop();
  fs::remove_all(dir);
}
