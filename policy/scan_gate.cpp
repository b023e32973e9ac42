// scan_gate.cpp — see scan_gate.h. The decision table lives in decide().
#include "policy/scan_gate.h"

#include <cctype>

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

bool wsp(char c) { return c == ' ' || c == '\t'; }

bool iequal_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  return true;
}

}  // namespace

SubjectEdit subject_edit(std::string_view head, bool complete, const std::string& tag) {
  SubjectEdit e;
  std::string_view t = tag;
  while (!t.empty() && wsp(t.back())) t.remove_suffix(1);  // "[VIRUS] " -> "[VIRUS]"
  if (t.empty()) return e;
  size_t pos = 0;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      if (!complete) return e;  // the header section goes on past what was read
      eol = head.size();
    }
    std::string_view line = head.substr(pos, eol - pos);
    size_t colon = line.find(':');
    bool field = !line.empty() && !wsp(line[0]) && colon != std::string_view::npos && colon > 0;
    for (size_t i = 0; field && i < colon; ++i) {
      unsigned char c = static_cast<unsigned char>(line[i]);
      if (!(c > 32 && c < 127) && !wsp(line[i])) field = false;
    }
    if (!field && (line.empty() || !wsp(line[0]))) {  // the empty line, or the body: the section ended
      e.at = static_cast<int64_t>(pos);
      e.text = "Subject: " + std::string(t) + "\r\n";
      return e;
    }
    std::string_view name = field ? line.substr(0, colon) : std::string_view();
    while (!name.empty() && wsp(name.back())) name.remove_suffix(1);  // obs-field: "Subject :"
    if (field && name.size() == 7 && iequal_prefix(name, "subject")) {
      // The unfolded text: what the tag would be compared with (its first bytes are enough).
      std::string text;  // leading white space and folding left out
      size_t p = pos + colon + 1;
      while (p < head.size() && text.size() < t.size()) {
        if (head.compare(p, 2, "\r\n") == 0) {
          if (p + 2 < head.size() && wsp(head[p + 2])) {
            p += 2;
            continue;
          }
          break;
        }
        if (!text.empty() || !wsp(head[p])) text += head[p];
        ++p;
      }
      if (iequal_prefix(text, t)) return e;  // tagged already
      size_t at = colon + 1;
      while (at < line.size() && wsp(line[at])) ++at;
      e.at = static_cast<int64_t>(pos + at);
      if (at == line.size()) {  // no text on the first line: " [VIRUS]" before its end
        e.at = static_cast<int64_t>(pos + colon + 1);
        e.text = " " + std::string(t);
      } else {
        e.text = (at == colon + 1 ? " " : "") + std::string(t) + " ";
      }
      return e;
    }
    if (eol == head.size()) break;
    pos = eol + 2;
  }
  if (complete) {  // header fields only, no body
    e.at = static_cast<int64_t>(head.size());
    e.text = (head.empty() || head.ends_with("\r\n") ? "" : "\r\n") + std::string("Subject: ") + std::string(t) + "\r\n";
  }
  return e;
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

GateDecision decide(const ScanConfig& sc, const ScanFacts& f, const scan::ScanResult& r, const SubjectEdit& subject) {
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
      d.action = GateAction::kCommit;
      d.subject = subject;
      break;
    case ScanAction::kDeliver: d.action = GateAction::kCommit; break;
  }
  return d;
}

}  // namespace postern::policy
