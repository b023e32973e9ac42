#include "base/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <vector>

namespace postern {

void setup_logging(const std::string& file_path, const std::string& level) {
  std::vector<spdlog::sink_ptr> sinks;
  auto err = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  sinks.push_back(err);
  if (!file_path.empty()) {
    // With a log file, the terminal gets warnings and errors only; the file gets everything.
    err->set_level(spdlog::level::warn);
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file_path, false));
  }
  auto logger = std::make_shared<spdlog::logger>("postern", sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l [%t] %v");
  logger->set_level(spdlog::level::from_str(level));
  // Buffered: flushed every second and at once for warnings; one write per line would cost
  // more than the SMTP work itself at thousands of messages a second.
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  spdlog::flush_every(std::chrono::seconds(1));
}

}  // namespace postern
