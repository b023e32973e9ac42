// bundle_archive.cpp — see bundle_archive.h. Security-sensitive: every check on an entry runs
// before a byte of it is written.
#include "scan/bundle_archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <set>

namespace postern::scan {
namespace {

struct ReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ReadPtr = std::unique_ptr<archive, ReadFree>;

Failure unsafe(std::string why) { return {BundleError::kArchive, "bundle file refused: " + std::move(why)}; }

// The entry's name as a plain name, or a refusal.
Failure check_entry(archive_entry* e, std::string& name) {
  const char* p = archive_entry_pathname(e);
  name = p ? p : "";
  std::string shown = name.substr(0, 80);
  if (name.empty()) return unsafe("an entry has no name");
  if (name[0] == '/') return unsafe("absolute path '" + shown + "'");
  if (name.rfind("./", 0) == 0) name = name.substr(2);
  if (name == ".." || name.find("../") != std::string::npos || name.find("/..") != std::string::npos)
    return unsafe("path escapes the bundle: '" + shown + "'");
  if (archive_entry_hardlink(e) || archive_entry_symlink(e)) return unsafe("link '" + shown + "'");
  if (archive_entry_filetype(e) != AE_IFREG) return unsafe("'" + shown + "' is not a regular file (directory, link or device)");
  if (name.find('/') != std::string::npos) return unsafe("'" + shown + "' is in a directory: entries are plain names");
  if (name != kManifestName && name != kSignatureName && !valid_file_name(name))
    return unsafe("'" + shown + "' is neither manifest.json, manifest.sig nor a ClamAV signature file name");
  return {};
}

using Sink = std::function<Failure(const std::string& name, archive* a, uint64_t size)>;

Failure walk(archive* a, const UnpackLimits& lim, const Sink& sink) {
  std::set<std::string> seen;
  uint64_t total = 0;
  archive_entry* e = nullptr;
  for (size_t n = 0;; ++n) {
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK)
      return {BundleError::kTruncated, std::string("bundle file is truncated or corrupt: ") + archive_error_string(a)};
    if (n >= lim.max_entries) return unsafe("more than " + std::to_string(lim.max_entries) + " entries");
    std::string name;
    if (auto f = check_entry(e, name); !f.ok()) return f;
    if (!seen.insert(name).second) return unsafe("'" + name + "' appears twice");
    int64_t size = archive_entry_size(e);
    if (!archive_entry_size_is_set(e) || size < 0 || static_cast<uint64_t>(size) > lim.max_entry_size)
      return unsafe("'" + name + "' is larger than " + std::to_string(lim.max_entry_size) + " bytes");
    total += static_cast<uint64_t>(size);
    if (total > lim.max_total_size) return unsafe("contents larger than " + std::to_string(lim.max_total_size) + " bytes");
    if (auto f = sink(name, a, static_cast<uint64_t>(size)); !f.ok()) return f;
  }
  if (!seen.count(kManifestName) || !seen.count(kSignatureName))
    return unsafe("manifest.json or manifest.sig is missing");
  return {};
}

Failure read_data(archive* a, const std::string& name, uint64_t size, const std::function<bool(const char*, size_t)>& out) {
  char buf[65536];
  uint64_t got = 0;
  for (;;) {
    la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) return {BundleError::kTruncated, "bundle file is truncated or corrupt at '" + name + "': " + archive_error_string(a)};
    got += static_cast<uint64_t>(n);
    if (got > size) return unsafe("'" + name + "' is longer than its header says");
    if (!out(buf, static_cast<size_t>(n))) return {BundleError::kInstall, "cannot write '" + name + "'"};
  }
  if (got != size) return {BundleError::kTruncated, "bundle file is truncated at '" + name + "'"};
  return {};
}

Sink file_sink(const std::string& dir) {
  return [dir](const std::string& name, archive* a, uint64_t size) -> Failure {
    std::string path = dir + "/" + name;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return {BundleError::kInstall, "cannot create " + path};
    Failure f = read_data(a, name, size, [fd](const char* p, size_t n) {
      return ::write(fd, p, n) == static_cast<ssize_t>(n);
    });
    ::close(fd);
    return f;
  };
}

ReadPtr open_reader() {
  ReadPtr a(archive_read_new());
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_none(a.get());
  archive_read_support_filter_gzip(a.get());
  return a;
}

}  // namespace

Failure unpack_bundle(const std::string& path, const std::string& dir, const UnpackLimits& lim) {
  auto a = open_reader();
  if (archive_read_open_filename(a.get(), path.c_str(), 65536) != ARCHIVE_OK)
    return unsafe(std::string("cannot open: ") + archive_error_string(a.get()));
  return walk(a.get(), lim, file_sink(dir));
}

Failure unpack_bundle_bytes(const std::string& bytes, const std::string& dir, const UnpackLimits& lim) {
  auto a = open_reader();
  if (archive_read_open_memory(a.get(), bytes.data(), bytes.size()) != ARCHIVE_OK)
    return unsafe(std::string("cannot open: ") + archive_error_string(a.get()));
  return walk(a.get(), lim, file_sink(dir));
}

Failure read_bundle_entries(const std::string& path, const UnpackLimits& lim, std::vector<ArchiveEntry>& out) {
  auto a = open_reader();
  if (archive_read_open_filename(a.get(), path.c_str(), 65536) != ARCHIVE_OK)
    return unsafe(std::string("cannot open: ") + archive_error_string(a.get()));
  return walk(a.get(), lim, [&out](const std::string& name, archive* ar, uint64_t size) {
    out.push_back({name, {}});
    auto& d = out.back().data;
    return read_data(ar, name, size, [&d](const char* p, size_t n) {
      d.append(p, n);
      return true;
    });
  });
}

std::string write_bundle(const std::string& path, const std::vector<ArchiveEntry>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  std::string err;
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) err = archive_error_string(a);
  for (size_t i = 0; err.empty() && i < entries.size(); ++i) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, entries[i].name.c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(entries[i].data.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        archive_write_data(a, entries[i].data.data(), entries[i].data.size()) != static_cast<la_ssize_t>(entries[i].data.size()))
      err = archive_error_string(a) ? archive_error_string(a) : "write failed";
    archive_entry_free(e);
  }
  if (archive_write_close(a) != ARCHIVE_OK && err.empty()) err = archive_error_string(a);
  archive_write_free(a);
  return err;
}

}  // namespace postern::scan
