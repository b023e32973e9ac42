// Tests of the scanning gate: the decision table (policy/scan_gate.h), the X-Postern-Scan header
// text, and the session side (mta/server/smtp_server_session.*): kAwaitScan holds input and
// timeouts, a refusal discards the message and answers, pipelined commands go on afterwards, a
// sender's own X-Postern-Scan is removed however it is split or folded.
#include <gtest/gtest.h>

#include "mta/server/smtp_server_session.h"
#include "policy/scan_gate.h"

using namespace postern;
using namespace postern::policy;
using postern::licensing::State;

namespace {

ScanFacts facts(bool stale = false) {
  ScanFacts f;
  f.engine_version = "1.4.6";
  f.patterns = {{"bundle", "2026120101", 3 * 86400 + 5}};
  f.stale = stale;
  return f;
}

scan::ScanResult result(scan::Verdict v, std::string sig = "", std::string err = "", bool timeout = false) {
  scan::ScanResult r;
  r.verdict = v;
  r.signature = std::move(sig);
  r.error = std::move(err);
  r.timeout = timeout;
  return r;
}

}  // namespace

TEST(ScanGate, PreScanByLicenseState) {
  ScanConfig sc;
  EXPECT_EQ(pre_scan(sc, State::kNotActivated), GatePre::kNotActivated);
  for (State s : {State::kActive, State::kExpiring, State::kGrace, State::kExpired})
    EXPECT_EQ(pre_scan(sc, s), GatePre::kScan);
  sc.enabled = false;
  EXPECT_EQ(pre_scan(sc, State::kActive), GatePre::kOff);
}

TEST(ScanGate, HeaderText) {
  EXPECT_EQ(scan_header_value(facts(), "clean"), "clamav/1.4.6; patterns=bundle:2026120101 age=3d; verdict=clean");
  EXPECT_EQ(scan_header_value(facts(true), "infected (Eicar-Test-Signature)"),
            "clamav/1.4.6; patterns=bundle:2026120101 age=3d; verdict=infected (Eicar-Test-Signature); stale");
  ScanFacts none;
  none.engine_version = "1.4.6";
  EXPECT_EQ(scan_header_value(none, "error (no_engine)"), "clamav/1.4.6; patterns=none; verdict=error (no_engine)");
  auto na = not_activated_decision(ScanConfig{});
  EXPECT_EQ(na.action, GateAction::kCommit);
  EXPECT_EQ(na.header, "X-Postern-Scan: not scanned; antivirus license not activated\r\n");
  EXPECT_EQ(format_age(59), "59s");
  EXPECT_EQ(format_age(7200), "2h");
}

