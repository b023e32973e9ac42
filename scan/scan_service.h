// scan_service.h — the scanning room as posternd runs it: the EngineManager (with its done
// callbacks posted to the control loop), the scan thread pool, the freshclam-directory source and
// the scan metrics. Created on the control thread before the workers start; stopped after them.
//
// Security-sensitive: the metrics and the pool's bound; everything else is in the parts.
#pragma once

#include <uv.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "conf/config.h"
#include "scan/clamav_dir.h"
#include "scan/engine.h"
#include "scan/engine_manager.h"
#include "scan/scan_pool.h"

namespace postern::scan {

EngineLimits limits_from(const ScanConfig& sc);

// Counters shown on /metrics (thread-safe).
struct ScanMetrics {
  static constexpr std::array<double, 10> kBuckets{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30};
  std::atomic<uint64_t> clean{0}, infected{0}, error{0}, not_scanned{0};
  std::atomic<uint64_t> fail_timeout{0}, fail_engine{0}, fail_queue_full{0}, fail_no_engine{0};
  std::array<std::atomic<uint64_t>, kBuckets.size() + 1> hist{};  // last: +Inf
  std::atomic<uint64_t> sum_us{0};
  std::atomic<uint64_t> count{0};
  void verdict(const std::string& v);
  void failure(const std::string& reason);
  void observe(double seconds);
};

class ScanService {
 public:
  ScanService(uv_loop_t* control_loop, const ScanConfig& sc);
  ~ScanService();
  ScanService(const ScanService&) = delete;
  ScanService& operator=(const ScanService&) = delete;

  EngineManager& engines() { return *engines_; }
  ScanPool& pool() { return *pool_; }
  ScanMetrics& metrics() { return metrics_; }
  // The control loop's 1 s tick: the freshclam directory.
  void tick(const ScanConfig& sc);
  // Where pattern-source failures go as events (the control plane's raise), on the control loop.
  void set_event_sink(ClamavDirSource::Event sink) { sink_ = std::move(sink); }
  // SIGHUP: new limits (the engine is rebuilt when they changed). Threads and queue size are
  // fixed until restart.
  void configure(const ScanConfig& sc);
  // After the workers have finished: runs what is queued and joins the scan threads.
  void stop();
  // The /metrics lines; now = the (injected) clock's unix seconds; stale = past grace.
  std::string metrics_text(int64_t now, bool stale) const;

 private:
  static void on_async(uv_async_t* a);
  void post(std::function<void()> fn);
  uv_async_t async_{};
  std::mutex mu_;
  std::deque<std::function<void()>> posted_;
  std::unique_ptr<EngineManager> engines_;
  std::unique_ptr<ScanPool> pool_;
  std::unique_ptr<ClamavDirSource> dir_;
  ScanMetrics metrics_;
  ClamavDirSource::Event sink_;
  bool closed_ = false;
};

}  // namespace postern::scan
