// Tests of the sans-IO SMTP server session: state machine, replies, limits, and the
// regression cases (STARTTLS injection, bare-LF smuggling), with input split at every byte.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include "mta/server/smtp_server_session.h"

using namespace postern;
using namespace postern::smtp;

namespace {

struct FakeHooks : SessionHooks {
  bool sync_commit = true;
  bool commit_ok = true;
  bool disk_low = false;
  bool fail_begin = false;
  bool fail_write = false;
  int ids = 0;
  int aborts = 0;
  std::string body;
  std::vector<std::string> committed;  // bodies
  std::vector<Envelope> envs;
  SmtpServerSession* session = nullptr;

  std::string new_queue_id() override { return "Q" + std::to_string(++ids); }
  std::string rfc5322_date() override { return "Thu, 01 Jan 2026 00:00:00 +0000"; }
  int64_t now_unix() override { return 1767225600; }
  bool disk_below_floor() override { return disk_low; }
  bool begin_message(const Envelope&) override {
    body.clear();
    return !fail_begin;
  }
  bool write_body(std::string_view b) override {
    if (fail_write) return false;
    body.append(b);
    return true;
  }
  void commit_message(const Envelope& env) override {
    committed.push_back(body);
    envs.push_back(env);
    if (sync_commit) session->commit_done(commit_ok);
  }
  void abort_message() override { ++aborts; }
};

std::shared_ptr<Config> base_config() {
  auto c = std::make_shared<Config>();
  c->hostname = "mx.test";
  c->relay.domains = {"example.test"};
  c->relay.networks.clear();
  Network n;
  parse_network("10.0.0.0/8", n);
  c->relay.networks.push_back(n);
  c->smtp.max_message_size = 10000;
  c->smtp.max_recipients = 3;
  c->smtp.max_junk_commands = 5;
  return c;
}

ClientInfo client(const char* ip) {
  ClientInfo ci;
  ci.ip = ip;
  ci.family = AF_INET;
  inet_pton(AF_INET, ip, ci.addr);
  return ci;
}

struct Harness {
  FakeHooks hooks;
  std::unique_ptr<SmtpServerSession> s;
  explicit Harness(std::shared_ptr<Config> cfg = base_config(), const char* ip = "192.0.2.7",
                   bool tls = true) {
    s = std::make_unique<SmtpServerSession>(cfg, client(ip), hooks, tls);
    hooks.session = s.get();
  }
  std::string send(std::string_view in) {
    s->feed(in);
    return s->take_output();
  }
  // Splits the input at `cut` and feeds both parts.
  std::string send_split(std::string_view in, size_t cut) {
    s->feed(in.substr(0, cut));
    s->feed(in.substr(cut));
    return s->take_output();
  }
};

std::vector<std::string> codes(const std::string& out) {
  std::vector<std::string> r;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t e = out.find("\r\n", pos);
    std::string line = out.substr(pos, e - pos);
    if (line.size() >= 4 && line[3] == ' ') r.push_back(line.substr(0, 3));
    pos = e + 2;
  }
  return r;
}

const char* kTxn =
    "EHLO client.example\r\n"
    "MAIL FROM:<sender@remote.example> SIZE=100\r\n"
    "RCPT TO:<alice@example.test>\r\n"
    "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.test\r\n"
    "DATA\r\n"
    "Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
    "QUIT\r\n";

}  // namespace

TEST(SmtpSession, FullTransaction) {
  Harness h;
  EXPECT_EQ(h.s->greeting(), "220 mx.test ESMTP Postern\r\n");
  auto out = h.send(kTxn);
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "250", "354", "250", "221"}));
  EXPECT_NE(out.find("250 2.0.0 Ok: queued as Q1"), std::string::npos);
  ASSERT_EQ(h.hooks.committed.size(), 1u);
  const std::string& body = h.hooks.committed[0];
  EXPECT_EQ(body.rfind("Received: from client.example ([192.0.2.7])\r\n\tby mx.test (Postern) with ESMTP id Q1", 0), 0u);
  EXPECT_NE(body.find("\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"), std::string::npos);
  EXPECT_EQ(body.substr(body.size() - 6), "body\r\n");
  auto& env = h.hooks.envs[0];
  EXPECT_EQ(env.mail_from, "sender@remote.example");
  ASSERT_EQ(env.rcpts.size(), 2u);
  EXPECT_EQ(env.rcpts[1].notify, "SUCCESS,FAILURE");
  EXPECT_EQ(env.rcpts[1].orcpt, "rfc822;bob@example.test");
  EXPECT_TRUE(h.s->closed());
}

