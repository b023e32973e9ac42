#include <gtest/gtest.h>

#include "base/time_format.h"
#include "mta/queue/dsn.h"

using namespace postern;
using queue::DsnKind;

namespace {
Envelope three_rcpts() {
  Envelope e;
  e.queue_id = "Q1";
  e.mail_from = "sender@example.test";
  e.received_at = 1700000000;
  e.rcpts.push_back({"a@example.test", "", ""});
  e.rcpts.push_back({"b@example.test", "FAILURE", ""});
  e.rcpts.push_back({"c@example.test", "DELAY,FAILURE", "rfc822;C@example.test"});
  for (auto& r : e.rcpts) {
    r.status = "4.4.1";
    r.diag = "451 4.4.1 try later";
  }
  return e;
}
const std::string kOriginal = "Received: by x\r\nSubject: s\r\n\r\nthe body\r\n";
}  // namespace

TEST(Dsn, NotifySelectsRecipientsPerKind) {
  auto e = three_rcpts();
  EXPECT_EQ(queue::wants_dsn(e, {0, 1, 2}, DsnKind::kFailed), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(queue::wants_dsn(e, {0, 1, 2}, DsnKind::kDelayed), (std::vector<size_t>{0, 2}));
  e.rcpts[0].notify = "NEVER";
  EXPECT_EQ(queue::wants_dsn(e, {0}, DsnKind::kFailed), std::vector<size_t>{});
  e.mail_from.clear();  // never to the null sender
  EXPECT_TRUE(queue::wants_dsn(e, {1, 2}, DsnKind::kFailed).empty());
  e.mail_from = "x@y";
  e.is_bounce = true;  // never for a DSN
  EXPECT_TRUE(queue::wants_dsn(e, {1, 2}, DsnKind::kDelayed).empty());
}

TEST(Dsn, DelayedNoticeCarriesHeadersAndRetryTime) {
  auto e = three_rcpts();
  const int64_t now = e.received_at + 4 * 3600;
  auto d = queue::make_dsn(DsnKind::kDelayed, e, {0, 2}, kOriginal, "mx.test", now, "BOUND", e.received_at + 5 * 86400);
  EXPECT_EQ(d.env.mail_from, "");
  // The notice's time is the caller's clock, not the machine's.
  EXPECT_EQ(d.env.received_at, now);
  EXPECT_NE(d.text.find("Date: " + rfc5322_date(now) + "\r\n"), std::string::npos);
  EXPECT_TRUE(d.env.is_bounce);
  EXPECT_NE(d.text.find("Subject: Delayed Mail"), std::string::npos);
  EXPECT_NE(d.text.find("Action: delayed\r\nStatus: 4.4.1"), std::string::npos);
  EXPECT_NE(d.text.find("Will-Retry-Until: "), std::string::npos);
  EXPECT_NE(d.text.find("Original-Recipient: rfc822; C@example.test"), std::string::npos);
  EXPECT_NE(d.text.find("text/rfc822-headers"), std::string::npos);
  EXPECT_EQ(d.text.find("the body"), std::string::npos);
  EXPECT_EQ(d.text.find("b@example.test"), std::string::npos);
  EXPECT_TRUE(d.text.ends_with("--BOUND--\r\n"));
}

TEST(Dsn, FailedNoticeCarriesTheMessageUnlessRetHdrs) {
  auto e = three_rcpts();
  e.rcpts[1].status = "5.1.1";
  auto d = queue::make_dsn(DsnKind::kFailed, e, {1}, kOriginal, "mx.test", 1700000000, "B");
  EXPECT_NE(d.text.find("Action: failed\r\nStatus: 5.1.1"), std::string::npos);
  EXPECT_NE(d.text.find("message/rfc822"), std::string::npos);
  EXPECT_NE(d.text.find("the body"), std::string::npos);
  EXPECT_EQ(d.text.find("Will-Retry-Until"), std::string::npos);
  e.ret = "HDRS";
  d = queue::make_dsn(DsnKind::kFailed, e, {1}, kOriginal, "mx.test", 1700000000, "B");
  EXPECT_EQ(d.text.find("the body"), std::string::npos);
  // A delayed notice never says 5.x.x: a status that is not temporary becomes 4.0.0.
  e.rcpts[0].status = "";
  d = queue::make_dsn(DsnKind::kDelayed, e, {0}, kOriginal, "mx.test", 1700000000, "B", 1);
  EXPECT_NE(d.text.find("Status: 4.0.0"), std::string::npos);
}

// RFC 3461 4.2: NOTIFY=SUCCESS relayed to a server without DSN: Postern says "relayed".
TEST(Dsn, RelayedNoticeOnlyForNotifySuccessAndCarriesHeadersOnly) {
  auto e = three_rcpts();
  EXPECT_TRUE(queue::wants_dsn(e, {0, 1, 2}, DsnKind::kRelayed).empty());  // NOTIFY empty: no success notice
  e.rcpts[0].notify = "SUCCESS,FAILURE";
  e.rcpts[0].status = "2.0.0";
  e.rcpts[0].diag = "250 2.0.0 Ok: queued as X";
  e.rcpts[0].remote = "mx.next[192.0.2.1]:25";
  e.rcpts[0].orcpt = "rfc822;A+2Bx@example.test";
  EXPECT_EQ(queue::wants_dsn(e, {0, 1, 2}, DsnKind::kRelayed), std::vector<size_t>{0});
  auto d = queue::make_dsn(DsnKind::kRelayed, e, {0}, kOriginal, "mx.test", 1700000000, "B");
  EXPECT_NE(d.text.find("Subject: Successful Mail Delivery Report"), std::string::npos);
  EXPECT_NE(d.text.find("Action: relayed\r\nStatus: 2.0.0\r\nRemote-MTA: dns; mx.next[192.0.2.1]:25"), std::string::npos);
  EXPECT_NE(d.text.find("Original-Recipient: rfc822; A+x@example.test"), std::string::npos);  // xtext decoded
  EXPECT_NE(d.text.find("text/rfc822-headers"), std::string::npos);
  EXPECT_EQ(d.text.find("the body"), std::string::npos);  // RET concerns failure notices only
  EXPECT_EQ(d.text.find("b@example.test"), std::string::npos);
  e.rcpts[0].status = "";  // no enhanced code from the next hop
  d = queue::make_dsn(DsnKind::kRelayed, e, {0}, kOriginal, "mx.test", 1700000000, "B");
  EXPECT_NE(d.text.find("Action: relayed\r\nStatus: 2.0.0"), std::string::npos);
  e.is_bounce = true;
  EXPECT_TRUE(queue::wants_dsn(e, {0}, DsnKind::kRelayed).empty());
}
