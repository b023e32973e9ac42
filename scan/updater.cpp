// updater.cpp — see updater.h. Security-sensitive: the bounds on every download and the order
// (signature verified before any file is fetched).
#include "scan/updater.h"

#include <filesystem>
#include <fstream>

namespace postern::scan {
namespace fs = std::filesystem;

Failure classify_fetch(const FetchResult& r, const std::string& what) {
  if (!r.error.empty()) {
    if (r.error.find("larger than") != std::string::npos) return {BundleError::kTooLarge, what + ": " + r.error};
    if (r.error.find("remaining") != std::string::npos || r.error.find("partial") != std::string::npos ||
        r.error.find("Partial") != std::string::npos)
      return {BundleError::kTruncated, what + ": " + r.error};
    return {BundleError::kDownload, what + ": " + r.error};
  }
  if (r.status == 200 || r.status == 304) return {};
  return {BundleError::kDownload, what + ": HTTP " + std::to_string(r.status)};
}

void Updater::run(BundleStore& store, Fetch fetch, UpdateParams p, Done done) {
  std::shared_ptr<Updater> u(new Updater(store, std::move(fetch), std::move(p), std::move(done)));
  std::string url = u->p_.server + "/updates/" + kManifestName;
  std::string etag = u->p_.manifest_etag;
  u->fetch_(url, kMaxManifestSize, etag, [u](FetchResult r) { u->got_manifest(std::move(r)); });
}

Updater::Updater(BundleStore& store, Fetch fetch, UpdateParams p, Done done)
    : store_(store), fetch_(std::move(fetch)), p_(std::move(p)), done_(std::move(done)) {}

void Updater::got_manifest(FetchResult r) {
  if (auto f = classify_fetch(r, kManifestName); !f.ok()) return finish(f);
  manifest_ = std::move(r);
  auto self = shared_from_this();
  fetch_(p_.server + "/updates/" + kSignatureName, kMaxSignatureSize, p_.signature_etag,
         [self](FetchResult s) { self->got_signature(std::move(s)); });
}

void Updater::got_signature(FetchResult r) {
  if (auto f = classify_fetch(r, kSignatureName); !f.ok()) return finish(f);
  signature_ = std::move(r);
  out_.manifest_etag = manifest_.etag.empty() ? p_.manifest_etag : manifest_.etag;
  out_.signature_etag = signature_.etag.empty() ? p_.signature_etag : signature_.etag;
  if (manifest_.status == 304 && signature_.status == 304) {
    out_.up_to_date = true;
    return finish({});
  }
  verify_and_plan();
}

// A 304 means "what you have": the installed bundle's copy.
Failure Updater::body_or_installed(const FetchResult& r, const char* name, size_t max, std::string& out) {
  if (r.status == 200) {
    out = r.body;
    return {};
  }
  std::string why, cur = store_.current_dir();
  auto text = cur.empty() ? std::nullopt : read_file_bounded(cur + "/" + name, max, why);
  if (!text) return {BundleError::kDownload, std::string(name) + ": 304 but no installed copy; retry without ETag"};
  out = std::move(*text);
  return {};
}

void Updater::verify_and_plan() {
  Verified& v = out_.verified;
  if (auto f = body_or_installed(manifest_, kManifestName, kMaxManifestSize, v.manifest_bytes); !f.ok()) return finish(f);
  if (auto f = body_or_installed(signature_, kSignatureName, kMaxSignatureSize, v.signature); !f.ok()) return finish(f);
  v.signature_sha256 = sha256_hex(v.signature);
  if (auto f = parse_manifest(v.manifest_bytes, v.manifest); !f.ok()) return finish(f);
  if (auto f = verify_signature(v.manifest_bytes, v.signature, p_.root_pem, p_.now, true, v.signer); !f.ok()) return finish(f);
  if (auto f = decide(store_.state(), v.manifest, v.signature_sha256, v.decision); !f.ok()) return finish(f);
  if (v.decision == Decision::kUpToDate) {
    out_.up_to_date = true;
    return finish({});
  }
  uint64_t total = 0;
  for (auto& f : v.manifest.files) total += f.size;
  if (total > p_.max_bundle_size)
    return finish({BundleError::kTooLarge, "the bundle's files add up to " + std::to_string(total) +
                                               " bytes, over updates.max_bundle_size " + std::to_string(p_.max_bundle_size)});
  std::string why;
  out_.staged_dir = store_.make_staging(why);
  if (out_.staged_dir.empty()) return finish({BundleError::kInstall, why});
  std::ofstream(out_.staged_dir + "/" + kManifestName, std::ios::binary) << v.manifest_bytes;
  std::ofstream(out_.staged_dir + "/" + kSignatureName, std::ios::binary) << v.signature;
  if (v.decision == Decision::kSignatureRefresh) {  // same files: copy the installed ones
    std::string cur = store_.current_dir();
    std::error_code ec;
    for (auto& f : v.manifest.files) fs::copy_file(cur + "/" + f.name, out_.staged_dir + "/" + f.name, ec);
    return finish(store_.verify_staged(out_.staged_dir, p_.root_pem, p_.now, v));
  }
  next_file();
}

void Updater::next_file() {
  auto& files = out_.verified.manifest.files;
  if (next_ >= files.size()) return finish(store_.verify_staged(out_.staged_dir, p_.root_pem, p_.now, out_.verified));
  size_t i = next_++;
  auto self = shared_from_this();
  // Bounded by the size the signed manifest gives: a longer answer is refused as too large.
  fetch_(p_.server + "/updates/files/" + files[i].name, static_cast<size_t>(files[i].size), "",
         [self, i](FetchResult r) { self->got_file(i, std::move(r)); });
}

void Updater::got_file(size_t i, FetchResult r) {
  const auto& f = out_.verified.manifest.files[i];
  if (auto e = classify_fetch(r, f.name); !e.ok()) return finish(e);
  if (r.status != 200) return finish({BundleError::kDownload, f.name + ": HTTP " + std::to_string(r.status)});
  if (r.body.size() < f.size)
    return finish({BundleError::kTruncated, f.name + ": " + std::to_string(r.body.size()) + " bytes received, the manifest says " +
                                                std::to_string(f.size)});
  std::ofstream out(out_.staged_dir + "/" + f.name, std::ios::binary | std::ios::trunc);
  out << r.body;
  if (!out.flush()) return finish({BundleError::kInstall, "cannot write " + f.name});
  next_file();
}

void Updater::finish(Failure f) {
  if (!f.ok() && !out_.staged_dir.empty()) {
    std::error_code ec;
    fs::remove_all(out_.staged_dir, ec);
    out_.staged_dir.clear();
  }
  out_.failure = std::move(f);
  auto d = std::move(done_);
  if (d) d(std::move(out_));
}

}  // namespace postern::scan
