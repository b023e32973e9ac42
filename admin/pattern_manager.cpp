// pattern_manager.cpp — see pattern_manager.h. Security-sensitive: the license gate, the
// order verify -> prepare -> engine -> switch, and the relay's fixed file names.
#include "admin/pattern_manager.h"

#include "base/share_dir.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/log.h"
#include "licensing/license_kind.h"
#include "scan/bundle_archive.h"

namespace postern::admin {
namespace fs = std::filesystem;
using nlohmann::json;
using scan::BundleError;
using scan::Failure;

namespace {

constexpr int64_t kDay = 86400;


json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

int http_status_for(BundleError e) {
  switch (e) {
    case BundleError::kDownload: return 502;
    case BundleError::kLicense: return 403;
    case BundleError::kInstall:
    case BundleError::kEngine: return 500;
    default: return 422;
  }
}

}  // namespace

PatternManager::PatternManager(uv_loop_t* loop, mta::Runtime& rt, Hooks hooks)
    : loop_(loop), rt_(rt), hooks_(std::move(hooks)) {}

PatternManager::~PatternManager() { stop(); }

void PatternManager::configure() {
  cfg_ = rt_.config.load();
  if (!store_) store_ = std::make_unique<scan::BundleStore>(cfg_->state_dir);
  root_path_ = cfg_->updates.pattern_root.empty() ? store_->root() + "/root.pem" : cfg_->updates.pattern_root;
  std::string why;
  auto pem = scan::read_file_bounded(root_path_, 64 << 10, why);
  root_pem_ = pem ? *pem : "";
  root_error_ = pem ? "" : root_path_ + ": " + why;
  auto opt = http::HttpClient::options_from(*cfg_);
  if (!cfg_->updates.proxy.empty()) opt.proxy = cfg_->updates.proxy;
  if (!cfg_->updates.ca_file.empty()) opt.ca_file = cfg_->updates.ca_file;
  if (!http_) http_ = std::make_unique<http::HttpClient>(loop_, opt);
  else http_->set_options(opt);
}

void PatternManager::start() {
  configure();
  store_->remove_staging();
  load_etags();
  if (store_->current_dir().empty()) install_starter();
  else load_installed();
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<PatternManager*>(t->data)->tick(); }, 1000, 1000);
  next_check_ = now() + 5;
}

void PatternManager::stop() {
  if (timer_) {
    uv_timer_stop(timer_);
    timer_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
  http_.reset();
}

void PatternManager::tick() {
  if (rt_.config.load() != cfg_) configure();
  check_signer_expiry();
  std::string why;
  if (license_alert_ && license_allows(why)) {  // activated or renewed: updates may run again
    hooks_.resolve_alert("PATTERN_UPDATES_LICENSE");
    license_alert_ = false;
  }
  auto& u = cfg_->updates;
  if (u.server.empty() || u.interval.count() == 0 || busy_ || now() < next_check_) return;
  next_check_ = now() + std::chrono::duration_cast<std::chrono::seconds>(u.interval).count();
  update(nullptr);
}

// --- start-up ------------------------------------------------------------------------------

void PatternManager::load_installed() {
  scan::Verified v;
  if (auto f = store_->load_current(root_pem_, now(), v); !f.ok()) {
    engine_error_ = f.why;
    hooks_.raise("PATTERN_BUNDLE_INVALID", "error",
                 "the installed pattern bundle fails its check (" + std::string(scan::error_name(f.code)) + "): " + f.why +
                     "; no bundle patterns are loaded until a good bundle is installed",
                 true);
    return;
  }
  if (v.signer_expired)
    spdlog::warn("patterns: installed bundle version={} was accepted before its signing certificate expired; scanning "
                 "continues on it, updates need a re-signed bundle", v.manifest.version);
  std::string dir = store_->current_dir();
  spdlog::info("patterns: installed bundle version={} issued_at={} signer={} dir={}", v.manifest.version,
               v.manifest.issued_at, esc(v.signer.subject), dir);
  hand_to_engine(scan::pattern_set(v, dir), [this](bool ok, const std::string& err) {
    if (!ok) hooks_.raise("PATTERN_ENGINE_FAILED", "error", "the engine refused the installed bundle: " + err, true);
  });
}

void PatternManager::install_starter() {
  std::string path = cfg_->updates.starter_bundle;
  if (path == "none") return;
  std::string share = share_dir();
  if (path.empty()) path = share + "/starter-bundle.tar";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    spdlog::info("patterns: no bundle installed and no starter bundle at {}", path);
    return;
  }
  if (root_pem_.empty() && cfg_->updates.pattern_root.empty() && fs::exists(share + "/test-pattern-root.pem", ec)) {
    fs::copy_file(share + "/test-pattern-root.pem", root_path_, fs::copy_options::overwrite_existing, ec);
    spdlog::warn("patterns: pinned the TEST pattern root {} (for trying Postern, not for production: pin your own "
                 "with updates.pattern_root)", root_path_);
    configure();
  }
  std::string why, staged = store_->make_staging(why);
  scan::UnpackLimits lim;
  lim.max_total_size = cfg_->updates.max_bundle_size;
  scan::Verified v;
  Failure f = staged.empty() ? Failure{BundleError::kInstall, why} : scan::unpack_bundle(path, staged, lim);
  if (f.ok()) f = store_->verify_staged(staged, root_pem_, now(), v);
  if (!f.ok()) return refused(f, "starter bundle " + path, nullptr);
  busy_ = true;
  install_staged(staged, std::move(v), "starter bundle", [this](int, json) { busy_ = false; });
}

