// Tests of the sans-IO SMTP server session: state machine, replies, limits, and the
// regression cases (STARTTLS injection, bare-LF smuggling), with input split at every byte.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <map>

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
  // Recipient verification: answers from `verdicts` by address (default kAccept); kPending
  // records the address for a later recipient_checked().
  std::map<std::string, RcptCheck> verdicts;
  std::vector<std::string> checked;
  RcptCheck check_recipient(const std::string& address) override {
    checked.push_back(address);
    auto it = verdicts.find(address);
    return it == verdicts.end() ? RcptCheck{} : it->second;
  }
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
  // Most tests feed a whole session in one piece to cut it at every byte; the pipelining rule
  // (on by default) has its own tests below, with default_config().
  c->smtp.forbid_unauth_pipelining = false;
  return c;
}

std::shared_ptr<Config> default_config() {
  auto c = base_config();
  c->smtp.forbid_unauth_pipelining = Config{}.smtp.forbid_unauth_pipelining;
  return c;
}

ClientInfo client(const char* ip) {
  ClientInfo ci;
  ci.ip = ip;
  ci.family = AF_INET;
  inet_pton(AF_INET, ip, ci.addr);
  return ci;
}

ClientInfo client6(const char* ip) {
  ClientInfo ci;
  ci.ip = ip;
  ci.family = AF_INET6;
  inet_pton(AF_INET6, ip, ci.addr);
  return ci;
}

