// Tests of the sans-IO SMTP client session: transactions, per-recipient results, TLS policy,
// the STARTTLS response-injection case and hostile replies.
#include <gtest/gtest.h>

#include "mta/client/smtp_client_session.h"

using namespace postern;
using namespace postern::smtp;

namespace {

Envelope make_env(std::vector<std::string> rcpts, bool utf8 = false) {
  Envelope e;
  e.queue_id = "Q1";
  e.mail_from = "sender@example.org";
  e.smtputf8 = utf8;
  for (auto& r : rcpts) e.rcpts.push_back({r, "", ""});
  return e;
}

struct Client {
  Envelope env;
  std::unique_ptr<SmtpClientSession> s;
  Client(Envelope e, TlsLevel tls = TlsLevel::kMay, bool probe = false) : env(std::move(e)) {
    SmtpClientSession::Options o;
    o.helo_name = "mx.test";
    o.tls = tls;
    ClientMessage m;
    m.qid = env.queue_id;
    m.env = &env;
    for (size_t i = 0; i < env.rcpts.size(); ++i) m.rcpts.push_back(i);
    m.size = 100;
    m.probe = probe;
    s = std::make_unique<SmtpClientSession>(o, std::vector<ClientMessage>{m});
  }
  std::string say(const std::string& server) {
    s->feed(server);
    return s->take_output();
  }
};

const char* kEhloFull = "250-peer\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n";

}  // namespace

TEST(SmtpClient, PipelinedBdatTransaction) {
  Client c(make_env({"a@example.test", "b@example.test", "c@example.test"}), TlsLevel::kNone);
  EXPECT_EQ(c.say("220 peer ESMTP\r\n"), "EHLO mx.test\r\n");
  EXPECT_EQ(c.say(kEhloFull),
            "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.test>\r\n"
            "RCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n");
  EXPECT_EQ(c.say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n"),
            "BDAT 100 LAST\r\n");
  EXPECT_TRUE(c.s->wants_body());
  EXPECT_TRUE(c.s->use_bdat());
  c.s->body_started();
  c.s->body_sent();
  EXPECT_EQ(c.say("250 2.0.0 queued\r\n"), "QUIT\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 3u);
  std::map<size_t, RcptResult> by;
  for (auto& r : res) by[r.index] = r;
  EXPECT_EQ(by[0].outcome, Outcome::kDelivered);
  EXPECT_EQ(by[1].outcome, Outcome::kFailed);
  EXPECT_EQ(by[1].status, "5.1.1");
  EXPECT_EQ(by[2].outcome, Outcome::kDelivered);
  c.say("221 bye\r\n");
  EXPECT_TRUE(c.s->done());
}

TEST(SmtpClient, DataWithoutPipeliningAndTempFailure) {
  Client c(make_env({"a@example.test"}), TlsLevel::kNone);
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say("250-peer\r\n250 8BITMIME\r\n"), "MAIL FROM:<sender@example.org>\r\n");
  EXPECT_EQ(c.say("250 ok\r\n"), "RCPT TO:<a@example.test>\r\n");
  EXPECT_EQ(c.say("250 ok\r\n"), "DATA\r\n");
  EXPECT_EQ(c.say("354 go\r\n"), "");
  EXPECT_TRUE(c.s->wants_body());
  EXPECT_FALSE(c.s->use_bdat());
  c.s->body_started();
  c.s->body_sent();
  EXPECT_EQ(c.say("451 4.3.0 try later\r\n"), "QUIT\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, Outcome::kDeferred);
  EXPECT_EQ(res[0].status, "4.3.0");
}

TEST(SmtpClient, HeloFallback) {
  Client c(make_env({"a@example.test"}), TlsLevel::kMay);
  c.say("220 old\r\n");
  EXPECT_EQ(c.say("502 what\r\n"), "HELO mx.test\r\n");
  EXPECT_EQ(c.say("250 old\r\n"), "MAIL FROM:<sender@example.org>\r\n");
}

TEST(SmtpClient, EncryptNeverSendsMailInPlaintext) {
  Client c(make_env({"a@example.test"}), TlsLevel::kEncrypt);
  c.say("220 peer\r\n");
  auto out = c.say("250-peer\r\n250 PIPELINING\r\n");
  EXPECT_EQ(out.find("MAIL"), std::string::npos);
  EXPECT_TRUE(c.s->host_failed());
  EXPECT_NE(c.s->host_failure().find("does not offer STARTTLS"), std::string::npos);
}

TEST(SmtpClient, StarttlsResponseInjectionIsDiscarded) {
  Client c(make_env({"a@example.test"}), TlsLevel::kEncrypt);
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say("250-peer\r\n250 STARTTLS\r\n"), "STARTTLS\r\n");
  EXPECT_EQ(c.say("220 go\r\n250-fake\r\n250 PIPELINING\r\n"), "");
  EXPECT_TRUE(c.s->wants_starttls());
  c.s->tls_started();
  EXPECT_EQ(c.s->take_output(), "EHLO mx.test\r\n");  // the injected 250 was not taken as EHLO's reply
  EXPECT_FALSE(c.s->peer_has("PIPELINING"));
  EXPECT_EQ(c.say("250 peer\r\n"), "MAIL FROM:<sender@example.org>\r\n");
}

