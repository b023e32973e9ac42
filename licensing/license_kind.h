// license_kind.h — the six licenses Postern knows (SPEC.md section 5, seed 004): their CLI names,
// display names, which activation-code prefixes each accepts, and which are optional.
// Nothing here is security-sensitive; activation_code.h refuses what this table does not allow.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace postern::licensing {

// The numeric values are carried inside activation codes (activation_code.h): never renumber.
enum class LicenseKind : int {
  kAntivirus = 1,   // antivirus and content filter, IM-
  kAntispam = 2,    // antispam (content scanning), IM- or AS-; also activates kReputation
  kReputation = 3,  // email reputation and IP profiler: the antispam code
  kPrefilter = 4,   // cloud pre-filter, IM-, optional
  kDlp = 5,         // regulatory compliance (DLP), DL-, optional
  kEncryption = 6,  // email encryption: not sold, cannot be activated
};

inline constexpr std::array<LicenseKind, 6> kAllLicenses = {
    LicenseKind::kAntivirus, LicenseKind::kAntispam, LicenseKind::kReputation,
    LicenseKind::kPrefilter, LicenseKind::kDlp,      LicenseKind::kEncryption};

// "antivirus", "antispam", "reputation", "prefilter", "dlp", "encryption".
const char* cli_name(LicenseKind k);
// "Antivirus and content filter", ... as notices and mails name them.
const char* display_name(LicenseKind k);
std::optional<LicenseKind> kind_from_cli(std::string_view name);
std::optional<LicenseKind> kind_from_number(int n);
bool is_optional(LicenseKind k);     // prefilter, dlp (and encryption, which is never sold)
bool can_activate(LicenseKind k);    // false only for encryption
// May a code with this prefix ("IM", "AS", "DL") and made for license `code_kind` activate `k`?
// kReputation takes the antispam code; kAntispam takes IM- or AS-.
bool code_fits(LicenseKind k, std::string_view prefix, LicenseKind code_kind);
// The prefixes a code for `k` may be issued with; the first is the default.
std::string_view default_prefix(LicenseKind k);
bool prefix_allowed_for_issue(LicenseKind k, std::string_view prefix);

}  // namespace postern::licensing