struct Harness {
  FakeHooks hooks;
  std::unique_ptr<SmtpServerSession> s;
  explicit Harness(std::shared_ptr<Config> cfg = base_config(), const char* ip = "192.0.2.7",
                   bool tls = true, bool hold_greeting = false) {
    s = std::make_unique<SmtpServerSession>(cfg, client(ip), hooks, tls, hold_greeting);
    hooks.session = s.get();
  }
  Harness(std::shared_ptr<Config> cfg, ClientInfo ci) {
    s = std::make_unique<SmtpServerSession>(cfg, std::move(ci), hooks, true);
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

// The error limit counts errors since the last accepted message (Postfix's
// smtpd_hard_error_limit): a client whose refused recipients add up over several messages, or a
// relay test that tries sixteen recipients one transaction each, is not cut off for it.
TEST(SmtpSession, ErrorLimitStartsAgainAfterAnAcceptedMessage) {
  Harness h;  // max_junk_commands = 5
  h.send("EHLO x\r\n");
  auto refused = [&](int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += h.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<z@elsewhere.test>\r\nRSET\r\n");
    return out;
  };
  EXPECT_EQ(refused(4).find("421"), std::string::npos);
  auto out = h.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
  EXPECT_NE(out.find("250 2.0.0 Ok: queued as"), std::string::npos) << out;
  EXPECT_EQ(refused(5).find("421"), std::string::npos);  // 4 + 5 > 5, but 4 were before the message
  EXPECT_FALSE(h.s->closed());
  EXPECT_NE(refused(1).find("421 4.7.0"), std::string::npos);
  EXPECT_TRUE(h.s->closed());
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

// --- issue 9: what reaches the envelope, pipelining, greeting pause, message limits ----------

namespace {

// One session, commands one at a time as a client that waits for each reply does.
std::vector<std::string> each(Harness& h, const std::vector<std::string>& lines) {
  std::vector<std::string> r;
  for (auto& l : lines) {
    auto cs = codes(h.send(l));
    r.push_back(cs.empty() ? "" : cs.back());
  }
  return r;
}

// Sends a message through DATA (dot-stuffing the content) or BDAT, one reply at a time.
std::string deliver(Harness& h, const std::string& content, bool bdat = false, size_t chunk = 4096) {
  h.send("EHLO client.example\r\n");
  h.send("MAIL FROM:<a@b.example>\r\n");
  h.send("RCPT TO:<c@example.test>\r\n");
  if (!bdat) {
    if (codes(h.send("DATA\r\n")).back() != "354") return "no 354";
    std::string stuffed;
    size_t pos = 0;
    while (pos < content.size()) {
      size_t e = content.find("\r\n", pos);
      e = e == std::string::npos ? content.size() : e + 2;
      if (content[pos] == '.') stuffed += '.';
      stuffed.append(content, pos, e - pos);
      pos = e;
    }
    return h.send(stuffed + ".\r\n");
  }
  std::string out;
  for (size_t pos = 0; pos < content.size() || pos == 0; pos += chunk) {
    std::string part = content.substr(pos, chunk);
    bool last = pos + chunk >= content.size();
    out = h.send("BDAT " + std::to_string(part.size()) + (last ? " LAST" : "") + "\r\n" + part);
    if (last) break;
  }
  return out;
}

// The stored message without the Received: header Postern put on top.
std::string stored_content(const FakeHooks& hooks) {
  const std::string& m = hooks.committed.at(0);
  size_t pos = 0;
  for (;;) {  // Received: and its continuation lines
    size_t e = m.find("\r\n", pos);
    pos = e + 2;
    if (pos >= m.size() || (m[pos] != ' ' && m[pos] != '\t')) break;
  }
  return m.substr(pos);
}

}  // namespace

TEST(SmtpSession, ControlCharactersNeverReachTheEnvelope) {
  // A backslash in a quoted local part used to skip the control check: CR or NUL went into the
  // envelope, then into the downstream MAIL/RCPT lines and the DSN's To:.
  struct Case { std::string cmd; std::string code; } cases[] = {
      {std::string("MAIL FROM:<\"a\\\rb\"@remote.example>"), "500"},
      {std::string("MAIL FROM:<\"a\\") + '\0' + "b\"@remote.example>", "500"},
      {std::string("MAIL FROM:<\"a\\\x7f\"@remote.example>"), "500"},
      {std::string("MAIL FROM:<a\x01@remote.example>"), "500"},
      {std::string("MAIL FROM:<\"a\\\xc3\xa9\"@remote.example> SMTPUTF8"), "501"},  // quoted-pair is ASCII
      {std::string("MAIL FROM:<\"a\\\\b\"@remote.example>"), "250"},                 // an escaped backslash
      {std::string("MAIL FROM:<\"a\\\"b\"@remote.example>"), "250"},                 // an escaped quote
  };
  for (auto& c : cases) {
    Harness h;
    auto out = h.send("EHLO x\r\n" + c.cmd + "\r\n");
    EXPECT_EQ(codes(out).back(), c.code) << c.cmd;
  }
  Harness h;
  auto out = h.send(std::string("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<\"x\\") + '\0' +
                    "\"@example.test>\r\nRCPT TO:<\"x\\\ry\"@example.test>\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "500", "500"}));
  // And the parser alone (smtp_syntax) refuses what the line check would let through to it.
  EXPECT_EQ(parse_path_arg(std::string("FROM:<\"a\\") + '\0' + "\"@b.example>", "FROM", false).error,
            PathError::kSyntax);
  EXPECT_EQ(parse_path_arg("FROM:<\"a\\\tb\"@b.example>", "FROM", false).error, PathError::kSyntax);
}

TEST(SmtpSession, Smtputf8AddressesMustBeWellFormed) {
  struct Case { const char* addr; bool ok; } cases[] = {
      {"d\xc3\xb6rte@example.test", true},                  // ö
      {"\xf0\x9f\x93\xa7@example.test", true},              // U+1F4E7, four octets
      {"\xe6\x97\xa5\xe6\x9c\xac@\xe4\xbe\x8b.test", false},  // valid, but not our domain: 554
      {"\xff\xfe@example.test", false},                     // not UTF-8
      {"\xc3@example.test", false},                         // truncated sequence
      {"\xc0\xaf@example.test", false},                     // overlong "/"
      {"\xed\xa0\x80@example.test", false},                 // a surrogate
      {"\xf4\x90\x80\x80@example.test", false},             // above U+10FFFF
      {"a\xc2\x85@example.test", false},                    // C1 control NEL
  };
  for (auto& c : cases) {
    Harness h;
    auto out = h.send(std::string("EHLO x\r\nMAIL FROM:<s@b.example> SMTPUTF8\r\nRCPT TO:<") + c.addr +
                      ">\r\nDATA\r\nSubject: u\r\n\r\nx\r\n.\r\n");
    if (c.ok) {
      ASSERT_EQ(h.hooks.envs.size(), 1u) << c.addr << out;
      EXPECT_EQ(h.hooks.envs[0].rcpts[0].address, c.addr);  // byte-exact
    } else {
      EXPECT_TRUE(h.hooks.envs.empty()) << c.addr;
    }
  }
  Harness h;  // the same for the sender
  auto out = h.send("EHLO x\r\nMAIL FROM:<\xff@b.example> SMTPUTF8\r\n");
  EXPECT_NE(out.find("501 5.1.7"), std::string::npos) << out;
  Harness g;  // and HELO, which goes into the envelope too
  EXPECT_NE(g.send("EHLO \xff\xfe\r\n").find("501 5.5.4"), std::string::npos);
  EXPECT_EQ(codes(g.send("EHLO xn--bcher-kva.example\r\n")).back(), "250");
}

TEST(SmtpSession, OrcptAndEnvidDecodeToPrintableAscii) {
  struct Case { const char* param; const char* code; } cases[] = {
      {"RCPT TO:<c@example.test> ORCPT=rfc822;c+2Bx@example.test", "250"},
      {"RCPT TO:<c@example.test> ORCPT=rfc822;c+0D+0ABcc:x@example.test", "501"},  // CR LF inside
      {"RCPT TO:<c@example.test> ORCPT=rfc822;c+00@example.test", "501"},
      {"RCPT TO:<c@example.test> ORCPT=rfc822;c+C3+A9@example.test", "501"},  // 8-bit: not rfc822
      {"RCPT TO:<c@example.test> ORCPT=rfc822;", "501"},
  };
  for (auto& c : cases) {
    Harness h;
    auto out = h.send(std::string("EHLO x\r\nMAIL FROM:<a@b.example>\r\n") + c.param + "\r\n");
    EXPECT_EQ(codes(out).back(), c.code) << c.param;
  }
  Harness h;
  EXPECT_EQ(codes(h.send("EHLO x\r\nMAIL FROM:<a@b.example> ENVID=x+0D+0Ay\r\n")).back(), "501");
  EXPECT_EQ(codes(h.send("MAIL FROM:<a@b.example> ENVID=x+C3+A9\r\n")).back(), "501");
  EXPECT_EQ(codes(h.send("MAIL FROM:<a@b.example> ENVID=x+2By\r\n")).back(), "250");
}

TEST(SmtpSession, ReceivedNamesAnIpv6ClientAsAnAddressLiteral) {
  Harness h(base_config(), client6("2001:db8::7"));
  h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nhi\r\n.\r\n");
  ASSERT_EQ(h.hooks.committed.size(), 1u);
  EXPECT_EQ(h.hooks.committed[0].rfind("Received: from x ([IPv6:2001:db8::7])\r\n", 0), 0u)
      << h.hooks.committed[0].substr(0, 80);
}

TEST(SmtpSession, ImproperPipeliningIsRefused) {
  // Input waiting behind a command that must be the last of its group: 554 5.5.0, closed.
  struct Case { const char* first; const char* then; } cases[] = {
      {"", "EHLO x\r\nMAIL FROM:<a@b.example>\r\n"},
      {"", "HELO x\r\nMAIL FROM:<a@b.example>\r\n"},
      {"", "NOOP\r\nNOOP\r\n"},
      {"EHLO x\r\n", "NOOP\r\nRSET\r\n"},
      {"EHLO x\r\n", "VRFY a\r\nRSET\r\n"},
      {"EHLO x\r\n", "STARTTLS\r\nRSET\r\n"},
      {"EHLO x\r\n", "QUIT\r\nRSET\r\n"},
      {"EHLO x\r\n", "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nSubject: early\r\n"},
      {"HELO x\r\n", "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\n"},  // no PIPELINING without EHLO
  };
  for (auto& c : cases) {
    Harness h(default_config());
    if (*c.first) {
      ASSERT_EQ(codes(h.send(c.first)).back(), "250");
    }
    auto out = h.send(c.then);
    EXPECT_NE(out.find("554 5.5.0"), std::string::npos) << c.first << c.then << " -> " << out;
    EXPECT_TRUE(h.s->closed()) << c.then;
    EXPECT_TRUE(h.s->improper_pipelining()) << c.then;
    EXPECT_FALSE(h.s->starttls_requested());
    EXPECT_EQ(out.find("354"), std::string::npos);
    EXPECT_TRUE(h.hooks.committed.empty());
  }
}

TEST(SmtpSession, LegitimatePipeliningIsServed) {
  Harness h(default_config());
  EXPECT_EQ(codes(h.send("EHLO x\r\n")).back(), "250");
  // RFC 2920: MAIL, RCPT ... DATA in one group; after 354 the content, then "." and QUIT together
  // (the example of RFC 2920 section 4).
  auto out = h.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nRCPT TO:<d@example.test>\r\nDATA\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "354"}));
  out = h.send("Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.test>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "250", "250", "221"}));
  EXPECT_EQ(h.hooks.committed.size(), 2u);
  EXPECT_FALSE(h.s->improper_pipelining());
}

TEST(SmtpSession, ImproperPipeliningCountedWhenAllowed) {
  Harness h;  // forbid_unauth_pipelining = false: served as before, and still flagged
  auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250"}));
  EXPECT_TRUE(h.s->improper_pipelining());
  // STARTTLS with input behind it, allowed: 220, and the input is thrown away (CVE-2011-0411).
  Harness t;
  out = t.send("EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "220"}));
  EXPECT_TRUE(t.s->starttls_requested());
}

TEST(SmtpSession, GreetingPause) {
  {
    Harness h(default_config(), "192.0.2.7", true, /*hold_greeting=*/true);
    EXPECT_TRUE(h.s->greeting_held());
    EXPECT_EQ(h.s->state(), State::kPreGreet);
    EXPECT_EQ(h.s->take_output(), "");
    EXPECT_TRUE(h.s->wants_input());
    h.s->release_greeting();
    EXPECT_EQ(h.s->take_output(), "220 mx.test ESMTP Postern\r\n");
    EXPECT_FALSE(h.s->greeting_held());
    EXPECT_EQ(each(h, {"EHLO x\r\n", "MAIL FROM:<a@b.example>\r\n"}), (std::vector<std::string>{"250", "250"}));
    EXPECT_FALSE(h.s->spoke_before_greeting());
  }
  {
    Harness h(default_config(), "192.0.2.7", true, true);
    auto out = h.send("EHLO x\r\n");  // before the 220
    EXPECT_EQ(out.rfind("554 5.5.1 ", 0), 0u) << out;
    EXPECT_TRUE(h.s->closed());
    EXPECT_TRUE(h.s->spoke_before_greeting());
    h.s->release_greeting();  // the pause ends later: nothing more is sent
    EXPECT_EQ(h.s->take_output(), "");
  }
  {
    Harness h(default_config(), "192.0.2.7", true, true);
    h.s->shutting_down();
    EXPECT_NE(h.s->take_output().find("421 4.3.2"), std::string::npos);
    EXPECT_TRUE(h.s->closed());
  }
}

TEST(SmtpSession, HeaderSectionIsBounded) {
  auto cfg = base_config();
  cfg->smtp.max_message_size = 10 << 20;
  cfg->smtp.max_header_size = 100 * 1024;
  std::string folded = "X-Big: a\r\n";
  while (folded.size() < 150 * 1024) folded += " b\r\n";  // folded lines: one field, 150 KiB
  for (bool bdat : {false, true}) {
    Harness h(cfg);
    auto out = deliver(h, folded + "Subject: big\r\n\r\nbody\r\n", bdat);
    EXPECT_NE(out.find("552 5.3.4 Error: message header size exceeds limit"), std::string::npos) << out;
    EXPECT_TRUE(h.hooks.committed.empty());
    EXPECT_EQ(h.hooks.aborts, 1);
    EXPECT_EQ(h.s->state(), State::kReady);
  }
  // The same bytes in the body are fine; so is a header just under the limit.
  for (bool bdat : {false, true}) {
    Harness h(cfg);
    std::string under = "X-Big: a\r\n";
    while (under.size() < 100 * 1024 - 64) under += " b\r\n";
    auto out = deliver(h, "Subject: s\r\n\r\n" + folded, bdat);
    EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
    out = deliver(h, under + "\r\nbody\r\n", bdat);
    EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
  }
  // A line that is not a header field ends the header section, as an empty line does.
  Harness h(cfg);
  auto out = deliver(h, "Subject: no blank line\r\nthis is the body\r\n" + folded);
  EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
}

TEST(SmtpSession, TooManyHopsIsALoop) {
  auto cfg = base_config();
  cfg->smtp.max_hops = 5;
  auto with = [](int n, const char* name = "Received") {
    std::string m;
    for (int i = 0; i < n; ++i) m += std::string(name) + ": from h" + std::to_string(i) + "\r\n\tby x; date\r\n";
    return m + "Subject: loop\r\n\r\nReceived: in the body does not count\r\n";
  };
  for (bool bdat : {false, true}) {
    Harness h(cfg);
    auto out = deliver(h, with(5), bdat);
    EXPECT_NE(out.find("554 5.4.6"), std::string::npos) << out;
    EXPECT_TRUE(h.hooks.committed.empty());
    out = deliver(h, with(4), bdat);  // ours makes five: still within the limit
    EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
    out = deliver(h, with(5, "received "), bdat);  // obs-field form, any case
    EXPECT_NE(out.find("554 5.4.6"), std::string::npos) << out;
    out = deliver(h, with(9, "X-Received"), bdat);
    EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
  }
}

TEST(SmtpSession, LongLinesAreFoldedRefusedOrKept) {
  auto cfg = base_config();
  cfg->smtp.max_message_size = 1 << 20;
  const std::string body_line(5000, 'x');
  std::string words;  // a header field of 3000 octets with spaces in it
  while (words.size() < 3000) words += " word" + std::to_string(words.size());
  const std::string header = "X-Long:" + words;
  const std::string utf8 = std::string(997, 'a') + "\xc3\xa9" + "tail";  // é across octet 998
  const std::string msg = header + "\r\nSubject: long\r\n\r\n" + body_line + "\r\n" + utf8 + "\r\nend\r\n";
  std::string via_data;
  for (bool bdat : {false, true}) {
    Harness h(cfg);  // "fold" is the default
    auto out = deliver(h, msg, bdat, 700);
    ASSERT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
    std::string got = stored_content(h.hooks);
    size_t pos = 0, longest = 0;
    while (pos < got.size()) {
      size_t e = got.find("\r\n", pos);
      longest = std::max(longest, e - pos);
      pos = e + 2;
    }
    EXPECT_LE(longest, 998u);
    // The header was folded at its spaces: unfolding (removing CRLF) gives it back exactly.
    size_t hend = got.find("\r\nSubject: long\r\n");
    std::string unfolded = got.substr(0, hend);
    for (size_t f; (f = unfolded.find("\r\n")) != std::string::npos;) unfolded.erase(f, 2);
    EXPECT_EQ(unfolded, header);
    // The body line was broken with CRLF SP: removing them gives it back.
    std::string b = got.substr(got.find("\r\n\r\n") + 4);
    for (size_t f; (f = b.find("\r\n ")) != std::string::npos;) b.erase(f, 3);
    EXPECT_EQ(b, body_line + "\r\n" + utf8 + "\r\nend\r\n");
    EXPECT_NE(got.find(std::string(997, 'a') + "\r\n \xc3\xa9tail"), std::string::npos);  // é kept whole
    EXPECT_EQ(h.hooks.envs[0].message_size, h.hooks.committed[0].size());
    EXPECT_TRUE(h.hooks.envs[0].eight_bit);
    if (!bdat) via_data = got;
    else EXPECT_EQ(got, via_data);  // BDAT chunks cut anywhere: the same result
  }
  cfg->smtp.long_lines = LongLinePolicy::kReject;
  for (bool bdat : {false, true}) {
    Harness h(cfg);
    auto out = deliver(h, "Subject: s\r\n\r\n" + body_line + "\r\n", bdat);
    EXPECT_NE(out.find("550 5.6.0"), std::string::npos) << out;
    EXPECT_TRUE(h.hooks.committed.empty());
    out = deliver(h, "Subject: s\r\n\r\n" + std::string(998, 'y') + "\r\n", bdat);  // exactly 998: fine
    EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
  }
  cfg->smtp.long_lines = LongLinePolicy::kAccept;
  Harness h(cfg);
  auto out = deliver(h, msg);
  ASSERT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
  EXPECT_EQ(stored_content(h.hooks), msg);
}

TEST(SmtpSession, EachTransactionStartsClean) {
  auto cfg = base_config();
  cfg->smtp.max_hops = 2;
  Harness h(cfg);
  auto out = deliver(h, "Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nb\r\n");
  EXPECT_NE(out.find("554 5.4.6"), std::string::npos);
  out = deliver(h, "Received: a\r\nSubject: y\r\n\r\nb\r\n");  // the count starts again at zero
  EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
  out = deliver(h, "X: " + std::string(3000, 'q') + "\r\n\r\nb\r\n", true);
  EXPECT_NE(out.find("250 2.0.0 Ok: queued"), std::string::npos) << out;
  EXPECT_EQ(h.hooks.committed.size(), 2u);
}

TEST(SmtpSession, UnknownRecipientsAreRefusedAtRcpt) {
  auto cfg = base_config();
  auto t = std::make_shared<RecipientTable>();
  t->addresses = {"alice@example.test"};
  cfg->relay.recipients = t;
  for (const char* ip : {"192.0.2.7", "10.1.2.3"}) {  // trusted clients too, for our own domains
    Harness h(cfg, ip);
    auto out = h.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.test>\r\n"
                      "RCPT TO:<mallory@example.test>\r\nRCPT TO:<postmaster@example.test>\r\nRCPT TO:<postmaster>\r\n");
    EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "550", "250", "250"})) << ip;
    EXPECT_NE(out.find("550 5.1.1 <mallory@example.test>: Recipient address rejected: User unknown"),
              std::string::npos);
  }
  Harness trusted(cfg, "10.1.2.3");  // relaying elsewhere is not checked
  EXPECT_EQ(codes(trusted.send("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@other.example>\r\n")).back(), "250");
}


