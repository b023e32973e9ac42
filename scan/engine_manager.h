// engine_manager.h — the scanning engine's life: pattern sets in, compiled libclamav engines out.
//
// THE INTERFACE between the pattern sources (bundles, relay, offline files, a freshclam
// directory: scan/bundle_*.h, scan/updater.h) and the scanning gate (policy/scan_gate.h). It is
// declared here first so both sides are written against it; scan/engine_manager.cpp and
// scan/engine.* implement it.
//
// A source hands over a PatternSet (a directory of signature files it has already verified);
// the manager builds one engine from every source's current set (cl_engine_new, cl_load of each
// directory, cl_engine_compile) on its own thread, never on a loop thread, runs the set's
// self-test samples through it, and only then publishes it as the snapshot scans read. A failed
// build or self-test keeps the old engine. Scans in flight finish on the engine they took; an
// engine is freed with its last user (shared_ptr).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/snapshot.h"

namespace postern::scan {

// A sample the manifest names: scanning `content` must hit the signature `expect`
// ("Eicar-Test-Signature", "Postern.Test.Body.UNOFFICIAL" ... as libclamav reports it).
struct SelfTestSample {
  std::string name;
  std::string content;
  std::string expect;
};

// One source's installed, verified patterns.
struct PatternSet {
  std::string source;   // "bundle" or "freshclam" (one current set per source)
  std::string dir;      // directory whose signature files are loaded (.hdb .hsb .ndb .ldb .yar .cvd .cld)
  std::string version;  // the bundle's manifest version, or the freshclam database's version
  int64_t issued_at = 0;  // unix seconds: pattern age = now - issued_at
  std::vector<SelfTestSample> samples;
};

class Engine;  // scan/engine.h: an immutable compiled libclamav engine and the sets it holds
struct EngineLimits;  // scan/engine.h: scan limits from [scan] (size, files, recursion, timeout)

class EngineManager {
 public:
  using Done = std::function<void(bool ok, const std::string& err)>;
  // post: runs a function on the control loop (done callbacks are delivered through it).
  explicit EngineManager(std::function<void(std::function<void()>)> post);
  ~EngineManager();
  EngineManager(const EngineManager&) = delete;
  EngineManager& operator=(const EngineManager&) = delete;

  // Replaces `set.source`'s current set and builds a new engine from all current sets, off the
  // loop. done(true, "") once the new engine is published; done(false, why) when the load,
  // compile or a self-test failed — the previous engine (and the source's previous set) stays.
  void install(PatternSet set, Done done);
  // The limits the next build uses (from [scan]); when they differ from the current engine's
  // and sets are installed, the engine is rebuilt with them (a SIGHUP changed the config).
  void configure(const EngineLimits& limits);
  // Drops a source's set (e.g. the freshclam directory was unconfigured) and rebuilds.
  void remove(const std::string& source, Done done);
  // The engine scans use now (nullptr before the first successful build).
  std::shared_ptr<const Engine> current() const;
  Snapshot<Engine>& snapshot();
  // The sets in the current engine, for status, metrics and the X-Postern-Scan header.
  std::vector<PatternSet> installed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace postern::scan
