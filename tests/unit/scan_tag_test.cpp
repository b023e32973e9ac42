// Tests of what the scanning gate's remainder added: the Subject tag of scan.on_virus = "tag"
// (policy::subject_edit: where it goes, once, folded and missing Subjects), the delivered form
// (mta/queue/scan_edits.h: the same bytes delivery streams and a DSN quotes), the envelope field
// round trip, and the session-side scan deadline and ticket (mta/server/scan_wait.h) driven as
// InboundConnection drives it, with a FakeClock.
#include <gtest/gtest.h>

#include "base/clock.h"
#include "mta/queue/dsn.h"
#include "mta/queue/scan_edits.h"
#include "mta/queue/spool.h"
#include "mta/server/scan_wait.h"
#include "mta/server/smtp_server_session.h"
#include "policy/scan_gate.h"

using namespace postern;
using namespace postern::policy;
using namespace std::chrono_literals;

namespace {

const std::string kRecv = "Received: from c.test ([192.0.2.1])\r\n\tby mx (Postern) with ESMTP id Q1; date\r\n";

// The tagged message, as delivered.
std::string tagged(const std::string& msg, const std::string& tag = "[VIRUS] ") {
  std::string m = kRecv + msg;
  SubjectEdit e = subject_edit(m, true, tag);
  if (e.at >= 0) m.insert(static_cast<size_t>(e.at), e.text);
  return m.substr(kRecv.size());
}

}  // namespace

TEST(SubjectTag, InFrontOfTheSubjectText) {
  EXPECT_EQ(tagged("From: a@x\r\nSubject: hello\r\nTo: b@y\r\n\r\nbody\r\n"),
            "From: a@x\r\nSubject: [VIRUS] hello\r\nTo: b@y\r\n\r\nbody\r\n");
  EXPECT_EQ(tagged("subject:hello\r\n\r\nb\r\n"), "subject: [VIRUS] hello\r\n\r\nb\r\n");  // any case, no WSP
  EXPECT_EQ(tagged("Subject :  hello\r\n\r\nb\r\n"), "Subject :  [VIRUS] hello\r\n\r\nb\r\n");  // obs-field
  EXPECT_EQ(tagged("Subject: =?UTF-8?B?w6k=?=\r\n\r\nb\r\n"), "Subject: [VIRUS] =?UTF-8?B?w6k=?=\r\n\r\nb\r\n");
  EXPECT_EQ(tagged("Subject: hello\r\n\r\nb\r\n", "***INFECTED***"), "Subject: ***INFECTED*** hello\r\n\r\nb\r\n");
  // Only the first Subject; a "Subject:" in the body is content.
  EXPECT_EQ(tagged("Subject: one\r\nSubject: two\r\n\r\nSubject: body\r\n"),
            "Subject: [VIRUS] one\r\nSubject: two\r\n\r\nSubject: body\r\n");
}

TEST(SubjectTag, FoldedSubjects) {
  // Folded after some text: the tag goes before the text of the first line.
  EXPECT_EQ(tagged("Subject: a long\r\n subject\r\n\r\nb\r\n"), "Subject: [VIRUS] a long\r\n subject\r\n\r\nb\r\n");
  // Nothing on the first line: the tag is put there (unfolded: "[VIRUS] hello").
  EXPECT_EQ(tagged("Subject:\r\n hello\r\n\r\nb\r\n"), "Subject: [VIRUS]\r\n hello\r\n\r\nb\r\n");
  EXPECT_EQ(tagged("Subject:   \r\n\thello\r\n\r\nb\r\n"), "Subject: [VIRUS]   \r\n\thello\r\n\r\nb\r\n");
  EXPECT_EQ(tagged("Subject:\r\n\r\nb\r\n"), "Subject: [VIRUS]\r\n\r\nb\r\n");  // empty Subject
}

TEST(SubjectTag, AddedOnce) {
  EXPECT_EQ(subject_edit(kRecv + "Subject: [VIRUS] hello\r\n\r\nb\r\n", true, "[VIRUS] ").at, -1);
  EXPECT_EQ(subject_edit(kRecv + "Subject: [virus] hello\r\n\r\nb\r\n", true, "[VIRUS] ").at, -1);
  EXPECT_EQ(subject_edit(kRecv + "Subject:\r\n [VIRUS] hello\r\n\r\nb\r\n", true, "[VIRUS] ").at, -1);  // folded
  EXPECT_EQ(subject_edit(kRecv + "Subject: [VIRUS]\r\n\r\nb\r\n", true, "[VIRUS] ").at, -1);
  // Tagging the delivered form again changes nothing.
  std::string once = tagged("Subject:\r\n hello\r\n\r\nb\r\n");
  EXPECT_EQ(tagged(once), once);
  EXPECT_EQ(subject_edit(kRecv + "Subject:          [VIRUS] x\r\n\r\n", true, "[VIRUS] ").at, -1);
  EXPECT_NE(subject_edit(kRecv + "Subject: VIRUS x\r\n\r\n", true, "[VIRUS] ").at, -1);
}