// --- installing ----------------------------------------------------------------------------

// The one call site of the engine (EngineManager::install through the hook).
void PatternManager::hand_to_engine(const scan::PatternSet& set, EngineDone done) {
  if (!hooks_.engine_install) {
    engine_loaded_ = false;
    engine_error_ = "no scanning engine in this build: the bundle is installed on disk only";
    return done(true, "");
  }
  hooks_.engine_install(set, [this, done = std::move(done)](bool ok, const std::string& err) {
    engine_loaded_ = ok || engine_loaded_;
    engine_error_ = ok ? "" : err;
    done(ok, err);
  });
}

void PatternManager::install_staged(const std::string& staged, scan::Verified v, const std::string& source, Reply reply) {
  std::string vdir;
  if (auto f = store_->prepare(staged, v, vdir); !f.ok()) {
    std::error_code ec;
    fs::remove_all(staged, ec);
    return refused(f, source, std::move(reply));
  }
  auto set = scan::pattern_set(v, vdir);
  hand_to_engine(set, [this, vdir, v = std::move(v), source, reply = std::move(reply)](bool ok, const std::string& err) {
    if (!ok) {
      store_->discard(vdir);
      return refused({BundleError::kEngine, "the engine refused version " + std::to_string(v.manifest.version) + ": " + err},
                     source, reply);
    }
    if (auto f = store_->commit(vdir, v, now()); !f.ok()) return refused(f, source, reply);
    succeeded(v, source, reply);
  });
}

void PatternManager::refused(const Failure& f, const std::string& source, Reply reply) {
  std::string name = scan::error_name(f.code);
  ++failures_[name];
  last_error_name_ = name;
  last_result_ = "refused: " + name + ": " + f.why;
  if (f.code == BundleError::kSignature || f.code == BundleError::kCertExpired)
    hooks_.raise(name, "error", "pattern update from " + source + " refused: " + f.why, false);
  if (f.code == BundleError::kLicense && !license_alert_) {
    hooks_.raise("PATTERN_UPDATES_LICENSE", "error", f.why, true);
    license_alert_ = true;
  }
  hooks_.raise("SECURITY_UPDATE_FAILED", "error",
               "event 9102 Security update failed: error code " + std::to_string(scan::error_code(f.code)) + ": Update: " +
                   name + ": " + f.why + " (source: " + source + "); the installed patterns stay in use",
               false);
  if (reply)
    reply(http_status_for(f.code), {{"error", name + " (error code " + std::to_string(scan::error_code(f.code)) + "): " + f.why}, {"code", name}, {"error_code", scan::error_code(f.code)},
                                    {"event", 9102}});
}