TEST(ScanGate, DecisionTable) {
  struct Row {
    ScanAction on_virus;
    ScanFailureAction on_fail;
    scan::ScanResult r;
    GateAction want;
    const char* reply_prefix;
    const char* verdict;
  };
  auto inf = result(scan::Verdict::kInfected, "Eicar-Test-Signature");
  auto clean = result(scan::Verdict::kClean);
  auto tmo = result(scan::Verdict::kError, "", "timeout", true);
  auto full = result(scan::Verdict::kError, "", "queue_full");
  std::vector<Row> rows = {
      {ScanAction::kReject, ScanFailureAction::kTempfail, clean, GateAction::kCommit, "", "clean"},
      {ScanAction::kReject, ScanFailureAction::kTempfail, inf, GateAction::kReject, "554 5.7.1", "infected"},
      {ScanAction::kQuarantine, ScanFailureAction::kTempfail, inf, GateAction::kQuarantine, "", "infected"},
      {ScanAction::kTag, ScanFailureAction::kTempfail, inf, GateAction::kCommit, "", "infected"},
      {ScanAction::kDeliver, ScanFailureAction::kTempfail, inf, GateAction::kCommit, "", "infected"},
      {ScanAction::kReject, ScanFailureAction::kTempfail, tmo, GateAction::kTempfail, "451 4.7.1", "error"},
      {ScanAction::kReject, ScanFailureAction::kTempfail, full, GateAction::kTempfail, "451 4.7.1", "error"},
      {ScanAction::kReject, ScanFailureAction::kReject, tmo, GateAction::kReject, "554 5.7.1", "error"},
      {ScanAction::kReject, ScanFailureAction::kAccept, tmo, GateAction::kCommit, "", "error"},
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    ScanConfig sc;
    sc.on_virus = rows[i].on_virus;
    sc.failure_action = rows[i].on_fail;
    auto d = decide(sc, facts(), rows[i].r);
    EXPECT_EQ(d.action, rows[i].want) << "row " << i;
    EXPECT_EQ(d.verdict, rows[i].verdict) << "row " << i;
    EXPECT_EQ(d.reply.rfind(rows[i].reply_prefix, 0), 0u) << "row " << i << ": " << d.reply;
    if (d.action == GateAction::kCommit || d.action == GateAction::kQuarantine) {
      EXPECT_EQ(d.header.rfind("X-Postern-Scan: clamav/1.4.6;", 0), 0u) << "row " << i;
    }
  }
  ScanConfig sc;
  auto rej = decide(sc, facts(), inf);
  EXPECT_EQ(rej.reply, "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)");
  sc.failure_action = ScanFailureAction::kAccept;
  EXPECT_NE(decide(sc, facts(), tmo).header.find("verdict=error (timeout)"), std::string::npos);
  EXPECT_EQ(decide(sc, facts(), tmo).failure, "timeout");
  sc.header = false;
  EXPECT_EQ(decide(sc, facts(), clean).header, "");
}

TEST(ScanGate, SignatureNamesAreSanitized) {
  EXPECT_EQ(sanitize_signature("Evil\r\nX-Injected: 1;(x)"), "Evil__X-Injected:_1__x_");
  EXPECT_EQ(sanitize_signature(""), "unknown");
  EXPECT_EQ(sanitize_signature(std::string(500, 'A')).size(), 200u);
}

// --- the session side ------------------------------------------------------------------------

namespace {

struct GateHooks : smtp::SessionHooks {
  smtp::SmtpServerSession* session = nullptr;
  std::string body;
  std::vector<std::string> committed;
  std::vector<Envelope> envs;
  int scans = 0, aborts = 0;
  bool scan = true;
  std::string new_queue_id() override { return "Q" + std::to_string(++n); }
  std::string rfc5322_date() override { return "Thu, 01 Jan 2026 00:00:00 +0000"; }
  int64_t now_unix() override { return 1767225600; }
  bool disk_below_floor() override { return false; }
  bool begin_message(const Envelope&) override {
    body.clear();
    return true;
  }
  bool write_body(std::string_view b) override {
    body.append(b);
    return true;
  }
  bool scan_message(const Envelope&) override {
    ++scans;
    return scan;
  }
  void commit_message(const Envelope& env) override {
    committed.push_back(body);
    envs.push_back(env);
    session->commit_done(true);
  }
  void abort_message() override { ++aborts; }
  int n = 0;
};

std::shared_ptr<Config> config() {
  auto c = std::make_shared<Config>();
  c->hostname = "mx.test";
  c->relay.domains = {"example.test"};
  c->smtp.forbid_unauth_pipelining = false;
  return c;
}

struct Fixture {
  GateHooks h;
  smtp::ClientInfo ci{"192.0.2.1", {}, 2};
  smtp::SmtpServerSession s;
  explicit Fixture(std::shared_ptr<Config> c = config()) : s(c, ci, h, false) {
    h.session = &s;
    s.take_output();
  }
  std::string feed(const std::string& in) {
    s.feed(in);
    return s.take_output();
  }
};

const std::string kTx = "EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n";

}  // namespace