TEST(SubjectTag, NoSubjectOneIsAdded) {
  EXPECT_EQ(tagged("From: a@x\r\nTo: b@y\r\n\r\nbody\r\n"), "From: a@x\r\nTo: b@y\r\nSubject: [VIRUS]\r\n\r\nbody\r\n");
  // The header section ends at a line that is not a field (no empty line): before it.
  EXPECT_EQ(tagged("From: a@x\r\nnot a field\r\n"), "From: a@x\r\nSubject: [VIRUS]\r\nnot a field\r\n");
  // Fields only, no body.
  EXPECT_EQ(tagged("From: a@x\r\n"), "From: a@x\r\nSubject: [VIRUS]\r\n");
  EXPECT_EQ(tagged("From: a@x"), "From: a@x\r\nSubject: [VIRUS]\r\n");
  // A Subject-like continuation line is not a Subject field.
  EXPECT_EQ(tagged("X-A: b\r\n Subject: c\r\n\r\nb\r\n"), "X-A: b\r\n Subject: c\r\nSubject: [VIRUS]\r\n\r\nb\r\n");
}

TEST(SubjectTag, NothingWhenTheHeaderSectionIsCutOrTheTagEmpty) {
  // Only the first bytes were read and the section does not end in them: no guess.
  EXPECT_EQ(subject_edit(kRecv + "From: a@x\r\nX-Long: aaaa", false, "[VIRUS] ").at, -1);
  EXPECT_EQ(subject_edit(kRecv + "From: a@x\r\n", false, "[VIRUS] ").at, -1);
  // ... but a Subject within them is found.
  EXPECT_EQ(subject_edit(kRecv + "Subject: x\r\nX-Long: aaaa", false, "[VIRUS] ").at,
            static_cast<int64_t>(kRecv.size() + 9));
  EXPECT_EQ(subject_edit(kRecv + "Subject: x\r\n\r\n", true, "").at, -1);
  EXPECT_EQ(subject_edit(kRecv + "Subject: x\r\n\r\n", true, "   ").at, -1);
}

TEST(SubjectTag, DecideTagCarriesTheEditDeliverDoesNot) {
  ScanConfig sc;
  ScanFacts f;
  f.engine_version = "1.4.6";
  scan::ScanResult r;
  r.verdict = scan::Verdict::kInfected;
  r.signature = "Eicar-Test-Signature";
  SubjectEdit e{10, "[VIRUS] "};
  sc.on_virus = ScanAction::kTag;
  auto d = decide(sc, f, r, e);
  EXPECT_EQ(d.action, GateAction::kCommit);
  EXPECT_EQ(d.subject.at, 10);
  EXPECT_EQ(d.subject.text, "[VIRUS] ");
  EXPECT_NE(d.header.find("verdict=infected (Eicar-Test-Signature)"), std::string::npos) << d.header;
  sc.on_virus = ScanAction::kDeliver;
  EXPECT_EQ(decide(sc, f, r, e).subject.at, -1);
  sc.on_virus = ScanAction::kTag;
  r.verdict = scan::Verdict::kClean;  // a clean message is never tagged
  EXPECT_EQ(decide(sc, f, r, e).subject.at, -1);
}

