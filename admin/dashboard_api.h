// dashboard_api.h — what the admin dashboard needs beyond the existing /api/v1 endpoints:
//   GET  /api/v1/stats/throughput: the last hour, per minute (by the injected clock): messages
//        in (accepted), recipients delivered, deferred and bounced, messages rejected by the
//        scanning gate; a ring of 60 counter deltas sampled every second on the control loop
//        from rt.counters. A clock jump of more than an hour leaves an empty hour (those minutes
//        had nothing); a jump back starts the current minute again.
//   POST /api/v1/admin/password {"password"}: stores the scrypt hash in the settings table
//        (posternctl admin set-password; 503 while the database is down).
#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>

#include "admin/pg_client.h"
#include "http/http_server.h"
#include "mta/runtime.h"

namespace postern::admin {

class Throughput {
 public:
  static constexpr int kSeries = 5;  // in, delivered, deferred, bounced, rejected
  static constexpr const char* kNames[kSeries] = {"in", "delivered", "deferred", "bounced", "rejected"};
  using Totals = std::array<uint64_t, kSeries>;
  static constexpr int kMinutes = 60;

  // Adds what the counters grew by since the last sample to the minute `now_unix` falls in.
  void sample(int64_t now_unix, const Totals& totals);
  // {"minutes": [{"t": unix minute start, "in": n, ...} x60, oldest first], "totals": {...}}
  nlohmann::json to_json(int64_t now_unix) const;

 private:
  struct Minute {
    int64_t minute = -1;
    Totals v{};
  };
  std::array<Minute, kMinutes> ring_{};
  std::optional<Totals> last_;
};

Throughput::Totals throughput_totals(const mta::Runtime& rt);

// The 1 s sampler on the control loop.
class ThroughputSampler {
 public:
  ThroughputSampler(uv_loop_t* loop, const mta::Runtime& rt);
  ~ThroughputSampler();
  ThroughputSampler(const ThroughputSampler&) = delete;
  ThroughputSampler& operator=(const ThroughputSampler&) = delete;
  void start();
  void close();
  const Throughput& data() const { return t_; }

 private:
  uv_loop_t* loop_;
  const mta::Runtime& rt_;
  uv_timer_t* timer_ = nullptr;  // freed by its close callback
  Throughput t_;
};

// POST /api/v1/admin/password. `saved(hash)` runs once the row is written (the caller publishes
// it, reloads the settings and tells the other nodes).
void admin_password_api(PgClient* db, bool db_up, const http::Request& req, http::Responder respond,
                        std::function<void(const std::string& hash)> saved);

}  // namespace postern::admin