TEST(ScanGateSession, AwaitsTheVerdictThenRejectsAndGoesOn) {
  Fixture f;
  f.feed(kTx);
  std::string out = f.feed("Subject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n");
  EXPECT_EQ(f.s.state(), smtp::State::kAwaitScan);
  EXPECT_TRUE(f.s.awaiting_commit());  // no timeout while the scan runs
  EXPECT_EQ(out.find("250 2.0.0 Ok: queued"), std::string::npos);
  EXPECT_EQ(out.find("250 2.0.0 Ok\r\n"), std::string::npos) << "NOOP must wait for the verdict";
  f.s.timeout();
  EXPECT_FALSE(f.s.closed());
  smtp::ScanOutcome o;
  o.commit = false;
  o.reply = "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)";
  f.s.scan_done(o);
  out = f.s.take_output();
  EXPECT_EQ(out, "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)\r\n250 2.0.0 Ok\r\n");
  EXPECT_TRUE(f.h.committed.empty());
  EXPECT_EQ(f.h.aborts, 1);  // the written file is discarded
  EXPECT_EQ(f.s.state(), smtp::State::kReady);
  f.s.scan_done(o);  // a late second answer is ignored
  EXPECT_EQ(f.s.take_output(), "");
}

TEST(ScanGateSession, CommitCarriesTheHeaderAndQuarantine) {
  Fixture f;
  f.feed(kTx);
  f.feed("Subject: x\r\n\r\nbody\r\n.\r\n");
  smtp::ScanOutcome o;
  o.quarantine = true;
  o.signature = "Eicar-Test-Signature";
  o.header = "X-Postern-Scan: clamav/1.4.6; patterns=none; verdict=infected (Eicar-Test-Signature)\r\n";
  f.s.scan_done(o);
  EXPECT_NE(f.s.take_output().find("250 2.0.0 Ok: queued as Q1"), std::string::npos);
  ASSERT_EQ(f.h.envs.size(), 1u);
  EXPECT_EQ(f.h.envs[0].scan_header, o.header);
  EXPECT_EQ(f.h.envs[0].quarantined, "Eicar-Test-Signature");
}

TEST(ScanGateSession, ClientLeavingDuringTheScanDropsTheMessage) {
  Fixture f;
  f.feed(kTx);
  f.feed("Subject: x\r\n\r\nbody\r\n.\r\n");
  f.s.connection_lost();
  EXPECT_TRUE(f.s.closed());
  EXPECT_EQ(f.h.aborts, 1);
  f.s.scan_done(smtp::ScanOutcome{});
  EXPECT_TRUE(f.h.committed.empty());
}

TEST(ScanGateSession, NoGateCommitsAtOnce) {
  Fixture f;
  f.h.scan = false;
  f.feed(kTx);
  EXPECT_NE(f.feed("Subject: x\r\n\r\nbody\r\n.\r\n").find("250 2.0.0 Ok: queued"), std::string::npos);
}

// A sender's X-Postern-Scan (any case, folded, split anywhere) never reaches the spool; other
// fields and the body are untouched, and a body line that looks like the field stays.
TEST(ScanGateSession, ForgedScanHeaderIsRemoved) {
  const std::string msg =
      "Subject: hi\r\nx-POSTERN-scan: clamav/1.4.6; patterns=bundle:1 age=0d;\r\n verdict=clean\r\n"
      "X-Postern-Scanned: kept\r\nTo: b@example.test\r\n\r\nX-Postern-Scan: in the body stays\r\n";
  for (auto policy : {LongLinePolicy::kFold, LongLinePolicy::kAccept, LongLinePolicy::kReject}) {
    for (size_t cut = 0; cut <= msg.size(); ++cut) {
      auto c = config();
      c->smtp.long_lines = policy;
      Fixture f(c);
      f.h.scan = false;
      f.feed(kTx);
      f.feed(msg.substr(0, cut));
      f.feed(msg.substr(cut) + ".\r\n");
      ASSERT_EQ(f.h.committed.size(), 1u) << cut;
      const std::string& b = f.h.committed[0];
      auto head = b.substr(0, b.find("\r\n\r\n") + 2);
      EXPECT_EQ(head.find("patterns=bundle"), std::string::npos) << "cut " << cut << ":\n" << b;
      EXPECT_EQ(head.find("verdict=clean"), std::string::npos) << "cut " << cut;
      EXPECT_NE(b.find("Subject: hi\r\nX-Postern-Scanned: kept\r\nTo: b@example.test\r\n\r\n"), std::string::npos)
          << "cut " << cut << ":\n" << b;
      EXPECT_NE(b.find("\r\n\r\nX-Postern-Scan: in the body stays\r\n"), std::string::npos) << "cut " << cut;
    }
  }
  auto c = config();
  c->scan.enabled = false;  // no gate: the field is the sender's business
  Fixture f(c);
  f.h.scan = false;
  f.feed(kTx);
  f.feed(msg + ".\r\n");
  ASSERT_EQ(f.h.committed.size(), 1u);
  EXPECT_NE(f.h.committed[0].find("x-POSTERN-scan: clamav"), std::string::npos);
}