TEST(SmtpSession, PipelinedInputSplitAtEveryByte) {
  Harness ref;
  std::string want = ref.send(kTxn);
  std::string want_body = ref.hooks.committed.at(0);
  std::string in = kTxn;
  for (size_t cut = 0; cut <= in.size(); ++cut) {
    Harness h;
    EXPECT_EQ(h.send_split(in, cut), want) << "cut at " << cut;
    ASSERT_EQ(h.hooks.committed.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(h.hooks.committed[0], want_body) << "cut at " << cut;
  }
  // And one byte at a time.
  Harness h;
  std::string got;
  for (char c : in) got += h.send(std::string_view(&c, 1));
  EXPECT_EQ(got, want);
}

TEST(SmtpSession, AsyncCommitHoldsPipelinedCommands) {
  Harness h;
  h.hooks.sync_commit = false;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "354"}));
  EXPECT_TRUE(h.s->awaiting_commit());
  EXPECT_FALSE(h.s->wants_input());
  h.s->commit_done(true);
  EXPECT_EQ(codes(h.s->take_output()), (std::vector<std::string>{"250", "250"}));
}

TEST(SmtpSession, CommitFailureIs451) {
  Harness h;
  h.hooks.commit_ok = false;
  auto out = h.send("HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nhi\r\n.\r\n");
  EXPECT_NE(out.find("451 4.3.0"), std::string::npos);
  EXPECT_EQ(out.find("queued as"), std::string::npos);
}

TEST(SmtpSession, DiskFullAtEndOfData) {
  Harness h;
  h.hooks.fail_write = true;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nhi\r\n.\r\n");
  EXPECT_EQ(codes(out).back(), "451");
  EXPECT_TRUE(h.hooks.committed.empty());
  EXPECT_EQ(h.hooks.aborts, 1);
}

TEST(SmtpSession, DiskBelowFloorAtMail) {
  Harness h;
  h.hooks.disk_low = true;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_NE(out.find("452 4.3.1"), std::string::npos);
}

TEST(SmtpSession, StarttlsDiscardsPipelinedPlaintext) {
  Harness h;
  auto out = h.send("EHLO x\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.example>\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "220"}));
  EXPECT_TRUE(h.s->starttls_requested());
  h.s->feed("NOOP\r\n");  // still plaintext before the handshake: ignored
  EXPECT_EQ(h.s->take_output(), "");
  h.s->tls_established("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256);
  EXPECT_EQ(h.s->take_output(), "");  // no reply to the injected RSET/MAIL
  EXPECT_EQ(h.s->state(), State::kInit);
  out = h.send("MAIL FROM:<a@b.example>\r\n");
  EXPECT_NE(out.find("503 5.5.1"), std::string::npos);  // HELO state was reset
  out = h.send("EHLO x\r\n");
  EXPECT_EQ(out.find("STARTTLS"), std::string::npos);
  out = h.send("STARTTLS\r\n");
  EXPECT_NE(out.find("554 5.5.1"), std::string::npos);
}

TEST(SmtpSession, StarttlsRefusedInsideTransaction) {
  Harness h;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\n");
  EXPECT_NE(out.find("503 5.5.1"), std::string::npos);
  EXPECT_FALSE(h.s->starttls_requested());
}

TEST(SmtpSession, BareLfNeverEndsData) {
  const std::string smuggle =
      "EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n"
      "Subject: x\r\n\r\nline\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.test>\r\n"
      "DATA\r\nsmuggled\r\n.\r\n";
  {
    Harness h;  // reject (default): one message, refused with 550 at the real end
    auto out = h.send(smuggle);
    EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "354", "550"}));
    EXPECT_TRUE(h.hooks.committed.empty());
  }
  {
    auto cfg = base_config();
    cfg->smtp.bare_lf = BareLfPolicy::kNormalize;
    Harness h(cfg);
    auto out = h.send(smuggle);
    EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "354", "250"}));
    ASSERT_EQ(h.hooks.committed.size(), 1u);
    EXPECT_NE(h.hooks.committed[0].find("line\r\n.\r\nMAIL FROM:<evil@x.example>"), std::string::npos);
  }
  for (const char* variant : {"\r.\r\n", "\n.\n", "\r\n.\n", "\r\n.\r"}) {
    Harness h;
    std::string in = std::string("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nA") +
                     variant + "B\r\n.\r\n";
    auto out = h.send(in);
    EXPECT_EQ(codes(out).back(), "550") << "variant " << variant;
    EXPECT_EQ(codes(out).size(), 5u);
  }
}

