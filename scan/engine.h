// engine.h — one compiled libclamav engine: immutable after build, shared by every scan thread.
//
// Engine::build() makes a cl_engine from PatternSets (cl_load of each set's directory with
// CL_DB_STDOPT, limits from the config, cl_engine_compile), then scans each set's self-test
// samples from memory: a sample that does not hit its `expect` fails the build. Nothing is
// published from here: scan/engine_manager.cpp does that.
//
// Security-sensitive: scan() runs libclamav's parsers (mail, archives, PDF, OLE2, HTML ...) on
// hostile bytes. The bytes scanned are bounded (EngineLimits::max_scan_size: a larger message is
// scanned up to the limit, as clamd does with StreamMaxLength); the time is bounded by
// CL_ENGINE_MAX_SCANTIME and checked again afterwards, so a scan that ran past its deadline is an
// error (timeout), never a clean verdict.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "scan/engine_manager.h"

struct cl_engine;

namespace postern::scan {

struct EngineLimits {
  uint64_t max_scan_size = 25ull << 20;  // bytes read from the message (and per file inside it)
  uint32_t max_files = 10000;
  uint32_t max_recursion = 16;
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  bool heuristics = false;  // CL_SCAN_GENERAL_HEURISTICS (off: only signatures alert)
  bool operator==(const EngineLimits&) const = default;
};

enum class Verdict { kClean, kInfected, kError };

struct ScanResult {
  Verdict verdict = Verdict::kError;
  std::string signature;  // kInfected: the signature's name as libclamav reports it
  std::string error;      // kError: why ("timeout", "read: ...", libclamav's cl_strerror)
  bool timeout = false;   // kError because the deadline passed
  double seconds = 0;
};

// cl_init once per process; false (with why) if libclamav cannot start.
bool init_clamav(std::string& err);
// "1.4.6": the libclamav in use (cl_retver).
std::string clamav_version();

class Engine {
 public:
  // nullptr and `err` when a directory does not load, the compile fails or a sample misses.
  static std::shared_ptr<const Engine> build(const std::vector<PatternSet>& sets, const EngineLimits& limits,
                                             std::string& err);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  ScanResult scan_memory(std::string_view bytes) const;
  // The first `len` bytes of `fd` (a queue file: the message is its first message_size bytes),
  // up to limits().max_scan_size. fd is read with pread: its offset does not matter.
  ScanResult scan_fd(int fd, uint64_t len) const;

  const std::vector<PatternSet>& sets() const { return sets_; }
  const EngineLimits& limits() const { return limits_; }
  unsigned signatures() const { return sigs_; }

 private:
  Engine() = default;
  ScanResult run(void* map) const;  // cl_fmap_t*

  cl_engine* e_ = nullptr;
  std::vector<PatternSet> sets_;
  EngineLimits limits_;
  unsigned sigs_ = 0;
};

}  // namespace postern::scan