TEST(SmtpClient, HandshakeFailureBeforeMailIsAHostFailure) {
  Client c(make_env({"a@example.test"}), TlsLevel::kEncrypt);
  c.say("220 peer\r\n");
  c.say("250-peer\r\n250 STARTTLS\r\n");
  c.say("220 go\r\n");
  c.s->connection_lost("TLS handshake failed");
  EXPECT_TRUE(c.s->host_failed());
  EXPECT_TRUE(c.s->take_results().empty());
}

TEST(SmtpClient, HostileRepliesAreBounded) {
  {
    Client c(make_env({"a@example.test"}), TlsLevel::kNone);
    c.say("220 peer\r\n");
    std::string endless;
    for (int i = 0; i < 1000; ++i) endless += "250-more\r\n";
    c.say(endless);
    EXPECT_TRUE(c.s->done());
    EXPECT_TRUE(c.s->host_failed());
  }
  {
    Client c(make_env({"a@example.test"}), TlsLevel::kNone);
    c.say(std::string(100000, 'x'));
    EXPECT_TRUE(c.s->done());
  }
  {
    Client c(make_env({"a@example.test"}), TlsLevel::kNone);
    c.say("abc hello\r\n");
    EXPECT_TRUE(c.s->host_failed());
  }
}

TEST(SmtpClient, LostAfterDotIsDeferredAndFlagged) {
  Client c(make_env({"a@example.test"}), TlsLevel::kNone);
  c.say("220 peer\r\n");
  c.say(kEhloFull);
  c.say("250 ok\r\n250 ok\r\n");
  c.s->body_started();
  c.s->body_sent();
  c.s->connection_lost("connection closed");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, Outcome::kDeferred);
  EXPECT_TRUE(res[0].maybe_duplicate);
}

TEST(SmtpClient, Smtputf8NeedsServerSupport) {
  Client c(make_env({"d\xc3\xb6rte@example.test"}, true), TlsLevel::kNone);
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say(kEhloFull), "QUIT\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, Outcome::kFailed);
  EXPECT_EQ(res[0].status, "5.6.7");
}

namespace {
Envelope eight_bit_env(bool declared, bool content) {
  Envelope e = make_env({"a@example.test"});
  e.body = declared ? BodyType::k8BitMime : BodyType::k7Bit;
  e.eight_bit = content;
  return e;
}
const char* kEhloNo8bit = "250-peer\r\n250-PIPELINING\r\n250 SIZE 1000\r\n";
}  // namespace

