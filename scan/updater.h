// updater.h — one pattern update from an update server or a relay, as a sequence of fetches
// (the transport is injected: admin/pattern_manager.cpp passes http::HttpClient on the control
// loop; the unit tests pass a fake), ending in a verified staging directory or a refusal.
//
// Protocol: GET <server>/updates/manifest.json and <server>/updates/manifest.sig (each with
// If-None-Match when we hold its ETag), then each listed file under <server>/updates/files/.
// Both the manifest AND its signature are always asked for: a signature-only refresh changes
// manifest.sig and nothing else, and an updater (or relay) that looks only at the manifest's
// version never passes the new signature on (seed 003). The signature is verified (chain and
// time) and the rollback rules applied before any file is downloaded; for a signature-only
// refresh the files are taken from the installed bundle, not downloaded again.
// Security-sensitive: every download is bounded (the manifest and signature by their caps, each
// file by the size the signed manifest gives, the files together by updates.max_bundle_size);
// a longer answer is refused as too large, a shorter one as truncated.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "scan/bundle.h"
#include "scan/bundle_store.h"

namespace postern::scan {

struct FetchResult {
  long status = 0;    // HTTP status (200, 304, 404 ...); 0 with error set
  std::string body;
  std::string etag;   // the ETag header, as sent
  std::string error;  // transport error ("" when an answer came back)
};
// Fetches `url`, at most `max_size` body bytes; `if_none_match` "" = unconditional.
using Fetch = std::function<void(const std::string& url, size_t max_size, const std::string& if_none_match,
                                 std::function<void(FetchResult)> done)>;

struct UpdateOutcome {
  Failure failure;              // ok() when staged or up to date
  bool up_to_date = false;      // nothing new (304s, or the same signature)
  std::string staged_dir;       // verified bundle ready for BundleStore::prepare
  Verified verified;
  std::string manifest_etag, signature_etag;  // to remember once installed
};

struct UpdateParams {
  std::string server;  // "https://host:port" (without /updates)
  std::string root_pem;
  int64_t now = 0;
  uint64_t max_bundle_size = 64ull << 20;
  std::string manifest_etag, signature_etag;  // from the last successful check
};

class Updater : public std::enable_shared_from_this<Updater> {
 public:
  using Done = std::function<void(UpdateOutcome)>;
  // `store` must outlive the update; `done` is called exactly once.
  static void run(BundleStore& store, Fetch fetch, UpdateParams p, Done done);

 private:
  Updater(BundleStore& store, Fetch fetch, UpdateParams p, Done done);
  void got_manifest(FetchResult r);
  void got_signature(FetchResult r);
  void verify_and_plan();
  void next_file();
  void got_file(size_t i, FetchResult r);
  void finish(Failure f);
  Failure body_or_installed(const FetchResult& r, const char* name, size_t max, std::string& out);

  BundleStore& store_;
  Fetch fetch_;
  UpdateParams p_;
  Done done_;
  FetchResult manifest_, signature_;
  UpdateOutcome out_;
  size_t next_ = 0;
};

// Maps a transport answer to a refusal (kDownload, kTooLarge, kTruncated) or ok.
Failure classify_fetch(const FetchResult& r, const std::string& what);

}  // namespace postern::scan
