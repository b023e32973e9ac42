// bundle_archive.h — the offline bundle file: one tar archive (libarchive) holding
// manifest.json, manifest.sig and the signature files, all at the top level.
//
// Security-sensitive: unpack() meets a file an admin was handed. It writes only plain files
// directly inside `dir`, never follows or creates links, and refuses (with the reason, before
// anything is used) absolute paths, "..", directories, links, devices and FIFOs, names that are
// neither the manifest, its signature nor a valid signature file name, duplicates, more than
// max_entries entries, an entry over max_entry_size, a total over max_total_size, and a
// truncated or corrupt archive. Names are checked against the manifest afterwards by
// verify_files() (anything unlisted is refused there).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scan/bundle.h"

namespace postern::scan {

struct UnpackLimits {
  size_t max_entries = kMaxFiles + 2;
  uint64_t max_entry_size = 64ull << 20;
  uint64_t max_total_size = 256ull << 20;
};

// Unpacks the archive at `path` into the (empty) directory `dir`.
Failure unpack_bundle(const std::string& path, const std::string& dir, const UnpackLimits& lim);
// Same, from bytes in memory (an upload through the API).
Failure unpack_bundle_bytes(const std::string& bytes, const std::string& dir, const UnpackLimits& lim);

struct ArchiveEntry {
  std::string name;
  std::string data;
};
// Writes a tar (pax) archive; "" on success, else the error.
std::string write_bundle(const std::string& path, const std::vector<ArchiveEntry>& entries);
// Reads every entry of a bundle we made ourselves (the vendor tool's resign), same checks.
Failure read_bundle_entries(const std::string& path, const UnpackLimits& lim, std::vector<ArchiveEntry>& out);

}  // namespace postern::scan