TEST(SmtpClient, EightBitToA7BitServerIsConverted) {
  Client c(eight_bit_env(true, true), TlsLevel::kNone);
  int calls = 0;
  c.s->set_downgrader([&](ClientMessage& m) {
    ++calls;
    m.size = 130;  // quoted-printable is longer
    m.downgraded = true;
    return true;
  });
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say(kEhloNo8bit), "MAIL FROM:<sender@example.org> SIZE=130\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(c.say("250 ok\r\n250 ok\r\n354 go\r\n"), "");
  EXPECT_TRUE(c.s->wants_body());
  EXPECT_TRUE(c.s->current().downgraded);
}

TEST(SmtpClient, EightBitThatCannotBeConvertedBounces) {
  Client c(eight_bit_env(false, true), TlsLevel::kNone);
  c.s->set_downgrader([](ClientMessage&) { return false; });
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say(kEhloNo8bit), "QUIT\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, Outcome::kFailed);
  EXPECT_EQ(res[0].status, "5.6.3");
}

TEST(SmtpClient, DeclaredEightBitThatIsAsciiNeedsNoConversion) {
  Client c(eight_bit_env(true, false), TlsLevel::kNone);
  c.s->set_downgrader([](ClientMessage&) -> bool { ADD_FAILURE() << "no conversion needed"; return false; });
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say(kEhloNo8bit), "MAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
}

TEST(SmtpClient, DataClosesThePipelinedGroup) {
  Client c(make_env({"a@example.test", "b@example.test"}), TlsLevel::kNone);
  c.say("220 peer\r\n");
  EXPECT_EQ(c.say("250-peer\r\n250 PIPELINING\r\n"),
            "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n");
  EXPECT_EQ(c.say("250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n"), "");
  EXPECT_TRUE(c.s->wants_body());
  c.s->body_started();
  c.s->body_sent();
  EXPECT_EQ(c.say("250 2.0.0 queued\r\n"), "QUIT\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 2u);
  EXPECT_EQ(res[0].outcome, Outcome::kFailed);  // b, at RCPT
  EXPECT_EQ(res[1].outcome, Outcome::kDelivered);
}

TEST(SmtpClient, PipelinedDataWithNoRecipientSendsNoBody) {
  // The usual answer: 554 to DATA. The session resets and moves on.
  Client c(make_env({"a@example.test"}), TlsLevel::kNone);
  c.say("220 peer\r\n");
  c.say("250-peer\r\n250 PIPELINING\r\n");
  EXPECT_EQ(c.say("250 ok\r\n450 4.2.1 busy\r\n554 5.5.1 no valid recipients\r\n"), "RSET\r\n");
  EXPECT_FALSE(c.s->wants_body());
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, Outcome::kDeferred);
  EXPECT_EQ(res[0].status, "4.2.1");
  // A server that says 354 anyway gets an empty message, never the body.
  Client d(make_env({"a@example.test"}), TlsLevel::kNone);
  d.say("220 peer\r\n");
  d.say("250-peer\r\n250 PIPELINING\r\n");
  EXPECT_EQ(d.say("250 ok\r\n550 5.1.1 no\r\n354 go\r\n"), ".\r\n");
  EXPECT_FALSE(d.s->wants_body());
  EXPECT_EQ(d.say("250 ok\r\n"), "QUIT\r\n");
  res = d.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].outcome, Outcome::kFailed);
}

TEST(SmtpClient, UndeclaredEightBitIsDeclaredToAServerThatTakesIt) {
  Client c(eight_bit_env(false, true), TlsLevel::kNone);
  c.say("220 peer\r\n");
  EXPECT_TRUE(c.say(kEhloFull).starts_with("MAIL FROM:<sender@example.org> SIZE=100 BODY=8BITMIME\r\n"));
}

TEST(DotStuffer, StuffsLeadingDots) {
  DotStuffer d;
  std::string out;
  d.stuff("a\r\n.b\r", out);
  d.stuff("\n", out);
  d.stuff(".", out);
  d.stuff("\r\n", out);
  d.finish(out);
  EXPECT_EQ(out, "a\r\n..b\r\n..\r\n.\r\n");
  DotStuffer e;
  std::string o2;
  e.stuff(".x", o2);
  e.finish(o2);
  EXPECT_EQ(o2, "..x\r\n.\r\n");
}

