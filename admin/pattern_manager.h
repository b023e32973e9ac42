// pattern_manager.h — posternd's side of pattern bundles, on the control thread: the pinned
// pattern root, the installed store (scan/bundle_store.h), the starter bundle at first start,
// scheduled and on-demand updates from an update server or relay (scan/updater.h over
// http::HttpClient: libcurl multi on the loop, proxy-aware, ETags), offline bundle imports, the
// license gate, the hand-over of a verified bundle to the scanning engine, events and alerts,
// status, metrics, and the relay: the installed bundle served under /updates/.
//
// Security-sensitive: nothing reaches the engine or `current` unverified; a refused or failed
// update leaves the installed bundle and the engine as they were and raises its event plus
// SECURITY_UPDATE_FAILED (event 9102) with the error code; after the antivirus license's grace
// (or before activation) no update is installed, while scanning carries on with what is
// installed. The relay serves only the verified, installed bundle, by fixed names.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "http/http_client.h"
#include "http/http_server.h"
#include "mta/runtime.h"
#include "scan/bundle_store.h"
#include "scan/engine_manager.h"
#include "scan/updater.h"

namespace postern::admin {

class PatternManager {
 public:
  using EngineDone = std::function<void(bool ok, const std::string& err)>;
  struct Hooks {
    std::function<void(const std::string& code, const std::string& severity, const std::string& text, bool alert)> raise;
    std::function<void(const std::string& code)> resolve_alert;
    // EngineManager::install (scan/engine_manager.h); null = no engine in this build: the bundle
    // is verified and installed on disk only.
    std::function<void(scan::PatternSet, EngineDone)> engine_install;
  };
  using Reply = std::function<void(int status, nlohmann::json body)>;

  PatternManager(uv_loop_t* loop, mta::Runtime& rt, Hooks hooks);
  ~PatternManager();
  void start();  // root, installed bundle (or the starter), the engine, the schedule
  void stop();
  void update(Reply reply);                       // on demand (API); also the schedule
  void import(const std::string& bundle, Reply reply);  // an offline bundle file's bytes
  nlohmann::json status() const;
  std::string metrics() const;
  // GET /updates/manifest.json | manifest.sig | files/<name>: the relay.
  http::Response serve_relay(const http::Request& req) const;
  void tick();

 private:
  void configure();
  int64_t now() const { return rt_.clock->unix_seconds(); }
  bool license_allows(std::string& why) const;
  void load_installed();
  void install_starter();
  void install_staged(const std::string& staged, scan::Verified v, const std::string& source, Reply reply);
  void hand_to_engine(const scan::PatternSet& set, EngineDone done);
  void refused(const scan::Failure& f, const std::string& source, Reply reply);
  void succeeded(const scan::Verified& v, const std::string& source, Reply reply);
  void check_signer_expiry();
  void save_etags() const;
  void load_etags();
  scan::Fetch fetcher();

  uv_loop_t* loop_;
  mta::Runtime& rt_;
  Hooks hooks_;
  std::shared_ptr<const Config> cfg_;
  std::unique_ptr<scan::BundleStore> store_;
  std::unique_ptr<http::HttpClient> http_;
  uv_timer_t* timer_ = nullptr;
  std::string root_path_, root_pem_, root_error_;
  bool busy_ = false;
  int64_t next_check_ = 0, last_check_ = 0, last_success_ = 0;
  std::string last_result_ = "never checked", last_error_name_;
  std::string manifest_etag_, signature_etag_;
  std::string signer_alert_;  // the open signer alert's code ("" = none)
  bool license_alert_ = false;  // PATTERN_UPDATES_LICENSE is open
  bool engine_loaded_ = false;
  std::string engine_error_;
  uint64_t updates_ = 0, checks_ = 0;
  std::map<std::string, uint64_t> failures_;  // by error name
};

}  // namespace postern::admin