void PatternManager::succeeded(const scan::Verified& v, const std::string& source, Reply reply) {
  ++updates_;
  last_success_ = now();
  if (cfg_->updates.server.empty() || source != cfg_->updates.server) {  // the server's ETags no longer match `current`
    manifest_etag_.clear();
    signature_etag_.clear();
    save_etags();
  }
  last_error_name_.clear();
  std::string what = scan::decision_name(v.decision);
  last_result_ = "installed version " + std::to_string(v.manifest.version) + " (" + what + ") from " + source;
  hooks_.raise(v.decision == scan::Decision::kSignatureRefresh ? "PATTERN_SIGNATURE_REFRESHED" : "PATTERN_UPDATE_INSTALLED",
               "info",
               "pattern bundle version " + std::to_string(v.manifest.version) + " installed from " + source + " (" + what +
                   "), signed by " + v.signer.subject,
               false);
  check_signer_expiry();
  if (reply) reply(200, {{"installed", v.manifest.version}, {"result", what}, {"status", status()}});
}

// --- updates -------------------------------------------------------------------------------

bool PatternManager::license_allows(std::string& why) const {
  auto lic = rt_.licenses.load();
  if (lic && lic->updates_allowed(licensing::LicenseKind::kAntivirus)) return true;
  std::string st = lic ? licensing::state_name(lic->get(licensing::LicenseKind::kAntivirus).status.state) : "not activated";
  why = "the antivirus license is " + st +
        ": pattern updates are refused; scanning continues on the installed (stale) patterns";
  return false;
}

scan::Fetch PatternManager::fetcher() {
  return [this](const std::string& url, size_t max, const std::string& etag, std::function<void(scan::FetchResult)> done) {
    http::HttpClient::Request rq;
    rq.url = url;
    rq.max_response_size = max;
    rq.timeout = cfg_->updates.timeout;
    if (!etag.empty()) rq.headers.push_back({"If-None-Match", etag});
    http_->start(std::move(rq), [done = std::move(done)](http::HttpClient::Response r) {
      done({r.status, std::move(r.body), r.header("etag"), std::move(r.error)});
    });
  };
}

void PatternManager::update(Reply reply) {
  ++checks_;
  last_check_ = now();
  std::string why;
  if (cfg_->updates.server.empty()) {
    if (reply) reply(409, {{"error", "updates.server is not set: import bundle files instead (posternctl patterns import-bundle)"}});
    return;
  }
  if (!license_allows(why)) return refused({BundleError::kLicense, why}, cfg_->updates.server, std::move(reply));
  if (busy_) {
    if (reply) reply(409, {{"error", "an update or import is in progress; try again"}});
    return;
  }
  busy_ = true;
  auto finish = [this, reply](int st, json body) {
    busy_ = false;
    if (reply) reply(st, std::move(body));
  };
  scan::UpdateParams p{cfg_->updates.server, root_pem_, now(), cfg_->updates.max_bundle_size, manifest_etag_, signature_etag_};
  std::string source = cfg_->updates.server;
  scan::Updater::run(*store_, fetcher(), std::move(p), [this, finish, source](scan::UpdateOutcome o) {
    if (!o.failure.ok()) return refused(o.failure, source, finish);
    if (o.up_to_date) {
      manifest_etag_ = o.manifest_etag;
      signature_etag_ = o.signature_etag;
      save_etags();
      last_success_ = now();
      last_result_ = "up to date";
      return finish(200, {{"result", "up to date"}, {"status", status()}});
    }
    install_staged(o.staged_dir, std::move(o.verified), source,
                   [this, finish, me = o.manifest_etag, se = o.signature_etag](int st, json body) {
                     if (st == 200) {
                       manifest_etag_ = me;
                       signature_etag_ = se;
                       save_etags();
                     }
                     finish(st, std::move(body));
                   });
  });
}

