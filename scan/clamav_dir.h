// clamav_dir.h — the freshclam-directory pattern source (scan.clamav_database_dir).
//
// A ClamAV database directory kept by freshclam: its .cvd/.cld files are verified by libclamav's
// own check (cl_cvdverify) and versioned by their headers (cl_cvdhead); loose signature files
// (.hdb .hsb .ndb .ldb .yar ...) are allowed too, versioned by the newest mtime (UTC
// YYYYMMDDHHMMSS). The set is installed as PatternSet source "freshclam".
//
// poll() runs on the control loop every second and only stats the directory's entries (cheap);
// when what it sees changed, the verification runs on a thread of its own and the set goes to
// EngineManager::install(). Security-sensitive: a CVD that fails verification is never
// installed (the previous set stays); an emptied or unreadable directory keeps the previous set.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <memory>
#include <string>
#include <thread>

#include "scan/engine_manager.h"

namespace postern::scan {

// What the directory holds, verified: the set to install, or why not.
struct ClamavDirCheck {
  bool ok = false;
  std::string error;
  PatternSet set;
};
// Verifies and versions the directory (blocking: CVD verification reads every byte).
ClamavDirCheck check_clamav_dir(const std::string& dir);
// Names, sizes and mtimes of the directory's signature files ("" when none or unreadable).
std::string clamav_dir_fingerprint(const std::string& dir);
// Is this a file name libclamav loads as signatures?
bool is_signature_file(const std::string& name);

class ClamavDirSource {
 public:
  // event(code, text): on the control loop, for a refused directory or a failed build.
  using Event = std::function<void(const std::string& code, const std::string& text)>;
  explicit ClamavDirSource(EngineManager& m, Event event = {}) : m_(m), event_(std::move(event)) {}
  ~ClamavDirSource();
  // dir = scan.clamav_database_dir now ("" = none: a set installed before is removed).
  void poll(const std::string& dir);

 private:
  EngineManager& m_;
  Event event_;
  std::mutex mu_;
  std::string failed_;  // the checker thread's refusal, reported by the next poll()
  std::string dir_;
  std::string seen_;        // fingerprint last handed to a check
  std::thread checker_;
  std::atomic<bool> busy_{false};
  bool installed_ = false;
};

}  // namespace postern::scan
