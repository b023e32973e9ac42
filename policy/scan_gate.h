// scan_gate.h — the scanning gate's decision, pure: license state x engine x scan result ->
// what the session does (commit, quarantine, reject, tempfail), the X-Postern-Scan header line and
// the SMTP reply. No sockets, no threads, no clock (ages come in as numbers); table-tested.
//
// Security-sensitive: an engine fault, a timeout, a full scan queue or a missing engine is never
// a silent pass: it follows scan.failure_action, and "accept" says verdict=error in the header.
// Signature names go into replies and headers only as printable ASCII without ';' or CR/LF.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "licensing/license_state.h"
#include "scan/engine.h"

namespace postern::policy {

// Before the scan: does the engine run for this message?
enum class GatePre {
  kOff,           // scan.enabled = false: no scan, no header
  kNotActivated,  // the antivirus license is not activated: no scan, the header says so
  kScan,          // active, expiring, grace, expired (after grace: stale patterns)
};
GatePre pre_scan(const ScanConfig& sc, licensing::State antivirus);

// What the header says about the engine that scanned.
struct PatternInfo {
  std::string source;
  std::string version;
  int64_t age_seconds = 0;
};
struct ScanFacts {
  std::string engine = "clamav";
  std::string engine_version;      // "1.4.6"
  std::vector<PatternInfo> patterns;  // empty: no engine was available
  bool stale = false;              // the antivirus license is past grace
};

enum class GateAction { kCommit, kQuarantine, kReject, kTempfail };

// scan.on_virus = "tag": the Subject edit, kept in the envelope and made on delivery (the stored
// file is not rewritten): `text` goes in at byte `at` of the stored message. at < 0: no edit.
struct SubjectEdit {
  int64_t at = -1;
  std::string text;
};
// Where the tag goes in `head`, the stored message's first bytes (its header section, Postern's
// Received: first): in front of the first Subject field's text (after the colon and its white
// space; a folded Subject, one with no text on its first line, gets it on the first line); no
// edit when the text already starts with the tag (added once). No Subject field: one is added at
// the end of the header section. No edit when the header section does not end within `head`
// (complete: the whole message is in head) or the tag is empty.
SubjectEdit subject_edit(std::string_view head, bool complete, const std::string& tag);

struct GateDecision {
  GateAction action = GateAction::kTempfail;
  std::string header;     // "X-Postern-Scan: ...\r\n" or "" (no header)
  std::string reply;      // kReject / kTempfail: the full SMTP reply line (no CRLF)
  std::string verdict;    // "clean", "infected", "error", "not_scanned" (metrics, logs)
  std::string signature;  // infected: the (sanitized) signature name
  std::string failure;    // error: the reason for metrics ("timeout", "engine", "queue_full", "no_engine")
  SubjectEdit subject;    // kCommit of an infected message under on_virus = "tag"
};

// The header value for a message scanned (or not) as described.
std::string scan_header_value(const ScanFacts& f, const std::string& verdict_text);
// kNotActivated: commit with "X-Postern-Scan: not scanned; antivirus license not activated".
GateDecision not_activated_decision(const ScanConfig& sc);
// After the scan (or a failure before it: r.verdict = kError, r.error = the failure reason).
// `subject`: the edit subject_edit() found (used for on_virus = "tag" only).
GateDecision decide(const ScanConfig& sc, const ScanFacts& f, const scan::ScanResult& r,
                    const SubjectEdit& subject = {});
// Printable ASCII, no ';' '(' ')' or controls, at most 200 octets.
std::string sanitize_signature(const std::string& s);
// "3d", "5h", "12m", "40s".
std::string format_age(int64_t seconds);

}  // namespace postern::policy