void PatternManager::import(const std::string& bundle, Reply reply) {
  std::string why;
  if (!license_allows(why)) return refused({BundleError::kLicense, why}, "bundle file", std::move(reply));
  if (bundle.size() > cfg_->updates.max_bundle_size)
    return refused({BundleError::kTooLarge, "the bundle file is larger than updates.max_bundle_size"}, "bundle file",
                   std::move(reply));
  if (busy_) {
    if (reply) reply(409, {{"error", "an update is in progress; try again"}});
    return;
  }
  std::string staged = store_->make_staging(why);
  if (staged.empty()) return refused({BundleError::kInstall, why}, "bundle file", std::move(reply));
  scan::UnpackLimits lim;
  lim.max_total_size = cfg_->updates.max_bundle_size;
  scan::Verified v;
  Failure f = scan::unpack_bundle_bytes(bundle, staged, lim);
  if (f.ok()) f = store_->verify_staged(staged, root_pem_, now(), v);
  std::error_code ec;
  if (!f.ok()) {
    fs::remove_all(staged, ec);
    return refused(f, "bundle file", std::move(reply));
  }
  if (v.decision == scan::Decision::kUpToDate) {
    fs::remove_all(staged, ec);
    if (reply) reply(200, {{"result", "up to date"}, {"status", status()}});
    return;
  }
  busy_ = true;  // no scheduled update may switch `current` while the engine builds this one
  install_staged(staged, std::move(v), "bundle file", [this, reply = std::move(reply)](int st, json body) {
    busy_ = false;
    if (reply) reply(st, std::move(body));
  });
}

// --- signer expiry, status, metrics ---------------------------------------------------------

void PatternManager::check_signer_expiry() {
  auto st = store_ ? store_->state() : std::nullopt;
  std::string want;
  std::string text;
  if (st && st->signer_not_after > 0) {
    int64_t left = st->signer_not_after - now();
    if (left <= 0) {
      want = "PATTERN_SIGNER_EXPIRED";
      text = "the signing certificate of the installed pattern bundle (version " + std::to_string(st->version) +
             ") has expired: scanning continues on it; a signature-only refresh from the vendor renews it";
    } else if (left < int64_t{cfg_->updates.signer_warning_days} * kDay) {
      want = "PATTERN_SIGNER_EXPIRING";
      text = "the signing certificate of the installed pattern bundle expires in " + std::to_string(left / kDay) +
             " days; a signature-only refresh from the vendor renews it";
    }
  }
  if (want == signer_alert_) return;
  if (!signer_alert_.empty()) hooks_.resolve_alert(signer_alert_);
  if (!want.empty()) hooks_.raise(want, "warning", text, true);
  signer_alert_ = want;
}

json PatternManager::status() const {
  json j;
  auto st = store_ ? store_->state() : std::nullopt;
  int64_t t = now();
  if (st && !store_->current_dir().empty()) {
    j["installed"] = {{"version", st->version}, {"issued_at", st->issued_at}, {"age_seconds", t - st->issued_at},
                      {"signer", st->signer_subject}, {"signer_not_after", st->signer_not_after},
                      {"signer_days_left", (st->signer_not_after - t) / kDay}, {"installed_at", st->installed_at},
                      {"dir", store_->current_dir()}};
  } else {
    j["installed"] = nullptr;
  }
  std::string why;
  bool allowed = license_allows(why);
  j["updates_allowed"] = allowed;
  j["stale"] = !allowed;
  j["server"] = cfg_ ? null_or(cfg_->updates.server) : json(nullptr);
  j["interval_seconds"] = cfg_ ? std::chrono::duration_cast<std::chrono::seconds>(cfg_->updates.interval).count() : 0;
  j["pattern_root"] = root_path_;
  j["pattern_root_error"] = null_or(root_error_);
  j["last_check"] = last_check_ ? json(last_check_) : json(nullptr);
  j["last_success"] = last_success_ ? json(last_success_) : json(nullptr);
  j["last_result"] = last_result_;
  j["last_error"] = null_or(last_error_name_);
  j["updating"] = busy_;
  j["engine"] = {{"loaded", engine_loaded_}, {"error", null_or(engine_error_)}};
  j["signer_alert"] = null_or(signer_alert_);
  return j;
}

