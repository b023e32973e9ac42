// scan_gate.cpp — see scan_gate.h. The decision table lives in decide().
#include "policy/scan_gate.h"

namespace postern::policy {

GatePre pre_scan(const ScanConfig& sc, licensing::State antivirus) {
  if (!sc.enabled) return GatePre::kOff;
  if (antivirus == licensing::State::kNotActivated) return GatePre::kNotActivated;
  return GatePre::kScan;
}

std::string sanitize_signature(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (o.size() >= 200) break;
    o += (c > 0x20 && c < 0x7f && c != ';' && c != '(' && c != ')') ? static_cast<char>(c) : '_';
  }
  return o.empty() ? "unknown" : o;
}

std::string format_age(int64_t s) {
  if (s < 0) s = 0;
  if (s >= 86400) return std::to_string(s / 86400) + "d";
  if (s >= 3600) return std::to_string(s / 3600) + "h";
  if (s >= 60) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

std::string scan_header_value(const ScanFacts& f, const std::string& verdict_text) {
  std::string v = f.engine + "/" + f.engine_version + "; patterns=";
  if (f.patterns.empty()) v += "none";
  for (size_t i = 0; i < f.patterns.size(); ++i) {
    auto& p = f.patterns[i];
    v += (i ? ", " : "") + sanitize_signature(p.source) + ":" + sanitize_signature(p.version) +
         " age=" + format_age(p.age_seconds);
  }
  v += "; verdict=" + verdict_text;
  if (f.stale) v += "; stale";
  return v;
}

namespace {

std::string header_line(const ScanConfig& sc, const std::string& value) {
  return sc.header ? "X-Postern-Scan: " + value + "\r\n" : std::string();
}

GateDecision failure(const ScanConfig& sc, const ScanFacts& f, const scan::ScanResult& r) {
  GateDecision d;
  d.verdict = "error";
  d.failure = r.timeout ? "timeout" : (r.error.empty() ? "engine" : r.error);
  switch (sc.failure_action) {
    case ScanFailureAction::kTempfail:
      d.action = GateAction::kTempfail;
      d.reply = "451 4.7.1 Message could not be scanned for viruses, try again later";
      break;
    case ScanFailureAction::kReject:
      d.action = GateAction::kReject;
      d.reply = "554 5.7.1 Message could not be scanned for viruses";
      break;
    case ScanFailureAction::kAccept:
      d.action = GateAction::kCommit;
      d.header = header_line(sc, scan_header_value(f, "error (" + sanitize_signature(d.failure) + ")"));
      break;
  }
  return d;
}

}  // namespace

GateDecision not_activated_decision(const ScanConfig& sc) {
  GateDecision d;
  d.action = GateAction::kCommit;
  d.verdict = "not_scanned";
  d.header = header_line(sc, "not scanned; antivirus license not activated");
  return d;
}

GateDecision decide(const ScanConfig& sc, const ScanFacts& f, const scan::ScanResult& r) {
  if (r.verdict == scan::Verdict::kError) return failure(sc, f, r);
  GateDecision d;
  if (r.verdict == scan::Verdict::kClean) {
    d.action = GateAction::kCommit;
    d.verdict = "clean";
    d.header = header_line(sc, scan_header_value(f, "clean"));
    return d;
  }
  d.verdict = "infected";
  d.signature = sanitize_signature(r.signature);
  d.header = header_line(sc, scan_header_value(f, "infected (" + d.signature + ")"));
  switch (sc.on_virus) {
    case ScanAction::kReject:
      d.action = GateAction::kReject;
      d.header.clear();
      d.reply = "554 5.7.1 Message rejected: virus found (" + d.signature + ")";
      break;
    case ScanAction::kQuarantine: d.action = GateAction::kQuarantine; break;
    case ScanAction::kTag:
    case ScanAction::kDeliver: d.action = GateAction::kCommit; break;
  }
  return d;
}

}  // namespace postern::policy
