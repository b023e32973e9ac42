// runtime.h — what every worker loop shares: the config and TLS snapshots (TlsRoles), the spool, the
// per-client-IP session counts and the counters that /metrics will show.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/clock.h"
#include "base/snapshot.h"
#include "conf/config.h"
#include "licensing/licenses.h"
#include "mta/queue/spool.h"
#include "policy/verify_cache.h"
#include "tls/session_cache.h"
#include "tls/tls_roles.h"

namespace postern::scan {
class EngineManager;
class ScanService;
}

namespace postern::mta {

struct Counters {
  std::atomic<uint64_t> sessions_total{0};
  std::atomic<uint64_t> sessions_active{0};
  std::atomic<uint64_t> sessions_refused{0};
  std::atomic<uint64_t> messages_accepted{0};
  std::atomic<uint64_t> messages_commit_failed{0};
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_failures{0};
  std::atomic<uint64_t> tls_handshakes_outbound{0};
  std::atomic<uint64_t> tls_failures_outbound{0};
  std::atomic<uint64_t> rcpts_delivered{0};
  std::atomic<uint64_t> rcpts_deferred{0};
  std::atomic<uint64_t> rcpts_bounced{0};
  std::atomic<uint64_t> dsns_generated{0};
  std::atomic<uint64_t> sessions_write_stalled{0};  // ended: the client did not read its replies
  std::atomic<uint64_t> accept_paused{0};           // the listeners paused: out of descriptors
  std::atomic<uint64_t> improper_pipelining{0};     // sessions that sent before a reply they must wait for
  std::atomic<uint64_t> pregreet{0};                // sessions that talked before the greeting
  std::atomic<uint64_t> verify_probes{0};           // recipient verification: probes sent downstream
  std::atomic<uint64_t> verify_cached{0};           // ... RCPTs answered from the cache
  std::atomic<uint64_t> verify_unreachable{0};      // ... answered as unreachable (relay.verify_unreachable)
  std::atomic<uint64_t> gate_rejected{0};           // messages the scanning gate rejected (5xx) or tempfailed (4xx)
};

class IpLimiter {
 public:
  // false when the client already has `max` sessions.
  bool acquire(const std::string& ip, uint32_t max);
  void release(const std::string& ip);

 private:
  std::mutex mu_;
  std::unordered_map<std::string, uint32_t> n_;
};

struct Runtime {
  Snapshot<Config> config;
  // Every TLS role's current context set (inbound and outbound MTA, admin and EUQ consoles)
  // and the session-ticket keys: readers take tls.current(role) and keep it for their SSL.
  tls::TlsRoles tls;
  Snapshot<licensing::Licenses> licenses;  // published by the control plane (admin/license_manager.h)
  tls::SessionCache tls_sessions;  // outbound sessions to resume, shared by the workers
  policy::VerifyCache verify_cache;  // recipient verification's answers, shared by the workers
  queue::Spool* spool = nullptr;
  IpLimiter ip_limits;
  Counters counters;
  std::atomic<uint64_t> spool_free_bytes{UINT64_MAX};  // refreshed by the control loop
  // smtp.max_sessions, or less when the descriptor limit cannot hold that many (see fd_budget.h).
  std::atomic<uint32_t> session_limit{2000};
  // Time for everything with a deadline (base/clock.h); posternd --test-clock replaces it.
  const Clock* clock = &real_clock();
  // The scanning room (scan/scan_service.h), set by posternd before the workers start; null in
  // tools and tests that run no gate (then messages commit unscanned, with no header).
  scan::ScanService* scan = nullptr;
  scan::EngineManager* engines = nullptr;  // = &scan->engines(): pattern sources install here
  // Called (from the committer thread) for every message committed by the inbound side.
  std::function<void(const Envelope&)> on_queued;
  // ... and for every message the gate put in the quarantine area (the index is written from it).
  std::function<void(const Envelope&)> on_quarantined;
};

}  // namespace postern::mta
