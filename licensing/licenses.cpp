// licenses.cpp — see licenses.h.
#include "licensing/licenses.h"

namespace postern::licensing {

Licenses evaluate_all(const std::map<LicenseKind, LicenseRecord>& records, int64_t now, const TimeZone& tz,
                      bool hide_optional) {
  Licenses out;
  out.evaluated_at = now;
  out.today = tz.day_of(now);
  out.tz = tz;
  out.hide_optional = hide_optional;
  for (LicenseKind k : kAllLicenses) {
    LicenseView& v = out.items[static_cast<size_t>(k) - 1];
    v.kind = k;
    v.hideable = is_optional(k);
    LicenseKind from = k == LicenseKind::kReputation ? LicenseKind::kAntispam : k;
    if (auto it = records.find(from); it != records.end() && can_activate(k)) v.record = it->second;
    v.status = evaluate(v.record ? std::optional<Day>(v.record->expires) : std::nullopt, out.today);
    v.notice = expiry_notice(k, v.status);
    if (v.notice.empty() && !(v.hideable && hide_optional)) v.notice = not_activated_notice(k, v.status);
  }
  return out;
}

}  // namespace postern::licensing
