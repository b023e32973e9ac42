// engine.cpp — libclamav behind scan/engine.h. Security-sensitive: limits are set before any
// pattern loads, scans of hostile bytes are bounded in size (the fmap's length) and time
// (CL_ENGINE_MAX_SCANTIME plus our own check of the elapsed time), and libclamav's messages go to
// the log escaped (they may quote file names from inside a message).
#include "scan/engine.h"

#include <clamav.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "base/log.h"

namespace postern::scan {
namespace {

void clamav_msg(enum cl_msg severity, const char*, const char* msg, void*) {
  std::string m = msg ? msg : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == '\r')) m.pop_back();
  if (severity == CL_MSG_ERROR) spdlog::warn("clamav error={}", esc(m));
  else if (severity == CL_MSG_WARN) spdlog::debug("clamav warning={}", esc(m));
}

struct PreadFd {
  int fd;
  int err = 0;  // a read failed: the verdict is an error, never "clean" (libclamav may carry on)
};

off_t pread_fd(void* handle, void* buf, size_t count, off_t offset) {
  auto* h = static_cast<PreadFd*>(handle);
  ssize_t n;
  do n = ::pread(h->fd, buf, count, offset);
  while (n < 0 && errno == EINTR);
  if (n < 0) h->err = errno;
  return n;
}

// What clamd scans with ScanMail/ScanArchive/ScanPDF/ScanOLE2/ScanHTML ... yes (its defaults).
cl_scan_options scan_options(const EngineLimits& l) {
  cl_scan_options o{};
  o.general = l.heuristics ? CL_SCAN_GENERAL_HEURISTICS : 0;
  o.parse = CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_PDF | CL_SCAN_PARSE_SWF | CL_SCAN_PARSE_HWP3 |
            CL_SCAN_PARSE_XMLDOCS | CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2 | CL_SCAN_PARSE_HTML | CL_SCAN_PARSE_PE |
            CL_SCAN_PARSE_ONENOTE;
  return o;
}

bool set_limits(cl_engine* e, const EngineLimits& l, std::string& err) {
  struct {
    cl_engine_field f;
    long long v;
    const char* name;
  } const items[] = {
      {CL_ENGINE_MAX_SCANSIZE, static_cast<long long>(l.max_scan_size) * 4, "max_scansize"},
      {CL_ENGINE_MAX_FILESIZE, static_cast<long long>(l.max_scan_size), "max_filesize"},
      {CL_ENGINE_MAX_RECURSION, l.max_recursion, "max_recursion"},
      {CL_ENGINE_MAX_FILES, l.max_files, "max_files"},
      {CL_ENGINE_MAX_SCANTIME, static_cast<long long>(l.timeout.count()), "max_scantime"},
  };
  for (auto& it : items) {
    cl_error_t rc = cl_engine_set_num(e, it.f, it.v);
    if (rc != CL_SUCCESS) {
      err = std::string("cannot set ") + it.name + ": " + cl_strerror(rc);
      return false;
    }
  }
  return true;
}

}  // namespace

bool init_clamav(std::string& err) {
  static std::once_flag once;
  static cl_error_t rc = CL_SUCCESS;
  std::call_once(once, [] {
    cl_set_clcb_msg(clamav_msg);
    rc = cl_init(CL_INIT_DEFAULT);
  });
  if (rc != CL_SUCCESS) err = std::string("cl_init: ") + cl_strerror(rc);
  return rc == CL_SUCCESS;
}

std::string clamav_version() { return cl_retver(); }

