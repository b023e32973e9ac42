// duration.h — parsing of human durations ("30s", "5m", "1h", "5d") and sizes used by the config.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace postern {

// "250ms", "30s", "5m", "1h", "5d", "2w"; a bare number is seconds. nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view s);

}  // namespace postern