// Recipient verification: the RCPT reply waits for the next hop's answer; pipelined commands
// behind it wait too and run in order once it comes.
TEST(SmtpSession, RecipientVerificationHoldsTheRcptReplyUntilTheAnswer) {
  auto cfg = base_config();
  cfg->relay.verify_recipients = true;
  Harness h(cfg);
  h.hooks.verdicts["alice@example.test"] = {RcptVerdict::kPending, ""};
  h.hooks.verdicts["bob@example.test"] = {RcptVerdict::kReject, "peer[127.0.0.1]:25 said: 550 5.1.1 no such user"};
  h.hooks.verdicts["carol@example.test"] = {RcptVerdict::kDefer, "connect: refused"};
  auto out = h.send("EHLO c\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
                    "RCPT TO:<bob@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250"}));  // EHLO, MAIL; RCPT waits
  EXPECT_TRUE(h.s->awaiting_recipient_check());
  EXPECT_FALSE(h.s->wants_input());
  EXPECT_EQ(h.hooks.checked, std::vector<std::string>{"alice@example.test"});
  h.s->recipient_checked({RcptVerdict::kAccept, ""});
  out = h.s->take_output();
  EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "550", "450", "354", "250"}));
  EXPECT_NE(out.find("550 5.1.1 <bob@example.test>: Recipient address rejected: undeliverable address: "
                     "peer[127.0.0.1]:25 said: 550 5.1.1 no such user"), std::string::npos);
  EXPECT_NE(out.find("450 4.1.1 <carol@example.test>: Recipient address rejected: unverified address: connect: refused"),
            std::string::npos);
  ASSERT_EQ(h.hooks.envs.size(), 1u);
  ASSERT_EQ(h.hooks.envs[0].rcpts.size(), 1u);
  EXPECT_EQ(h.hooks.envs[0].rcpts[0].address, "alice@example.test");
  h.s->recipient_checked({RcptVerdict::kReject, "late"});  // nothing waits: ignored
  EXPECT_EQ(h.s->take_output(), "");
}