std::string PatternManager::metrics() const {
  std::ostringstream o;
  auto st = store_ ? store_->state() : std::nullopt;
  o << "# HELP postern_pattern_updates_total Pattern bundles installed (updates and signature-only refreshes).\n"
       "# TYPE postern_pattern_updates_total counter\npostern_pattern_updates_total "
    << updates_ << "\n";
  o << "# HELP postern_pattern_update_checks_total Update checks started (schedule and on demand).\n"
       "# TYPE postern_pattern_update_checks_total counter\npostern_pattern_update_checks_total "
    << checks_ << "\n";
  o << "# HELP postern_pattern_update_failures_total Refused or failed pattern updates, by error code.\n"
       "# TYPE postern_pattern_update_failures_total counter\n";
  for (auto& [code, n] : failures_) o << "postern_pattern_update_failures_total{code=\"" << code << "\"} " << n << "\n";
  if (st) {
    int64_t t = now();
    o << "# HELP postern_pattern_bundle_version The installed bundle's version.\n# TYPE postern_pattern_bundle_version gauge\n"
      << "postern_pattern_bundle_version " << st->version << "\n";
    o << "# HELP postern_pattern_bundle_age_seconds Now minus the installed bundle's issued_at.\n"
         "# TYPE postern_pattern_bundle_age_seconds gauge\npostern_pattern_bundle_age_seconds "
      << (t - st->issued_at) << "\n";
    o << "# HELP postern_pattern_signer_expiry_days Days until the installed bundle's signing certificate expires.\n"
         "# TYPE postern_pattern_signer_expiry_days gauge\npostern_pattern_signer_expiry_days "
      << (st->signer_not_after - t) / kDay << "\n";
  }
  std::string why;
  o << "# HELP postern_pattern_updates_allowed 1 while the antivirus license allows pattern updates (0: stale).\n"
       "# TYPE postern_pattern_updates_allowed gauge\npostern_pattern_updates_allowed "
    << (license_allows(why) ? 1 : 0) << "\n";
  return o.str();
}

// --- the relay -----------------------------------------------------------------------------

http::Response PatternManager::serve_relay(const http::Request& req) const {
  if (req.method != "GET") return http::json_error(405, "method not allowed");
  std::string cur = store_ ? store_->current_dir() : "";
  if (cur.empty()) return http::json_error(404, "no pattern bundle is installed on this node");
  std::string rest = req.path.substr(std::string("/updates/").size()), name;
  if (rest == scan::kManifestName || rest == scan::kSignatureName) name = rest;
  else if (rest.rfind("files/", 0) == 0 && scan::valid_file_name(rest.substr(6))) name = rest.substr(6);
  else return http::json_error(404, "no such file");
  std::string why;
  auto data = scan::read_file_bounded(cur + "/" + name, cfg_ ? cfg_->updates.max_bundle_size : 64ull << 20, why);
  if (!data) return http::json_error(404, "no such file");
  std::string etag = "\"" + scan::sha256_hex(*data).substr(0, 32) + "\"";
  if (auto it = req.headers.find("if-none-match"); it != req.headers.end() && it->second == etag)
    return {304, "application/octet-stream", "", {{"ETag", etag}}};
  bool js = name == scan::kManifestName;
  return {200, js ? "application/json" : "application/octet-stream", std::move(*data), {{"ETag", etag}}};
}

void PatternManager::save_etags() const {
  std::ofstream(store_->root() + "/etags.json", std::ios::trunc)
      << json{{"manifest", manifest_etag_}, {"signature", signature_etag_}, {"server", cfg_->updates.server}}.dump() << "\n";
}

void PatternManager::load_etags() {
  std::string why;
  auto text = scan::read_file_bounded(store_->root() + "/etags.json", 4096, why);
  if (!text) return;
  auto j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("server", "") != cfg_->updates.server) return;
  manifest_etag_ = j.value("manifest", "");
  signature_etag_ = j.value("signature", "");
}

}  // namespace postern::admin