TEST(ScanEdits, DeliveredFormAndItsSize) {
  Envelope env;
  env.scan_header = "X-Postern-Scan: clamav/1.4.6; patterns=none; verdict=infected (X)\r\n";
  std::string stored = kRecv + "Subject: hi\r\n\r\nbody\r\n";
  SubjectEdit e = subject_edit(stored, true, "[VIRUS] ");
  env.subject_at = e.at;
  env.subject_edit = e.text;
  std::string m = stored;
  queue::apply_scan_edits(env, m);
  EXPECT_EQ(m, env.scan_header + kRecv + "Subject: [VIRUS] hi\r\n\r\nbody\r\n");
  EXPECT_EQ(m.size(), stored.size() + queue::scan_edits_size(env, stored.size()));
  // A prefix of the file that ends before the offset (a DSN's bounded read): no edit.
  std::string part = stored.substr(0, 20);
  queue::apply_scan_edits(env, part);
  EXPECT_EQ(part, env.scan_header + stored.substr(0, 20));
  // A release note goes on the header line.
  env.released_at = 1800000000;
  EXPECT_NE(queue::scan_prefix(env).find("; released from quarantine 2027-01-15T08:00:00Z\r\n"), std::string::npos)
      << queue::scan_prefix(env);
  // The envelope keeps the edit across a restart.
  env.queue_id = "Q1";
  env.rcpts.push_back({"c@example.test", "", ""});
  Envelope back;
  ASSERT_TRUE(queue::envelope_from_json(queue::envelope_to_json(env), back));
  EXPECT_EQ(back.subject_at, env.subject_at);
  EXPECT_EQ(back.subject_edit, "[VIRUS] ");
  Envelope none;
  none.queue_id = "Q2";
  none.rcpts = env.rcpts;
  ASSERT_TRUE(queue::envelope_from_json(queue::envelope_to_json(none), back));
  EXPECT_EQ(back.subject_at, -1);
}

// What a DSN returns: the message as it was sent, X-Postern-Scan and the tag included
// (text/rfc822-headers for HDRS).
TEST(ScanEdits, DsnQuotesTheDeliveredHeaders) {
  Envelope env;
  env.queue_id = "Q1";
  env.mail_from = "a@b.example";
  env.ret = "HDRS";
  env.rcpts.push_back({"c@example.test", "", ""});
  env.rcpts[0].state = RcptState::kFailed;
  env.rcpts[0].diag = "550 5.1.1 no such user";
  env.scan_header = "X-Postern-Scan: clamav/1.4.6; patterns=none; verdict=infected (Eicar-Test-Signature)\r\n";
  std::string stored = kRecv + "Subject: hi\r\n\r\nbody\r\n";
  SubjectEdit e = subject_edit(stored, true, "[VIRUS] ");
  env.subject_at = e.at;
  env.subject_edit = e.text;
  std::string original = stored;
  queue::apply_scan_edits(env, original);
  auto d = queue::make_dsn(queue::DsnKind::kFailed, env, {0}, original, "mx.example.test", 1800000000, "BB", 0);
  auto part = d.text.substr(d.text.find("Content-Type: text/rfc822-headers"));
  EXPECT_NE(part.find("\r\n\r\nX-Postern-Scan: clamav/1.4.6; patterns=none; verdict=infected (Eicar-Test-Signature)\r\n"
                      "Received: "),
            std::string::npos)
      << part;
  EXPECT_NE(part.find("Subject: [VIRUS] hi\r\n"), std::string::npos) << part;
  EXPECT_EQ(part.find("body"), std::string::npos) << "headers only";
}

TEST(ScanWait, DeadlineAndTicket) {
  FakeClock clock;
  mta::ScanWait w;
  EXPECT_FALSE(w.waiting());
  EXPECT_FALSE(w.expire(clock.steady()));
  uint64_t t1 = w.begin(clock.steady(), 30s);
  EXPECT_TRUE(w.waiting());
  EXPECT_FALSE(w.take(t1 + 1)) << "a verdict for another scan";
  clock.advance(30s + mta::ScanWait::kMargin - 1ms);
  EXPECT_FALSE(w.expire(clock.steady()));
  EXPECT_TRUE(w.take(t1));
  EXPECT_FALSE(w.take(t1)) << "taken once";
  // Past the deadline: expired once, the late verdict refused.
  uint64_t t2 = w.begin(clock.steady(), 30s);
  EXPECT_NE(t1, t2);
  clock.advance(30s + mta::ScanWait::kMargin);
  EXPECT_TRUE(w.expire(clock.steady()));
  EXPECT_FALSE(w.expire(clock.steady()));
  EXPECT_FALSE(w.waiting());
  EXPECT_FALSE(w.take(t2));
  // The next message waits for its own verdict; the first one's, arriving now, is not it.
  uint64_t t3 = w.begin(clock.steady(), 30s);
  EXPECT_FALSE(w.take(t2));
  EXPECT_TRUE(w.waiting());
  EXPECT_TRUE(w.take(t3));
  // The client left: nothing is taken any more.
  uint64_t t4 = w.begin(clock.steady(), 30s);
  w.cancel();
  EXPECT_FALSE(w.take(t4));
}

