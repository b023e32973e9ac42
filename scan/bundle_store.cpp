// bundle_store.cpp — see bundle_store.h. Security-sensitive: the rollback rules and the atomic,
// fsynced switch of `current`.
#include "scan/bundle_store.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace postern::scan {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool fsync_path(const std::string& p, bool dir) {
  int fd = ::open(p.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

std::string random_hex(size_t bytes) {
  unsigned char b[16];
  RAND_bytes(b, static_cast<int>(bytes));
  static const char* hx = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < bytes; ++i) {
    s.push_back(hx[b[i] >> 4]);
    s.push_back(hx[b[i] & 15]);
  }
  return s;
}

json state_json(const InstalledState& s) {
  return {{"version", s.version},       {"content_id", s.content_id},     {"signature_sha256", s.signature_sha256},
          {"dir", s.dir},               {"previous", s.previous},         {"issued_at", s.issued_at},
          {"installed_at", s.installed_at}, {"signer_subject", s.signer_subject}, {"signer_not_after", s.signer_not_after}};
}

}  // namespace

const char* decision_name(Decision d) {
  switch (d) {
    case Decision::kInstall: return "install";
    case Decision::kSignatureRefresh: return "signature-only refresh";
    case Decision::kUpToDate: return "up to date";
  }
  return "?";
}

Failure decide(const std::optional<InstalledState>& cur, const Manifest& m, const std::string& sig_sha256, Decision& d) {
  d = Decision::kInstall;
  if (!cur) return {};
  if (m.version < cur->version)
    return {BundleError::kOlderVersion, "version " + std::to_string(m.version) + " is older than the installed " +
                                            std::to_string(cur->version)};
  if (m.version > cur->version) return {};
  if (m.content_id() != cur->content_id)
    return {BundleError::kSameVersionChanged, "version " + std::to_string(m.version) +
                                                  " is installed with other content: a changed bundle needs a new version"};
  d = sig_sha256 == cur->signature_sha256 ? Decision::kUpToDate : Decision::kSignatureRefresh;
  return {};
}

BundleStore::BundleStore(const std::string& state_dir) : root_(state_dir + "/patterns") {
  std::error_code ec;
  fs::create_directories(root_ + "/tmp", ec);
  read_state();
}

void BundleStore::read_state() {
  std::string why;
  auto text = read_file_bounded(root_ + "/state.json", 64 << 10, why);
  if (!text) return;
  auto j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("version")) return;
  InstalledState s;
  s.version = j.value("version", uint64_t{0});
  s.content_id = j.value("content_id", "");
  s.signature_sha256 = j.value("signature_sha256", "");
  s.dir = j.value("dir", "");
  s.previous = j.value("previous", "");
  s.issued_at = j.value("issued_at", int64_t{0});
  s.installed_at = j.value("installed_at", int64_t{0});
  s.signer_subject = j.value("signer_subject", "");
  s.signer_not_after = j.value("signer_not_after", int64_t{0});
  state_ = s;
}

bool BundleStore::write_state(const InstalledState& s, std::string& why) const {
  std::string path = root_ + "/state.json", tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    out << state_json(s).dump(2) << "\n";
    if (!out.flush()) {
      why = "cannot write " + tmp;
      return false;
    }
  }
  if (!fsync_path(tmp, false) || ::rename(tmp.c_str(), path.c_str()) != 0 || !fsync_path(root_, true)) {
    why = "cannot replace " + path;
    return false;
  }
  return true;
}

std::string BundleStore::make_staging(std::string& why) const {
  std::string dir = root_ + "/tmp/" + random_hex(8);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    why = "cannot create " + dir + ": " + ec.message();
    return "";
  }
  return dir;
}

void BundleStore::remove_staging() const {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root_ + "/tmp", ec)) fs::remove_all(e.path(), ec);
}

Failure BundleStore::verify_staged(const std::string& dir, const std::string& root_pem, int64_t now, Verified& out) const {
  std::string why;
  auto man = read_file_bounded(dir + "/" + kManifestName, kMaxManifestSize, why);
  if (!man) return {BundleError::kManifest, std::string(kManifestName) + ": " + why};
  auto sig = read_file_bounded(dir + "/" + kSignatureName, kMaxSignatureSize, why);
  if (!sig) return {BundleError::kSignature, std::string(kSignatureName) + ": " + why};
  out = Verified{};
  out.manifest_bytes = std::move(*man);
  out.signature = std::move(*sig);
  out.signature_sha256 = sha256_hex(out.signature);
  if (auto r = parse_manifest(out.manifest_bytes, out.manifest); !r.ok()) return r;
  if (auto r = verify_signature(out.manifest_bytes, out.signature, root_pem, now, true, out.signer); !r.ok()) return r;
  if (auto r = verify_files(dir, out.manifest); !r.ok()) return r;
  return decide(state_, out.manifest, out.signature_sha256, out.decision);
}

