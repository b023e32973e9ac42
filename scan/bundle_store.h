// bundle_store.h — the installed pattern bundles on disk and the rollback state.
//
//   <state_dir>/patterns/v<version>-<sig12>/   one verified bundle: manifest.json, manifest.sig, files
//   <state_dir>/patterns/current               symlink to the installed one (switched by rename)
//   <state_dir>/patterns/state.json            rollback state: version, content id, signature hash
//   <state_dir>/patterns/tmp/                  staging for downloads and unpacked bundle files
//
// An update is staged, verified (signature, chain at the injected time, files, rollback rules),
// moved into its own version directory (fsynced), handed to the engine, and only then made
// current (a new symlink renamed over `current`, the directory fsynced) and recorded. A failure
// at any step leaves `current` as it was. The previous version is kept; older ones are pruned.
//
// Rollback rules (decide()): an older version is refused; the same version with other content
// is refused; the same version and content with another signature is a signature-only refresh
// (installed: the new signature and signer replace the old); the same signature is up to date.
// Security-sensitive: the rollback rules, and that nothing outside patterns/ is ever written.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "scan/bundle.h"
#include "scan/engine_manager.h"

namespace postern::scan {

struct InstalledState {
  uint64_t version = 0;
  std::string content_id;
  std::string signature_sha256;
  std::string dir;  // the version directory's name
  std::string previous;  // the one before it (kept on disk)
  int64_t issued_at = 0;
  int64_t installed_at = 0;
  std::string signer_subject;
  int64_t signer_not_after = 0;
};

enum class Decision { kInstall, kSignatureRefresh, kUpToDate };
const char* decision_name(Decision d);

// The rollback rules above; a refusal has kOlderVersion or kSameVersionChanged.
Failure decide(const std::optional<InstalledState>& cur, const Manifest& m, const std::string& sig_sha256, Decision& d);

// A bundle that passed every check, ready to install.
struct Verified {
  Manifest manifest;
  SignerInfo signer;
  std::string manifest_bytes;
  std::string signature;  // DER
  std::string signature_sha256;
  Decision decision = Decision::kInstall;
  bool signer_expired = false;  // only from load_current(): accepted before, expired since
};

class BundleStore {
 public:
  explicit BundleStore(const std::string& state_dir);
  const std::string& root() const { return root_; }
  // A new, empty staging directory under patterns/tmp ("" with why on failure).
  std::string make_staging(std::string& why) const;
  // Verifies the bundle in `dir` (manifest.json, manifest.sig, files) at `now`.
  Failure verify_staged(const std::string& dir, const std::string& root_pem, int64_t now, Verified& out) const;
  // Moves a verified staging directory to its version directory (files and directory fsynced).
  Failure prepare(const std::string& staged_dir, const Verified& v, std::string& version_dir) const;
  // Makes version_dir current, records the rollback state, prunes all but it and the previous.
  Failure commit(const std::string& version_dir, const Verified& v, int64_t now);
  // Removes a prepared version directory that will not be installed (never the current one).
  void discard(const std::string& dir) const;
  std::optional<InstalledState> state() const { return state_; }
  // The installed bundle's directory ("" when none).
  std::string current_dir() const;
  // Start-up: checks the current bundle's files and signature (chain without time checks; an
  // expired signer is reported in out.signer_expired, not refused).
  Failure load_current(const std::string& root_pem, int64_t now, Verified& out) const;
  void remove_staging() const;  // leftovers of an interrupted update

 private:
  void read_state();
  bool write_state(const InstalledState& s, std::string& why) const;
  void prune(const InstalledState& s) const;
  std::string root_;
  std::optional<InstalledState> state_;
};

// The PatternSet for EngineManager::install (source "bundle").
PatternSet pattern_set(const Verified& v, const std::string& dir);

}  // namespace postern::scan
