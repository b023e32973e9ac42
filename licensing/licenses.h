// licenses.h — the Licenses snapshot the scanning gate reads: for each of the six licenses its
// verified record (if any), its state at the time of evaluation, and its notice. Built by the
// control plane from verified records only (license_record.h) and published atomically
// (base/snapshot.h); nothing here changes after publication.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "licensing/calendar.h"
#include "licensing/license_kind.h"
#include "licensing/license_record.h"
#include "licensing/license_state.h"

namespace postern::licensing {

struct LicenseView {
  LicenseKind kind{};
  std::optional<LicenseRecord> record;  // the antispam record for kReputation
  Status status;
  std::string notice;  // expiry notice, or the "not activated" one; "" for none or hidden
  bool hideable = false;
};

struct Licenses {
  std::array<LicenseView, kAllLicenses.size()> items{};
  int64_t evaluated_at = 0;  // the (guarded) unix time used
  Day today = 0;
  TimeZone tz;
  bool hide_optional = false;
  const LicenseView& get(LicenseKind k) const { return items[static_cast<size_t>(k) - 1]; }
  // The engine may scan (any activated license; after grace with stale patterns).
  bool scanning_allowed(LicenseKind k) const { return get(k).status.state != State::kNotActivated; }
  // Component (pattern) updates may be installed.
  bool updates_allowed(LicenseKind k) const { return licensing::updates_allowed(get(k).status); }
};

// records: by the license the code was issued for (kAntispam's also serves kReputation).
Licenses evaluate_all(const std::map<LicenseKind, LicenseRecord>& records, int64_t now, const TimeZone& tz,
                      bool hide_optional);

}  // namespace postern::licensing
