// scan_service.cpp — see scan_service.h.
#include "scan/scan_service.h"

#include <sstream>

#include "base/log.h"

namespace postern::scan {

EngineLimits limits_from(const ScanConfig& sc) {
  EngineLimits l;
  l.max_scan_size = sc.max_scan_size;
  l.max_files = sc.max_files;
  l.max_recursion = sc.max_recursion;
  l.timeout = sc.timeout;
  return l;
}

void ScanMetrics::verdict(const std::string& v) {
  if (v == "clean") clean.fetch_add(1);
  else if (v == "infected") infected.fetch_add(1);
  else if (v == "error") error.fetch_add(1);
  else not_scanned.fetch_add(1);
}

void ScanMetrics::failure(const std::string& r) {
  if (r == "timeout") fail_timeout.fetch_add(1);
  else if (r == "queue_full") fail_queue_full.fetch_add(1);
  else if (r == "no_engine") fail_no_engine.fetch_add(1);
  else fail_engine.fetch_add(1);
}

void ScanMetrics::observe(double s) {
  size_t i = 0;
  while (i < kBuckets.size() && s > kBuckets[i]) ++i;
  hist[i].fetch_add(1);
  sum_us.fetch_add(static_cast<uint64_t>(s * 1e6));
  count.fetch_add(1);
}

ScanService::ScanService(uv_loop_t* loop, const ScanConfig& sc) {
  uv_async_init(loop, &async_, on_async);
  async_.data = this;
  engines_ = std::make_unique<EngineManager>([this](std::function<void()> fn) { post(std::move(fn)); });
  engines_->configure(limits_from(sc));
  pool_ = std::make_unique<ScanPool>(sc.threads, sc.queue_size);
  dir_ = std::make_unique<ClamavDirSource>(*engines_, [this](const std::string& code, const std::string& text) {
    if (sink_) sink_(code, text);
  });
}

ScanService::~ScanService() {
  stop();
  engines_.reset();  // joins the builder thread
}

void ScanService::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    posted_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
}

void ScanService::on_async(uv_async_t* a) {
  auto* s = static_cast<ScanService*>(a->data);
  std::deque<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> lk(s->mu_);
    fns.swap(s->posted_);
  }
  for (auto& f : fns) f();
}

void ScanService::tick(const ScanConfig& sc) {
  if (dir_) dir_->poll(sc.clamav_database_dir);
}

void ScanService::configure(const ScanConfig& sc) { engines_->configure(limits_from(sc)); }

void ScanService::stop() {
  if (pool_) pool_->stop();
  dir_.reset();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
  }
  // The manager lives on until destruction (rt.engines may still be called: a build then runs,
  // its answer is no longer delivered).
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

std::string ScanService::metrics_text(int64_t now, bool stale) const {
  std::ostringstream o;
  auto& m = metrics_;
  o << "# HELP postern_scan_total Messages through the scanning gate, by verdict.\n# TYPE postern_scan_total counter\n";
  o << "postern_scan_total{verdict=\"clean\"} " << m.clean << "\n";
  o << "postern_scan_total{verdict=\"infected\"} " << m.infected << "\n";
  o << "postern_scan_total{verdict=\"error\"} " << m.error << "\n";
  o << "postern_scan_total{verdict=\"not_scanned\"} " << m.not_scanned << "\n";
  o << "# HELP postern_scan_failures_total Scans that failed (scan.failure_action applied), by reason.\n"
       "# TYPE postern_scan_failures_total counter\n";
  o << "postern_scan_failures_total{reason=\"timeout\"} " << m.fail_timeout << "\n";
  o << "postern_scan_failures_total{reason=\"engine\"} " << m.fail_engine << "\n";
  o << "postern_scan_failures_total{reason=\"queue_full\"} " << m.fail_queue_full << "\n";
  o << "postern_scan_failures_total{reason=\"no_engine\"} " << m.fail_no_engine << "\n";
  o << "# HELP postern_scan_seconds Time libclamav took per message.\n# TYPE postern_scan_seconds histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < ScanMetrics::kBuckets.size(); ++i) {
    cum += m.hist[i];
    o << "postern_scan_seconds_bucket{le=\"" << ScanMetrics::kBuckets[i] << "\"} " << cum << "\n";
  }
  cum += m.hist[ScanMetrics::kBuckets.size()];
  o << "postern_scan_seconds_bucket{le=\"+Inf\"} " << cum << "\n";
  o << "postern_scan_seconds_sum " << static_cast<double>(m.sum_us.load()) / 1e6 << "\n";
  o << "postern_scan_seconds_count " << m.count << "\n";
  auto sets = engines_ ? engines_->installed() : std::vector<PatternSet>{};
  o << "# HELP postern_patterns_version_info The pattern sets in the engine scans use.\n"
       "# TYPE postern_patterns_version_info gauge\n";
  for (auto& s : sets)
    o << "postern_patterns_version_info{source=\"" << esc(s.source) << "\",version=\"" << esc(s.version) << "\"} 1\n";
  o << "# HELP postern_patterns_age_seconds Age of each pattern set (now - issued).\n"
       "# TYPE postern_patterns_age_seconds gauge\n";
  for (auto& s : sets) o << "postern_patterns_age_seconds{source=\"" << esc(s.source) << "\"} " << now - s.issued_at << "\n";
  o << "# HELP postern_patterns_stale 1 when the antivirus license is past grace: scanning goes on with stale "
       "patterns.\n# TYPE postern_patterns_stale gauge\n";
  o << "postern_patterns_stale " << (stale ? 1 : 0) << "\n";
  return o.str();
}

}  // namespace postern::scan
