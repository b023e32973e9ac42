// engine_manager.cpp — scan/engine_manager.h: one builder thread turns the current pattern sets
// into a compiled Engine and publishes it. Security-sensitive: a build or self-test that fails
// never replaces the engine scans use (the source's previous set stays too), and nothing here
// runs on a loop thread.
#include "scan/engine_manager.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "base/log.h"
#include "scan/engine.h"

namespace postern::scan {

struct EngineManager::Impl {
  std::function<void(std::function<void()>)> post;
  Snapshot<Engine> snap;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;  // run on the builder thread, in order
  bool stop = false;
  // Builder thread only (read under mu by installed()).
  std::map<std::string, PatternSet> sets;  // by source: what the current engine holds
  EngineLimits limits;
  std::thread th;

  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || !jobs.empty(); });
        if (stop) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      job();
    }
  }

  void enqueue(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lk(mu);
      jobs.push_back(std::move(job));
    }
    cv.notify_one();
  }

  // Builds from `next`; publishes and keeps it when it works.
  bool rebuild(const std::map<std::string, PatternSet>& next, const EngineLimits& lim, std::string& err) {
    std::vector<PatternSet> v;
    for (auto& [k, s] : next) v.push_back(s);
    if (v.empty()) {
      std::lock_guard<std::mutex> lk(mu);
      sets.clear();
      limits = lim;
      snap.publish(nullptr);
      return true;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto en = Engine::build(v, lim, err);
    if (!en) {
      spdlog::error("event=PATTERN_ENGINE_BUILD_FAILED error={} (the previous engine stays)", esc(err));
      return false;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    {
      std::lock_guard<std::mutex> lk(mu);
      sets = next;
      limits = lim;
    }
    snap.publish(en);
    std::string desc;
    for (auto& s : v) desc += (desc.empty() ? "" : ",") + s.source + ":" + s.version;
    spdlog::info("patterns engine published sets={} signatures={} build_seconds={:.2f}", desc, en->signatures(), secs);
    return true;
  }

  void answer(const Done& done, bool ok, std::string err) {
    if (!done) return;
    post([done, ok, err = std::move(err)] { done(ok, err); });
  }
};

EngineManager::EngineManager(std::function<void(std::function<void()>)> post) : impl_(std::make_unique<Impl>()) {
  impl_->post = std::move(post);
  impl_->th = std::thread([this] { impl_->run(); });
}

EngineManager::~EngineManager() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->th.joinable()) impl_->th.join();
}

void EngineManager::install(PatternSet set, Done done) {
  Impl* im = impl_.get();
  im->enqueue([im, set = std::move(set), done = std::move(done)] {
    auto next = im->sets;
    std::string src = set.source;
    next[src] = set;
    std::string err;
    bool ok = im->rebuild(next, im->limits, err);
    im->answer(done, ok, err);
  });
}

void EngineManager::remove(const std::string& source, Done done) {
  Impl* im = impl_.get();
  im->enqueue([im, source, done = std::move(done)] {
    auto next = im->sets;
    if (next.erase(source) == 0) return im->answer(done, true, "");
    std::string err;
    bool ok = im->rebuild(next, im->limits, err);
    im->answer(done, ok, err);
  });
}

void EngineManager::configure(const EngineLimits& limits) {
  Impl* im = impl_.get();
  im->enqueue([im, limits] {
    if (im->limits == limits) return;
    if (im->sets.empty()) {
      im->limits = limits;
      return;
    }
    std::string err;
    if (!im->rebuild(im->sets, limits, err)) im->limits = limits;  // the next install uses them
  });
}

std::shared_ptr<const Engine> EngineManager::current() const { return impl_->snap.load(); }

Snapshot<Engine>& EngineManager::snapshot() { return impl_->snap; }

std::vector<PatternSet> EngineManager::installed() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  std::vector<PatternSet> v;
  for (auto& [k, s] : impl_->sets) v.push_back(s);
  return v;
}

}  // namespace postern::scan
