// vendor_db.h — the vendor side's database of issued activation codes, one JSON file shared by
// postern-issue-code (which adds and renews codes) and postern-license-server (which answers
// from it and re-reads it when it changes, so a renewal is served without a restart).
//
//   {"format": "postern-license-db-1", "next_serial": 3,
//    "codes": {"IM-...": {"license": "antivirus", "expires": "2027-03-31", "serial": 1,
//                         "issued_at": 1800000000, "renewed_at": 0}}}
//
// Writes go to FILE.tmp, are fsync()ed and renamed over FILE (atomic: a reader sees the old or
// the new file, never half of one), under an flock() on FILE.lock so two issuers never lose
// each other's codes. Security-sensitive: the file is the vendor's authority; load() refuses
// anything malformed instead of guessing.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "licensing/calendar.h"
#include "licensing/license_kind.h"

namespace postern::licensing {

struct IssuedCode {
  LicenseKind kind{};
  Day expires = 0;
  uint64_t serial = 0;
  int64_t issued_at = 0;
  int64_t renewed_at = 0;
};

struct VendorDb {
  uint64_t next_serial = 1;
  std::map<std::string, IssuedCode> codes;  // canonical code -> what was issued

  // A missing file is an empty database. "" or the error.
  static std::string load(const std::string& path, VendorDb& out);
  std::string save(const std::string& path) const;

 private:
  static std::string load_codes(const std::string& path, const nlohmann::json& codes, VendorDb& out);
};

// Holds FILE.lock (flock, exclusive) for its lifetime.
class VendorDbLock {
 public:
  explicit VendorDbLock(const std::string& db_path);
  ~VendorDbLock();
  VendorDbLock(const VendorDbLock&) = delete;
  VendorDbLock& operator=(const VendorDbLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace postern::licensing
