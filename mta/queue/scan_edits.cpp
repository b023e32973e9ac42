// scan_edits.cpp — see scan_edits.h.
#include "mta/queue/scan_edits.h"

#include <ctime>

namespace postern::queue {

std::string scan_prefix(const Envelope& env) {
  if (env.scan_header.empty()) return {};
  std::string h = env.scan_header;
  if (env.released_at && h.size() >= 2 && h.ends_with("\r\n")) {
    std::time_t t = static_cast<std::time_t>(env.released_at);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char b[32];
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    h.insert(h.size() - 2, std::string("; released from quarantine ") + b);
  }
  return h;
}

bool has_subject_edit(const Envelope& env, uint64_t stored) {
  return env.subject_at >= 0 && !env.subject_edit.empty() && static_cast<uint64_t>(env.subject_at) <= stored;
}

uint64_t scan_edits_size(const Envelope& env, uint64_t stored) {
  return scan_prefix(env).size() + (has_subject_edit(env, stored) ? env.subject_edit.size() : 0);
}

void apply_scan_edits(const Envelope& env, std::string& msg) {
  if (has_subject_edit(env, msg.size())) msg.insert(static_cast<size_t>(env.subject_at), env.subject_edit);
  msg.insert(0, scan_prefix(env));
}

}  // namespace postern::queue