namespace {

struct Hooks : smtp::SessionHooks {
  int n = 0;
  std::vector<Envelope> envs;
  std::string new_queue_id() override { return "Q" + std::to_string(++n); }
  std::string rfc5322_date() override { return "Tue, 1 Dec 2026 00:00:00 +0000"; }
  int64_t now_unix() override { return 1800000000; }
  bool disk_below_floor() override { return false; }
  bool begin_message(const Envelope&) override { return true; }
  bool write_body(std::string_view) override { return true; }
  bool scan_message(const Envelope&) override { return true; }
  void commit_message(const Envelope& env) override { envs.push_back(env); }
  void abort_message() override {}
};

}  // namespace

// The deadline as the driver applies it: no verdict in time -> scan.failure_action's answer
// (451 4.7.1), the session goes on; the late verdict is refused by its ticket even though the
// next message is waiting for a verdict then; that one's own verdict is taken.
TEST(ScanWait, DriverAnswersAtTheDeadlineAndRefusesTheLateVerdict) {
  auto cfg = std::make_shared<Config>();
  cfg->smtp.forbid_unauth_pipelining = false;
  Hooks h;
  smtp::SmtpServerSession s(cfg, smtp::ClientInfo{"192.0.2.1", {}, 2}, h, false);
  s.take_output();
  FakeClock clock;
  mta::ScanWait w;
  ScanFacts facts;
  facts.engine_version = "1.4.6";
  auto answer = [&](const GateDecision& d) {
    smtp::ScanOutcome o;
    o.commit = d.action == GateAction::kCommit;
    o.header = d.header;
    o.reply = d.reply;
    o.subject_at = d.subject.at;
    o.subject_edit = d.subject.text;
    s.scan_done(o);
  };
  auto verdict = [&](uint64_t ticket, scan::Verdict v) {  // InboundConnection::scan_finished
    if (!s.awaiting_scan() || !w.take(ticket)) return false;
    scan::ScanResult r;
    r.verdict = v;
    r.signature = "Eicar-Test-Signature";
    answer(decide(cfg->scan, facts, r));
    return true;
  };
  s.feed("EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: x\r\n\r\nb\r\n.\r\n");
  ASSERT_TRUE(s.awaiting_scan());
  uint64_t t1 = w.begin(clock.steady(), cfg->scan.timeout);
  clock.advance(cfg->scan.timeout);
  EXPECT_FALSE(w.expire(clock.steady()));  // libclamav's own limit; the margin is not over
  clock.advance(mta::ScanWait::kMargin);
  ASSERT_TRUE(w.expire(clock.steady()));  // InboundConnection::scan_tick
  scan::ScanResult to;
  to.timeout = true;
  to.error = "timeout";
  auto d = decide(cfg->scan, facts, to);
  EXPECT_EQ(d.failure, "timeout");
  answer(d);
  EXPECT_NE(s.take_output().find("451 4.7.1 Message could not be scanned"), std::string::npos);
  EXPECT_TRUE(h.envs.empty());
  // The next message, scanning.
  s.feed("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: y\r\n\r\nb\r\n.\r\n");
  ASSERT_TRUE(s.awaiting_scan());
  uint64_t t2 = w.begin(clock.steady(), cfg->scan.timeout);
  EXPECT_FALSE(verdict(t1, scan::Verdict::kClean)) << "the first message's late verdict";
  EXPECT_TRUE(s.awaiting_scan());
  EXPECT_TRUE(h.envs.empty());
  EXPECT_TRUE(verdict(t2, scan::Verdict::kClean));
  ASSERT_EQ(h.envs.size(), 1u);
  EXPECT_EQ(h.envs[0].queue_id, "Q2");
}

// The tag reaches the envelope through the session.
TEST(SubjectTag, SessionPutsTheEditInTheEnvelope) {
  auto cfg = std::make_shared<Config>();
  cfg->smtp.forbid_unauth_pipelining = false;
  Hooks h;
  smtp::SmtpServerSession s(cfg, smtp::ClientInfo{"192.0.2.1", {}, 2}, h, false);
  s.feed("EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: x\r\n\r\nb\r\n.\r\n");
  smtp::ScanOutcome o;
  o.header = "X-Postern-Scan: v\r\n";
  o.subject_at = 120;
  o.subject_edit = "[VIRUS] ";
  s.scan_done(o);
  ASSERT_EQ(h.envs.size(), 1u);
  EXPECT_EQ(h.envs[0].subject_at, 120);
  EXPECT_EQ(h.envs[0].subject_edit, "[VIRUS] ");
}
