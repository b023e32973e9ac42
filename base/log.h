// log.h — logging setup. One line per event, key=value fields, queue_id=... where there is one.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace postern {

// Sends logs to stderr and, when path is not empty, to that file too. level: trace..critical.
void setup_logging(const std::string& file_path, const std::string& level);

}  // namespace postern
