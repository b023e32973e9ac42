// scan_edits.h — a message as delivered: the stored file, with what the scanning gate decided
// after the file was written (policy/scan_gate.h) added on the way out, never by rewriting it:
// the X-Postern-Scan line(s) in front (noting a release from quarantine), and the Subject edit of
// scan.on_virus = "tag" at its recorded offset. Delivery streams it (outbound_connection.cpp);
// a DSN returns it (scheduler.cpp), so the bounce quotes the header the recipient would have seen.
#pragma once

#include <cstdint>
#include <string>

#include "mta/envelope.h"

namespace postern::queue {

// The line(s) sent in front of the stored message ("" = none).
std::string scan_prefix(const Envelope& env);
// The Subject edit applies to a stored message of `stored` bytes (the offset is inside it).
bool has_subject_edit(const Envelope& env, uint64_t stored);
// What the delivered form adds to a stored message of `stored` bytes.
uint64_t scan_edits_size(const Envelope& env, uint64_t stored);
// `msg` = the stored message's first msg.size() bytes (the whole of it, or a prefix of it, as a
// DSN reads it): turned into the delivered form; an edit past its end is left out.
void apply_scan_edits(const Envelope& env, std::string& msg);

}  // namespace postern::queue
