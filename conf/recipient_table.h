// recipient_table.h — the recipient map (relay.recipient_map) as loaded with the configuration.
//
// The map names the recipients that exist at our relay domains, so unknown users are refused
// at RCPT (550 5.1.1) instead of being accepted and bounced later (backscatter). It is a file or
// a directory, read at start and on every SIGHUP with the rest of the configuration; a bad map is
// refused like a bad key (the old configuration, and its map, keep serving). The decision itself
// is policy/recipient_map.h.
//
//   file:       one entry per line: "user@example.test", or "@example.test" (every address there);
//               '#' starts a comment; case does not matter.
//   directory:  one file per domain, named after it ("example.test"), one local part per line
//               ("alice"), or full addresses, or "@" (every address at that domain). Files whose
//               names start with '.' or end in '~' are skipped.
// Security-sensitive: none of this comes from the network, but it is bounded all the same
// (line length, entries, total size) so that a wrong path (a log file, /dev/zero) fails cleanly.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>

namespace postern {

struct RecipientTable {
  std::unordered_set<std::string> addresses;  // "local@domain", lowercased
  std::unordered_set<std::string> catch_all;  // domains whose every address exists
  uint64_t files = 0;
};

// Throws ConfigError naming `key` and the file and line at fault.
RecipientTable load_recipient_table(const std::string& path, const std::string& key);

}  // namespace postern
