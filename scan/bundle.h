// bundle.h — a signed pattern bundle: the manifest (JSON), its detached CMS signature, and the
// ClamAV signature files it lists; pure (files and bytes, no sockets, time injected).
//
// Manifest: {"format": 1, "version": N (integer, grows with every content change),
//   "issued_at": unix seconds, "files": [{"name", "size", "sha256"}],
//   "samples": [{"name", "content" (base64), "expect"}]}.
// manifest.sig: CMS SignedData (DER), detached, over the manifest's exact bytes, signer
// certificate included; the signer must chain to the pinned pattern root.
//
// Security-sensitive: everything here meets bytes from an update server, a relay or an offline
// file. The manifest is bounded (size, file and sample counts), file names are plain names of
// ClamAV signature types only (no '/', no "..", no hidden files), files are checked against the
// manifest's size and SHA-256, and the signature's time checks use the injected clock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "scan/engine_manager.h"

namespace postern::scan {

// Why an update was refused. Each has a stable name and a negative code (event 9102's
// "error code"; README "Pattern updates" lists them).
enum class BundleError {
  kNone = 0,
  kManifest,           // -10 MANIFEST_INVALID: not JSON, a missing or bad field, over the caps
  kSignature,          // -23 DIGITAL_SIGNATURE_FAILURE: bad signature, untrusted signer, no root
  kCertExpired,        // -24 DIGITAL_SIGNATURE_CERT_EXPIRE: signer (or chain) expired / not yet valid
  kFileName,           // -11 FILE_NAME_INVALID: not a plain ClamAV signature file name
  kFileMismatch,       // -12 FILE_MISMATCH: missing, wrong size, wrong SHA-256, unlisted
  kOlderVersion,       // -30 VERSION_OLDER: older than the installed version (rollback)
  kSameVersionChanged, // -31 VERSION_CONTENT_CHANGED: same version, other content
  kArchive,            // -40 ARCHIVE_UNSAFE: bundle file refused (path, link, caps, corrupt)
  kTooLarge,           // -41 DOWNLOAD_TOO_LARGE: over updates.max_bundle_size / the file's size
  kTruncated,          // -42 DOWNLOAD_TRUNCATED: shorter than the manifest says / cut archive
  kDownload,           // -43 DOWNLOAD_FAILED: server unreachable, HTTP error
  kLicense,            // -50 LICENSE_NO_UPDATES: antivirus license expired (past grace) or not activated
  kInstall,            // -60 INSTALL_FAILED: the store could not be written
  kEngine,             // -61 ENGINE_REFUSED: load, compile or self-test failed
};
const char* error_name(BundleError e);
int error_code(BundleError e);

struct Failure {
  BundleError code = BundleError::kNone;
  std::string why;
  bool ok() const { return code == BundleError::kNone; }
};

struct BundleFile {
  std::string name;
  uint64_t size = 0;
  std::string sha256;  // lower-case hex
};

struct Manifest {
  int format = 1;
  uint64_t version = 0;
  int64_t issued_at = 0;
  std::vector<BundleFile> files;
  std::vector<SelfTestSample> samples;
  // SHA-256 over the files and samples (not issued_at): equal content_id = same patterns.
  std::string content_id() const;
};

inline constexpr size_t kMaxManifestSize = 1 << 20;
inline constexpr size_t kMaxSignatureSize = 64 << 10;
inline constexpr size_t kMaxFiles = 256;
inline constexpr size_t kMaxSamples = 32;
inline constexpr size_t kMaxSampleSize = 64 << 10;
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kSignatureName = "manifest.sig";

// A plain file name of a ClamAV signature type (.hdb .hsb .ndb .ldb .yar ...).
bool valid_file_name(std::string_view name);

Failure parse_manifest(std::string_view bytes, Manifest& out);
std::string manifest_json(const Manifest& m);  // the vendor tool's serialisation

struct SignerInfo {
  std::string subject;
  std::string fingerprint;  // SHA-256 of the DER, lower-case hex
  int64_t not_before = 0;
  int64_t not_after = 0;
};

// Verifies `sig_der` (detached CMS) over `manifest` against the pinned root(s) in `root_pem`,
// at `now`. check_time=false accepts a signer that expired since (start-up check of an already
// accepted bundle); the signer's dates are still reported in `signer`.
Failure verify_signature(std::string_view manifest, std::string_view sig_der, std::string_view root_pem,
                         int64_t now, bool check_time, SignerInfo& signer);

// Checks every manifest file in `dir` (size, SHA-256) and that `dir` holds nothing else besides
// manifest.json and manifest.sig.
Failure verify_files(const std::string& dir, const Manifest& m);

std::string sha256_hex(std::string_view data);
std::optional<std::string> read_file_bounded(const std::string& path, size_t max, std::string& why);

}  // namespace postern::scan
