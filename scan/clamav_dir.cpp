// clamav_dir.cpp — see clamav_dir.h. Security-sensitive: only regular files with a signature
// extension count (no symlinks followed out of the directory), and a .cvd/.cld is installed only
// after cl_cvdverify accepted it.
#include "scan/clamav_dir.h"

#include <clamav.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <set>
#include <vector>

#include "base/log.h"
#include "scan/engine.h"

namespace postern::scan {
namespace fs = std::filesystem;

bool is_signature_file(const std::string& name) {
  static const std::set<std::string> exts{".cvd", ".cld", ".cud", ".hdb", ".hsb", ".hdu", ".hsu", ".mdb", ".msb",
                                          ".ndb", ".ndu", ".ldb", ".ldu", ".yar", ".yara", ".cdb", ".fp",
                                          ".sfp", ".ign", ".ign2", ".ftm", ".idb", ".crb", ".pdb", ".wdb", ".cbc"};
  auto dot = name.rfind('.');
  return dot != std::string::npos && name[0] != '.' && exts.count(name.substr(dot));
}

namespace {

struct Entry {
  std::string name;
  uint64_t size;
  int64_t mtime_ns;
};

std::vector<Entry> list(const std::string& dir) {
  std::vector<Entry> v;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!is_signature_file(name)) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    v.push_back({name, static_cast<uint64_t>(st.st_size),
                 static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec});
  }
  std::sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return v;
}

std::string utc_stamp(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y%m%d%H%M%S", &tm);
  return b;
}

}  // namespace

std::string clamav_dir_fingerprint(const std::string& dir) {
  std::string f;
  for (auto& e : list(dir)) f += e.name + ":" + std::to_string(e.size) + ":" + std::to_string(e.mtime_ns) + "\n";
  return f;
}

ClamavDirCheck check_clamav_dir(const std::string& dir) {
  ClamavDirCheck c;
  std::string err;
  if (!init_clamav(err)) return {false, err, {}};
  auto files = list(dir);
  if (files.empty()) return {false, "no signature files in " + dir, {}};
  std::string cvd_version;
  int64_t newest = 0, cvd_time = 0;
  for (auto& e : files) {
    newest = std::max<int64_t>(newest, e.mtime_ns / 1000000000);
    bool is_cvd = e.name.ends_with(".cvd") || e.name.ends_with(".cld") || e.name.ends_with(".cud");
    if (!is_cvd) continue;
    std::string path = dir + "/" + e.name;
    cl_error_t rc = cl_cvdverify(path.c_str());
    if (rc != CL_SUCCESS) return {false, e.name + ": verification failed: " + cl_strerror(rc), {}};
    cl_cvd* h = cl_cvdhead(path.c_str());
    if (!h) return {false, e.name + ": unreadable header", {}};
    std::string base = e.name.substr(0, e.name.rfind('.'));
    cvd_version += (cvd_version.empty() ? "" : "+") + base + "-" + std::to_string(h->version);
    cvd_time = std::max<int64_t>(cvd_time, h->stime);
    cl_cvdfree(h);
  }
  c.ok = true;
  c.set.source = "freshclam";
  c.set.dir = dir;
  bool loose = std::any_of(files.begin(), files.end(), [](const Entry& e) {
    return !(e.name.ends_with(".cvd") || e.name.ends_with(".cld") || e.name.ends_with(".cud"));
  });
  // The databases' own version; loose files add their newest mtime.
  c.set.version = cvd_version.empty() ? utc_stamp(newest) : cvd_version + (loose ? "+" + utc_stamp(newest) : "");
  c.set.issued_at = cvd_version.empty() ? newest : (loose ? std::max(cvd_time, newest) : cvd_time);
  return c;
}

ClamavDirSource::~ClamavDirSource() {
  if (checker_.joinable()) checker_.join();
}

void ClamavDirSource::poll(const std::string& dir) {
  if (busy_.load()) return;
  if (checker_.joinable()) checker_.join();
  std::string failed;
  {
    std::lock_guard<std::mutex> lk(mu_);
    failed.swap(failed_);
  }
  if (!failed.empty() && event_) event_("PATTERN_UPDATE_FAILED", "freshclam directory refused: " + failed);
  if (dir != dir_) {
    dir_ = dir;
    seen_.clear();
    if (dir.empty() && installed_) {
      installed_ = false;
      m_.remove("freshclam", [](bool, const std::string&) {});
      spdlog::info("patterns source=freshclam removed (scan.clamav_database_dir is empty)");
    }
  }
  if (dir_.empty()) return;
  std::string fp = clamav_dir_fingerprint(dir_);
  if (fp == seen_) return;
  seen_ = fp;
  if (fp.empty()) {
    spdlog::warn("patterns source=freshclam dir={} holds no signature files (the installed set stays)", esc(dir_));
    return;
  }
  busy_ = true;
  installed_ = true;
  checker_ = std::thread([this, d = dir_] {
    ClamavDirCheck c = check_clamav_dir(d);
    if (!c.ok) {
      spdlog::error("event=PATTERN_UPDATE_FAILED source=freshclam dir={} error={}", esc(d), esc(c.error));
      {
        std::lock_guard<std::mutex> lk(mu_);
        failed_ = d + ": " + c.error;
      }
      busy_ = false;
      return;
    }
    std::string v = c.set.version;
    Event ev = event_;
    m_.install(std::move(c.set), [v, ev](bool ok, const std::string& err) {  // runs on the control loop
      if (ok) spdlog::info("patterns source=freshclam version={} installed", v);
      else spdlog::error("patterns source=freshclam version={} refused: {}", v, esc(err));
      if (!ok && ev) ev("PATTERN_UPDATE_FAILED", "freshclam patterns " + v + " refused (the engine in use stays): " + err);
    });
    busy_ = false;
  });
}

}  // namespace postern::scan