std::shared_ptr<const Engine> Engine::build(const std::vector<PatternSet>& sets, const EngineLimits& limits,
                                            std::string& err) {
  if (!init_clamav(err)) return nullptr;
  std::shared_ptr<Engine> en(new Engine());
  en->sets_ = sets;
  en->limits_ = limits;
  en->e_ = cl_engine_new();
  if (!en->e_) {
    err = "cl_engine_new failed";
    return nullptr;
  }
  if (!set_limits(en->e_, limits, err)) return nullptr;
  for (auto& s : sets) {
    unsigned n = 0;
    cl_error_t rc = cl_load(s.dir.c_str(), en->e_, &n, CL_DB_STDOPT);
    if (rc != CL_SUCCESS) {
      err = "source " + s.source + " version " + s.version + ": cannot load " + s.dir + ": " + cl_strerror(rc);
      return nullptr;
    }
    en->sigs_ += n;
  }
  cl_error_t rc = cl_engine_compile(en->e_);
  if (rc != CL_SUCCESS) {
    err = std::string("cl_engine_compile: ") + cl_strerror(rc);
    return nullptr;
  }
  for (auto& s : sets) {
    for (auto& sample : s.samples) {
      ScanResult r = en->scan_memory(sample.content);
      // libclamav names a hit from an unsigned database "<name>.UNOFFICIAL" (as clamd reports
      // it); a manifest may name the signature either way.
      bool hit = r.verdict == Verdict::kInfected &&
                 (r.signature == sample.expect || r.signature == sample.expect + ".UNOFFICIAL");
      if (!hit) {
        err = "source " + s.source + " version " + s.version + ": self-test sample '" + sample.name + "' expected " +
              sample.expect + ", got " +
              (r.verdict == Verdict::kClean ? std::string("clean")
               : r.verdict == Verdict::kInfected ? r.signature : "error: " + r.error);
        return nullptr;
      }
    }
  }
  return en;
}

Engine::~Engine() {
  if (e_) cl_engine_free(e_);
}

ScanResult Engine::scan_memory(std::string_view bytes) const {
  size_t len = static_cast<size_t>(std::min<uint64_t>(bytes.size(), limits_.max_scan_size));
  static const char empty = 0;
  cl_fmap_t* map = cl_fmap_open_memory(len ? bytes.data() : &empty, len);
  if (!map) return {Verdict::kError, "", "cannot map the message", false, 0};
  ScanResult r = run(map);
  cl_fmap_close(map);
  return r;
}

ScanResult Engine::scan_fd(int fd, uint64_t len) const {
  PreadFd h{fd};
  size_t n = static_cast<size_t>(std::min<uint64_t>(len, limits_.max_scan_size));
  cl_fmap_t* map = cl_fmap_open_handle(&h, 0, n, pread_fd, 0);
  if (!map) return {Verdict::kError, "", "cannot map the queue file", false, 0};
  ScanResult r = run(map);
  cl_fmap_close(map);
  if (h.err && r.verdict != Verdict::kInfected) {
    r.verdict = Verdict::kError;
    r.error = std::string("read: ") + std::strerror(h.err);
  }
  return r;
}

ScanResult Engine::run(void* map) const {
  cl_scan_options opts = scan_options(limits_);
  const char* virname = nullptr;
  unsigned long scanned = 0;
  auto t0 = std::chrono::steady_clock::now();
  cl_error_t rc = cl_scanmap_callback(static_cast<cl_fmap_t*>(map), nullptr, &virname, &scanned, e_, &opts, nullptr);
  auto took = std::chrono::steady_clock::now() - t0;
  ScanResult r;
  r.seconds = std::chrono::duration<double>(took).count();
  if (rc == CL_VIRUS) {  // a hit stands even when found just before the deadline
    r.verdict = Verdict::kInfected;
    r.signature = virname ? virname : "unknown";
  } else if (rc == CL_ETIMEOUT || took >= limits_.timeout) {
    r.verdict = Verdict::kError;
    r.timeout = true;
    r.error = "timeout";
  } else if (rc == CL_CLEAN) {
    r.verdict = Verdict::kClean;
  } else {
    r.verdict = Verdict::kError;
    r.error = cl_strerror(rc);
  }
  return r;
}

}  // namespace postern::scan
