// dashboard_api.cpp — see dashboard_api.h.
#include "admin/dashboard_api.h"

#include <spdlog/spdlog.h>

#include "admin/web_auth.h"

namespace postern::admin {
using nlohmann::json;

void Throughput::sample(int64_t now_unix, const Totals& totals) {
  int64_t minute = now_unix >= 0 ? now_unix / 60 : -1;
  Minute& m = ring_[static_cast<size_t>((minute % kMinutes + kMinutes) % kMinutes)];
  if (m.minute != minute) m = Minute{minute, {}};
  if (last_) {
    for (int i = 0; i < kSeries; ++i)
      if (totals[i] > (*last_)[i]) m.v[i] += totals[i] - (*last_)[i];
  }
  last_ = totals;
}

json Throughput::to_json(int64_t now_unix) const {
  int64_t now_min = now_unix / 60;
  json minutes = json::array();
  Totals sum{};
  for (int64_t t = now_min - kMinutes + 1; t <= now_min; ++t) {
    const Minute& m = ring_[static_cast<size_t>((t % kMinutes + kMinutes) % kMinutes)];
    json j{{"t", t * 60}};
    for (int i = 0; i < kSeries; ++i) {
      uint64_t v = m.minute == t ? m.v[i] : 0;
      j[kNames[i]] = v;
      sum[i] += v;
    }
    minutes.push_back(j);
  }
  json totals;
  for (int i = 0; i < kSeries; ++i) totals[kNames[i]] = sum[i];
  return {{"minutes", minutes}, {"totals", totals}, {"now", now_unix}};
}

Throughput::Totals throughput_totals(const mta::Runtime& rt) {
  auto& c = rt.counters;
  return {c.messages_accepted.load(), c.rcpts_delivered.load(), c.rcpts_deferred.load(), c.rcpts_bounced.load(),
          c.gate_rejected.load()};
}

ThroughputSampler::ThroughputSampler(uv_loop_t* loop, const mta::Runtime& rt) : loop_(loop), rt_(rt) {}

ThroughputSampler::~ThroughputSampler() { close(); }

void ThroughputSampler::start() {
  if (timer_) return;
  t_.sample(rt_.clock->unix_seconds(), throughput_totals(rt_));
  timer_ = new uv_timer_t{};
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<ThroughputSampler*>(t->data);
        self->t_.sample(self->rt_.clock->unix_seconds(), throughput_totals(self->rt_));
      },
      1000, 1000);
}

void ThroughputSampler::close() {
  if (!timer_) return;
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  timer_ = nullptr;
}

void admin_password_api(PgClient* db, bool db_up, const http::Request& req, http::Responder respond,
                        std::function<void(const std::string& hash)> saved) {
  auto reply = [respond](int st, const json& j) {
    respond({st, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace), {}});
  };
  if (req.method != "POST") return reply(405, {{"error", "method not allowed"}});
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("password") || !j["password"].is_string())
    return reply(400, {{"error", "the body must be {\"password\": \"...\"}"}});
  std::string pw = j["password"].get<std::string>();
  if (auto why = password_problem(pw); !why.empty()) return reply(400, {{"error", why}});
  if (!db || !db_up)
    return reply(503, {{"error", "database unavailable: the admin password is kept in the settings table; try again "
                                 "when the database is back"}});
  std::string hash = hash_password(pw);
  db->query("INSERT INTO settings (key, value) VALUES ($1, to_jsonb($2::text)) ON CONFLICT (key) DO UPDATE SET "
            "value = EXCLUDED.value, updated_at = now()",
            {kPasswordSetting, hash}, [reply, saved, hash](PgResult r) {
              if (!r.ok) return reply(503, {{"error", "database error: " + r.error}});
              spdlog::info("admin web: the admin password was set");
              saved(hash);
              reply(200, {{"password_set", true}});
            });
}

}  // namespace postern::admin