TEST(SmtpSession, SizeLimits) {
  Harness h;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example> SIZE=10001\r\n");
  EXPECT_NE(out.find("552 5.3.4"), std::string::npos);
  out = h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n");
  EXPECT_EQ(codes(out).back(), "354");
  out = h.send(std::string(12000, 'x') + "\r\n.\r\n");
  EXPECT_NE(out.find("552 5.3.4"), std::string::npos);
  EXPECT_TRUE(h.hooks.committed.empty());
  EXPECT_EQ(h.s->state(), State::kReady);
}

TEST(SmtpSession, RecipientLimit) {
  Harness h;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<1@example.test>\r\nRCPT TO:<2@example.test>\r\n"
                    "RCPT TO:<3@example.test>\r\nRCPT TO:<4@example.test>\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "250", "250", "452"}));
  EXPECT_NE(out.find("452 4.5.3"), std::string::npos);
}

TEST(SmtpSession, RelayPolicy) {
  struct Case { const char* ip; const char* rcpt; bool ok; } cases[] = {
      {"192.0.2.7", "<user@example.test>", true},
      {"192.0.2.7", "<User@EXAMPLE.TEST>", true},
      {"192.0.2.7", "<user@other.example>", false},
      {"192.0.2.7", "<user%other.example@example.test>", false},
      {"192.0.2.7", "<other.example!user@example.test>", false},
      {"192.0.2.7", "<\"user@other.example\"@example.test>", false},
      {"192.0.2.7", "<@example.test:user@other.example>", false},
      {"192.0.2.7", "<@other.example:user@example.test>", false},
      {"192.0.2.7", "<user@[192.0.2.1]>", false},
      {"192.0.2.7", "<user@sub.example.test>", false},
      {"192.0.2.7", "<postmaster>", true},
      {"10.1.2.3", "<user@other.example>", true},
      {"10.1.2.3", "<user%other.example@example.test>", true},
  };
  for (auto& c : cases) {
    Harness h(base_config(), c.ip);
    auto out = h.send(std::string("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:") + c.rcpt + "\r\n");
    auto cs = codes(out);
    EXPECT_EQ(cs.back(), c.ok ? "250" : "554") << c.ip << " " << c.rcpt;
    if (!c.ok) {
      EXPECT_NE(out.find("554 5.7.1"), std::string::npos) << c.rcpt;
    }
  }
}

TEST(SmtpSession, Bdat) {
  Harness h;
  std::string msg1 = "Subject: chunked\r\n\r\n";
  std::string msg2 = "line one\r\n.not stuffed\r\n";
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example> BODY=8BITMIME\r\nRCPT TO:<c@example.test>\r\n"
                    "BDAT " + std::to_string(msg1.size()) + "\r\n" + msg1 +
                    "BDAT " + std::to_string(msg2.size()) + " LAST\r\n" + msg2 + "QUIT\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "250", "250", "221"}));
  ASSERT_EQ(h.hooks.committed.size(), 1u);
  EXPECT_NE(h.hooks.committed[0].find("\r\nSubject: chunked\r\n\r\nline one\r\n.not stuffed\r\n"), std::string::npos);
  EXPECT_EQ(h.hooks.envs[0].body, BodyType::k8BitMime);
}

TEST(SmtpSession, BdatWithoutRecipientsConsumesChunk) {
  Harness h;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nBDAT 6 LAST\r\nRSET\r\nNOOP\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "554", "250"}));
  EXPECT_TRUE(h.hooks.committed.empty());
}

TEST(SmtpSession, DataWithoutRecipients) {
  Harness h;
  EXPECT_NE(h.send("EHLO x\r\nDATA\r\n").find("503 5.5.1"), std::string::npos);
  EXPECT_NE(h.send("MAIL FROM:<a@b.example>\r\nDATA\r\n").find("554 5.5.1"), std::string::npos);
}

