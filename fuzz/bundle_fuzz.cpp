// bundle_fuzz.cpp — pattern bundle manifests and offline bundle archives from hostile bytes.
// The first byte picks the input: even = a manifest (parse_manifest; an accepted manifest's
// serialisation parses again to the same content), odd = a tar archive unpacked with small limits
// into a fresh directory (libarchive behind unpack_bundle_bytes). Checks: what an unpack leaves is
// only plain files directly inside the directory, within the limits, even when it is refused.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "scan/bundle.h"
#include "scan/bundle_archive.h"

using namespace postern::scan;
namespace fs = std::filesystem;

namespace {

std::string g_root;

void check_dir(const std::string& dir, const UnpackLimits& lim) {
  uint64_t total = 0;
  size_t entries = 0;
  for (auto& e : fs::directory_iterator(dir)) {
    struct stat st {};
    if (lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) abort();  // no link, dir, device, FIFO
    if (static_cast<uint64_t>(st.st_size) > lim.max_entry_size) abort();
    total += static_cast<uint64_t>(st.st_size);
    ++entries;
  }
  if (entries > lim.max_entries || total > lim.max_total_size) abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/postern-fuzz-bundle-XXXXXX";
  if (!mkdtemp(tmpl)) abort();
  g_root = tmpl;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    Manifest m;
    if (parse_manifest(rest, m).ok()) {
      Manifest again;
      std::string text = manifest_json(m);
      if (!parse_manifest(text, again).ok()) abort();
      if (again.content_id() != m.content_id() || again.version != m.version) abort();
    }
    return 0;
  }
  UnpackLimits lim;
  lim.max_entries = 8;
  lim.max_entry_size = 64 << 10;
  lim.max_total_size = 256 << 10;
  std::string dir = g_root + "/u";
  fs::remove_all(dir);
  fs::create_directory(dir);
  (void)unpack_bundle_bytes(std::string(rest), dir, lim);
  check_dir(dir, lim);
  // Nothing may have been written beside the directory.
  size_t n = 0;
  for (auto& e : fs::directory_iterator(g_root)) {
    (void)e;
    ++n;
  }
  if (n != 1) abort();
  fs::remove_all(dir);
  return 0;
}
