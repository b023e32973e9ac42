// license_kind.cpp — see license_kind.h.
#include "licensing/license_kind.h"

namespace postern::licensing {

const char* cli_name(LicenseKind k) {
  switch (k) {
    case LicenseKind::kAntivirus: return "antivirus";
    case LicenseKind::kAntispam: return "antispam";
    case LicenseKind::kReputation: return "reputation";
    case LicenseKind::kPrefilter: return "prefilter";
    case LicenseKind::kDlp: return "dlp";
    case LicenseKind::kEncryption: return "encryption";
  }
  return "?";
}

const char* display_name(LicenseKind k) {
  switch (k) {
    case LicenseKind::kAntivirus: return "Antivirus and content filter";
    case LicenseKind::kAntispam: return "Antispam (content scanning)";
    case LicenseKind::kReputation: return "Email reputation and IP profiler";
    case LicenseKind::kPrefilter: return "Cloud pre-filter";
    case LicenseKind::kDlp: return "Regulatory compliance (DLP)";
    case LicenseKind::kEncryption: return "Email encryption";
  }
  return "?";
}

std::optional<LicenseKind> kind_from_cli(std::string_view name) {
  for (LicenseKind k : kAllLicenses)
    if (name == cli_name(k)) return k;
  return std::nullopt;
}

std::optional<LicenseKind> kind_from_number(int n) {
  for (LicenseKind k : kAllLicenses)
    if (static_cast<int>(k) == n) return k;
  return std::nullopt;
}

bool is_optional(LicenseKind k) {
  return k == LicenseKind::kPrefilter || k == LicenseKind::kDlp || k == LicenseKind::kEncryption;
}

bool can_activate(LicenseKind k) { return k != LicenseKind::kEncryption; }

bool prefix_allowed_for_issue(LicenseKind k, std::string_view p) {
  switch (k) {
    case LicenseKind::kAntivirus:
    case LicenseKind::kPrefilter: return p == "IM";
    case LicenseKind::kAntispam: return p == "IM" || p == "AS";
    case LicenseKind::kDlp: return p == "DL";
    case LicenseKind::kReputation:  // issued as an antispam code
    case LicenseKind::kEncryption: return false;
  }
  return false;
}

std::string_view default_prefix(LicenseKind k) { return k == LicenseKind::kDlp ? "DL" : "IM"; }

bool code_fits(LicenseKind k, std::string_view prefix, LicenseKind code_kind) {
  if (!can_activate(k)) return false;
  LicenseKind want = k == LicenseKind::kReputation ? LicenseKind::kAntispam : k;
  return code_kind == want && prefix_allowed_for_issue(want, prefix);
}

}  // namespace postern::licensing
