// activation_code.h — activation codes: format, check symbol, parsing and making.
//
// A code reads `IM-K SSSS-SSSSS-SSSRR-RRRRC` without the space, e.g. `IM-2000A-0000B-7QX4M-9ZRT5`:
//   - a prefix: "IM", "AS" or "DL", then '-';
//   - 20 Crockford base32 symbols (0-9 A-Z without I L O U) in four groups of five joined by '-':
//       symbol 1       the license kind the code was issued for (LicenseKind's number, 1..6);
//       symbols 2..13  a 60-bit serial, most significant first (the issuer's counter);
//       symbols 14..19 30 random bits (a code cannot be guessed from the serial);
//       symbol 20      the check symbol over the whole code.
//   - The check symbol is c = sum_{i=0..19} a^(i+1) * v_i in GF(32) (x^5 + x^2 + 1, a = x), where
//     v_0 is the prefix's number (IM 1, AS 2, DL 3) and v_1..v_19 the data symbols. Every single
//     changed symbol (and every swap of two neighbours) changes the sum, so a typo, a changed
//     prefix or a bad check symbol is refused before any network call.
// Input is read as Crockford says: case-insensitive, O read as 0, I and L as 1; spaces around
// the code are ignored; hyphens must be where the format puts them.
// Security-sensitive: parse() meets admin input (the API, the CLI); it bounds the length and
// never throws. A valid-looking code proves nothing: only a signed record from the license
// server (license_record.h) activates a license.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "licensing/license_kind.h"

namespace postern::licensing {

inline constexpr const char* kCodeRefused = "The activation code is incorrect. Check the code and try again.";

struct ActivationCode {
  std::string prefix;  // "IM", "AS", "DL"
  LicenseKind kind{};  // what it was issued for
  uint64_t serial = 0;
  uint32_t random = 0;
  std::string text;    // canonical: upper case, hyphens in place
};

// nullopt for anything that is not a well-formed code with a right check symbol.
std::optional<ActivationCode> parse_code(std::string_view text);
// Is `text` a valid code that may activate license `k`? (Prefix, check symbol, kind.)
bool code_valid_for(std::string_view text, LicenseKind k);
// A code for `k` with `prefix` (must be allowed: prefix_allowed_for_issue).
std::string make_code(LicenseKind k, std::string_view prefix, uint64_t serial, uint32_t random);

}  // namespace postern::licensing