TEST(SmtpSession, RecipientVerificationOnlyForOurDomainsFromOutside) {
  auto cfg = base_config();
  cfg->relay.verify_recipients = true;
  {
    Harness h(cfg, "10.1.2.3");  // relay.networks: trusted, never verified
    h.send("EHLO c\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<x@foreign.example>\r\n");
    EXPECT_TRUE(h.hooks.checked.empty());
  }
  {
    Harness h(cfg);
    auto out = h.send("EHLO c\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<x@foreign.example>\r\n");
    EXPECT_TRUE(h.hooks.checked.empty());  // postmaster always; a foreign domain is refused before
    EXPECT_EQ(codes(out), (std::vector<std::string>{"250", "250", "250", "554"}));
  }
  {
    cfg->relay.verify_recipients = false;
    Harness h(cfg);
    h.send("EHLO c\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n");
    EXPECT_TRUE(h.hooks.checked.empty());  // off by default
  }
}

TEST(SmtpSession, RecipientVerificationWaitEndsWithTheSession) {
  auto cfg = base_config();
  cfg->relay.verify_recipients = true;
  Harness h(cfg);
  h.hooks.verdicts["alice@example.test"] = {RcptVerdict::kPending, ""};
  h.send("EHLO c\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n");
  h.s->timeout();
  EXPECT_NE(h.s->take_output().find("421"), std::string::npos);
  h.s->recipient_checked({RcptVerdict::kAccept, ""});
  EXPECT_EQ(h.s->take_output(), "");
}
