// log.h — logging setup. One line per event, key=value fields, queue_id=... where there is one.
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

namespace postern {

// Sends logs to stderr and, when path is not empty, to that file too. level: trace..critical.
void setup_logging(const std::string& file_path, const std::string& level);

// A peer-supplied string made safe for one log line: CR, LF, NUL, ESC, other control bytes,
// DEL, backslash and bytes >= 0x80 that are not valid UTF-8 become \xHH (backslash as \\), so
// a reply text or HELO name can never start a second, forged log event. Cut at `max` bytes
// (then "..." follows).
std::string esc(std::string_view s, size_t max = 512);

}  // namespace postern