TEST(SmtpSession, SequenceErrors) {
  Harness h;
  EXPECT_NE(h.send("MAIL FROM:<a@b.example>\r\n").find("503 5.5.1"), std::string::npos);
  EXPECT_NE(h.send("RCPT TO:<a@example.test>\r\n").find("503 5.5.1"), std::string::npos);
  h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_NE(h.send("MAIL FROM:<a@b.example>\r\n").find("503 5.5.1"), std::string::npos);
  EXPECT_NE(h.send("MAIL FROM:<a@b.example> FOO=1\r\n").find("503"), std::string::npos);
}

TEST(SmtpSession, ParameterErrors) {
  struct Case { const char* cmd; const char* code; } cases[] = {
      {"MAIL FROM:<a@b.example> FOO=1", "555 5.5.4"},
      {"MAIL FROM:<a@b.example> BODY=BINARYMIME", "555 5.5.4"},
      {"MAIL FROM:<a@b.example> SIZE=abc", "501 5.5.4"},
      {"MAIL FROM:<a@b.example> RET=ALL", "501 5.5.4"},
      {"MAIL FROM:<a@b.example> ENVID=a=b", "501 5.5.4"},
      {"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", "501 5.5.4"},
      {"MAIL FROM:a@b.example", "501 5.1.7"},
      {"MAIL FROM:<usér@b.example>", "553 5.6.7"},
  };
  for (auto& c : cases) {
    Harness h;
    auto out = h.send(std::string("EHLO x\r\n") + c.cmd + "\r\n");
    EXPECT_NE(out.find(c.code), std::string::npos) << c.cmd << " -> " << out;
  }
  Harness h;
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test> NOTIFY=SOMETIMES\r\n");
  EXPECT_NE(out.find("501 5.5.4"), std::string::npos);
}

TEST(SmtpSession, Smtputf8) {
  Harness h;
  auto out = h.send("EHLO x\r\nMAIL FROM:<usér@b.example> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<dörte@example.test>\r\n"
                    "DATA\r\nSubject: é\r\n\r\nü\r\n.\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "354", "250"}));
  ASSERT_EQ(h.hooks.envs.size(), 1u);
  EXPECT_TRUE(h.hooks.envs[0].smtputf8);
  EXPECT_EQ(h.hooks.envs[0].rcpts[0].address, "dörte@example.test");
  EXPECT_NE(h.hooks.committed[0].find("with UTF8SMTP id"), std::string::npos);
}

TEST(SmtpSession, LineTooLongAndJunkLimit) {
  Harness h;
  auto out = h.send(std::string(5000, 'A') + "\r\n");
  EXPECT_NE(out.find("500 5.5.2 Error: line too long"), std::string::npos);
  EXPECT_LT(h.s->buffered_input(), 3000u);
  for (int i = 0; i < 10 && !h.s->closed(); ++i) out = h.send("BOGUS\r\n");
  EXPECT_TRUE(h.s->closed());
  EXPECT_NE(out.find("421 4.7.0"), std::string::npos);
}

TEST(SmtpSession, CommandLimitBeforeMail) {
  auto cfg = base_config();
  cfg->smtp.max_commands_before_mail = 3;
  Harness h(cfg);
  auto out = h.send("EHLO x\r\nNOOP\r\nNOOP\r\nNOOP\r\n");
  EXPECT_TRUE(h.s->closed());
  EXPECT_NE(out.find("421 4.7.0"), std::string::npos);
}

TEST(SmtpSession, HelpVrfyRsetTimeoutsAndDrain) {
  Harness h;
  EXPECT_NE(h.send("HELP\r\n").find("214 "), std::string::npos);
  EXPECT_NE(h.send("VRFY bob\r\n").find("252 2.5.2"), std::string::npos);
  EXPECT_NE(h.send("EXPN list\r\n").find("502 5.5.1"), std::string::npos);
  h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_NE(h.send("RSET\r\n").find("250 2.0.0"), std::string::npos);
  EXPECT_EQ(h.s->state(), State::kReady);
  h.s->timeout();
  EXPECT_NE(h.s->take_output().find("421 4.4.2"), std::string::npos);
  EXPECT_TRUE(h.s->closed());

  Harness d;
  d.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
  d.s->shutting_down();
  EXPECT_FALSE(d.s->closed());  // finishes the transaction first
  auto out = d.send("RCPT TO:<c@example.test>\r\nDATA\r\nhi\r\n.\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "354", "250", "421"}));
  EXPECT_TRUE(d.s->closed());
}