Failure BundleStore::prepare(const std::string& staged_dir, const Verified& v, std::string& version_dir) const {
  version_dir = root_ + "/v" + std::to_string(v.manifest.version) + "-" + v.signature_sha256.substr(0, 12);
  std::error_code ec;
  if (state_ && root_ + "/" + state_->dir == version_dir)
    return {BundleError::kInstall, "this bundle is the installed one"};
  fs::remove_all(version_dir, ec);  // a leftover of an interrupted install of the same bundle
  for (auto& e : fs::directory_iterator(staged_dir, ec))
    if (!fsync_path(e.path().string(), false)) return {BundleError::kInstall, "cannot sync " + e.path().string()};
  if (!fsync_path(staged_dir, true)) return {BundleError::kInstall, "cannot sync " + staged_dir};
  fs::rename(staged_dir, version_dir, ec);
  if (ec) return {BundleError::kInstall, "cannot move the bundle into " + version_dir + ": " + ec.message()};
  if (!fsync_path(root_, true)) return {BundleError::kInstall, "cannot sync " + root_};
  return {};
}

Failure BundleStore::commit(const std::string& version_dir, const Verified& v, int64_t now) {
  std::string name = fs::path(version_dir).filename().string();
  std::string link = root_ + "/current", tmp = root_ + "/current.tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_directory_symlink(name, tmp, ec);
  if (ec) return {BundleError::kInstall, "cannot create " + tmp + ": " + ec.message()};
  if (::rename(tmp.c_str(), link.c_str()) != 0 || !fsync_path(root_, true))
    return {BundleError::kInstall, "cannot switch " + link};
  InstalledState s{v.manifest.version, v.manifest.content_id(), v.signature_sha256, name,
                   state_ && state_->dir != name ? state_->dir : (state_ ? state_->previous : ""),
                   v.manifest.issued_at, now, v.signer.subject, v.signer.not_after};
  std::string why;
  if (!write_state(s, why)) return {BundleError::kInstall, why};
  state_ = s;
  prune(s);
  return {};
}

void BundleStore::prune(const InstalledState& s) const {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root_, ec)) {
    std::string n = e.path().filename().string();
    if (n.size() > 1 && n[0] == 'v' && e.is_directory() && !e.is_symlink() && n != s.dir && n != s.previous)
      fs::remove_all(e.path(), ec);
  }
}

void BundleStore::discard(const std::string& dir) const {
  if (dir.empty() || dir == current_dir()) return;
  std::error_code ec;
  fs::remove_all(dir, ec);
}

std::string BundleStore::current_dir() const {
  std::error_code ec;
  auto target = fs::read_symlink(root_ + "/current", ec);
  if (ec || target.empty() || target.has_parent_path()) return "";
  return root_ + "/" + target.string();
}

Failure BundleStore::load_current(const std::string& root_pem, int64_t now, Verified& out) const {
  std::string dir = current_dir();
  if (dir.empty()) return {BundleError::kInstall, "no bundle is installed"};
  std::string why;
  auto man = read_file_bounded(dir + "/" + kManifestName, kMaxManifestSize, why);
  auto sig = read_file_bounded(dir + "/" + kSignatureName, kMaxSignatureSize, why);
  if (!man || !sig) return {BundleError::kInstall, "installed bundle " + dir + ": " + why};
  out = Verified{};
  out.manifest_bytes = std::move(*man);
  out.signature = std::move(*sig);
  out.signature_sha256 = sha256_hex(out.signature);
  if (auto r = parse_manifest(out.manifest_bytes, out.manifest); !r.ok()) return r;
  if (auto r = verify_signature(out.manifest_bytes, out.signature, root_pem, now, false, out.signer); !r.ok()) return r;
  if (auto r = verify_files(dir, out.manifest); !r.ok()) return r;
  // `current` pointed back at an older bundle than the one recorded: a rollback, refused. (Newer
  // or the same version: a crash between the switch and the state write; the state catches up
  // with the next install.)
  if (state_ && out.manifest.version < state_->version)
    return {BundleError::kOlderVersion, "the installed bundle (version " + std::to_string(out.manifest.version) +
                                            ") is older than the recorded version " + std::to_string(state_->version)};
  out.signer_expired = now > out.signer.not_after || now < out.signer.not_before;
  out.decision = Decision::kUpToDate;
  return {};
}

PatternSet pattern_set(const Verified& v, const std::string& dir) {
  return PatternSet{"bundle", dir, std::to_string(v.manifest.version), v.manifest.issued_at, v.manifest.samples};
}

}  // namespace postern::scan