// RFC 6531 3.4: an SMTPUTF8 message whose envelope and content are ASCII goes to a server
// without the extension, without the SMTPUTF8 parameter.
TEST(SmtpClient, Smtputf8WithAnAsciiMessageGoesToAServerWithoutIt) {
  Client c(make_env({"plain@example.test"}, true), TlsLevel::kNone);
  c.say("220 peer\r\n");
  std::string out = c.say("250-peer\r\n250 PIPELINING\r\n");
  EXPECT_NE(out.find("MAIL FROM:<sender@example.org>"), std::string::npos) << out;
  EXPECT_EQ(out.find("SMTPUTF8"), std::string::npos) << out;
}

TEST(SmtpClient, Smtputf8With8BitContentStillNeedsTheExtension) {
  Envelope e = make_env({"plain@example.test"}, true);
  e.eight_bit = true;  // could be UTF-8 header fields
  Client c(e, TlsLevel::kNone);
  c.say("220 peer\r\n");
  c.say("250-peer\r\n250-8BITMIME\r\n250 PIPELINING\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].status, "5.6.7");
}

// RFC 3461 4.2: NOTIFY=SUCCESS relayed to a server without DSN: the result says a "relayed"
// notice is owed.
TEST(SmtpClient, NotifySuccessToAServerWithoutDsnIsFlaggedRelayed) {
  Envelope e = make_env({"a@example.test", "b@example.test"});
  e.rcpts[0].notify = "SUCCESS,FAILURE";
  Client c(e, TlsLevel::kNone);
  c.say("220 peer\r\n");
  c.say("250-peer\r\n250 PIPELINING\r\n");
  c.say("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
  ASSERT_TRUE(c.s->wants_body());
  c.s->body_started();
  c.s->body_sent();
  c.say("250 queued\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 2u);
  EXPECT_EQ(res[0].outcome, Outcome::kDelivered);
  EXPECT_TRUE(res[0].relayed_without_dsn);
  EXPECT_FALSE(res[1].relayed_without_dsn);
}


// Recipient verification: MAIL and RCPT, then RSET; never DATA or BDAT, no SIZE or DSN parameters.
TEST(SmtpClient, ProbeAsksAndResetsWithoutData) {
  Envelope e = make_env({"a@example.test", "b@example.test"});
  e.mail_from = "";
  e.rcpts[0].notify = "SUCCESS";
  Client c(e, TlsLevel::kNone, true);
  c.say("220 peer ESMTP\r\n");
  EXPECT_EQ(c.say(kEhloFull), "MAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n");
  EXPECT_EQ(c.say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 <b@example.test>: no such user\r\n"), "RSET\r\n");
  EXPECT_EQ(c.say("250 2.0.0 ok\r\n"), "QUIT\r\n");
  auto res = c.s->take_results();
  ASSERT_EQ(res.size(), 2u);
  EXPECT_EQ(res[0].outcome, Outcome::kDelivered);
  EXPECT_FALSE(res[0].relayed_without_dsn);
  EXPECT_EQ(res[1].outcome, Outcome::kFailed);
  EXPECT_EQ(res[1].diag, "550 5.1.1 <b@example.test>: no such user");
}

TEST(SmtpClient, ProbeWhoseSenderIsRefusedSaysNothingOfTheRecipient) {
  for (const char* ehlo : {kEhloFull, "250-peer\r\n250 SIZE 1000\r\n"}) {
    Envelope e = make_env({"a@example.test"});
    e.mail_from = "";
    Client c(e, TlsLevel::kNone, true);
    c.say("220 peer ESMTP\r\n");
    c.say(ehlo);
    std::string out = c.say("550 5.7.1 null sender refused\r\n");
    if (out.empty()) out = c.say("503 5.5.1 need MAIL\r\n");  // pipelined: the RCPT's reply
    EXPECT_EQ(out, "RSET\r\n");
    auto res = c.s->take_results();
    ASSERT_EQ(res.size(), 1u);
    EXPECT_EQ(res[0].outcome, Outcome::kDeferred) << ehlo;  // not "the address does not exist"
  }
}
