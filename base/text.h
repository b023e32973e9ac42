// text.h — small byte-level checks on message text.
#pragma once

#include <string>
#include <string_view>

namespace postern {

// True if `s` holds a byte >= 0x80 (8-bit content). Runs over every message received.
bool has_8bit(std::string_view s);

// ASCII lower case (A-Z only, whatever the locale): domains, header names, keywords.
std::string ascii_lower(std::string_view s);

}  // namespace postern