TEST(ScanGateConfig, KeysDefaultsAndRefusals) {
  auto c = parse_config("", "t.toml");
  EXPECT_TRUE(c.scan.enabled);
  EXPECT_EQ(c.scan.threads, 2u);
  EXPECT_EQ(c.scan.timeout, std::chrono::seconds(30));
  EXPECT_EQ(c.scan.max_scan_size, 25ull << 20);
  EXPECT_EQ(c.scan.on_virus, ScanAction::kReject);
  EXPECT_EQ(c.scan.failure_action, ScanFailureAction::kTempfail);
  EXPECT_TRUE(c.scan.header);
  EXPECT_EQ(c.scan.tag_subject, "[VIRUS] ");
  EXPECT_EQ(parse_config("[scan]\ntag_subject = \"***INFECTED*** \"\n", "t.toml").scan.tag_subject, "***INFECTED*** ");
  EXPECT_EQ(parse_config("[scan]\ntag_subject = \"\"\n", "t.toml").scan.tag_subject, "");
  c = parse_config("[scan]\nenabled = false\nthreads = 4\ntimeout = \"2s\"\nmax_scan_size = \"512KiB\"\n"
                   "on_virus = \"quarantine\"\nfailure_action = \"accept\"\nclamav_database_dir = \"/var/lib/clamav\"\n"
                   "header = false\nmax_files = 5\nmax_recursion = 3\nqueue_size = 7\n",
                   "t.toml");
  EXPECT_FALSE(c.scan.enabled);
  EXPECT_EQ(c.scan.threads, 4u);
  EXPECT_EQ(c.scan.max_scan_size, 512u * 1024);
  EXPECT_EQ(c.scan.on_virus, ScanAction::kQuarantine);
  EXPECT_EQ(c.scan.failure_action, ScanFailureAction::kAccept);
  EXPECT_EQ(c.scan.clamav_database_dir, "/var/lib/clamav");
  EXPECT_EQ(c.scan.queue_size, 7u);
  EXPECT_EQ(parse_config("[scan]\nmax_scan_size = 4096\n", "t.toml").scan.max_scan_size, 4096u);
  const std::string long_tag = "tag_subject = \"" + std::string(65, 'x') + "\"";
  for (auto [text, key] : {std::pair{"on_virus = \"drop\"", "scan.on_virus"},
                           std::pair{"failure_action = \"pass\"", "scan.failure_action"},
                           std::pair{"max_scan_size = \"25XB\"", "scan.max_scan_size"},
                           std::pair{"threads = 0", "scan.threads"},
                           std::pair{"timeout = \"0s\"", "scan.timeout"},
                           std::pair{"tag_subject = \"[V]\\r\\nBcc: x\"", "scan.tag_subject"},
                           std::pair{long_tag.c_str(), "scan.tag_subject"},
                           std::pair{"bogus = 1", "scan.bogus"}}) {
    try {
      parse_config(std::string("[scan]\n") + text + "\n", "t.toml");
      ADD_FAILURE() << text << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}
