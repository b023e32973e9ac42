// quarantine_api.h — /api/v1/quarantine on the admin API (bearer token checked by AdminServer),
// and the scanning gate's lines on /metrics.
//   GET    /api/v1/quarantine?rcpt=&sender=&signature=&limit=   entries, newest last
//   GET    /api/v1/quarantine/{id}                             one entry with its header section
//   POST   /api/v1/quarantine/{id}/release                     back into the active queue and to
//                                                              the scheduler; delivered with the
//                                                              X-Postern-Scan header noting it
//   DELETE /api/v1/quarantine/{id}
// The quarantine area on disk (mta/queue/spool.h) is the record; the PostgreSQL table
// `quarantine` is its index, written by QuarantineIndex (pending entries are replayed from the
// disk while the database is down: none is lost).
// Security-sensitive: IDs are checked (letters and digits) before they touch a path; header
// text shown is bounded (64 KiB) and returned as JSON strings (escaped).
#pragma once

#include <uv.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "admin/admin_server.h"
#include "admin/pg_client.h"
#include "mta/queue/scheduler.h"
#include "mta/runtime.h"

namespace postern::admin {

// Keeps PostgreSQL's quarantine table in step with the quarantine area: sync() inserts every entry
// not yet indexed (INSERT ... ON CONFLICT DO NOTHING) and marks deleted or released ones; called
// on the control loop when an entry appears, when the database comes up, and every minute.
// A release or delete the database has not confirmed is also kept in
// <state_dir>/quarantine-index.json (written atomically: temporary file, fsync, rename, fsync of
// the directory), read back at start: a restart while the database is down loses none of them.
class QuarantineIndex {
 public:
  QuarantineIndex(uv_loop_t* loop, mta::Runtime& rt, PgClient& db, std::string node);
  // Every 5 s: when the quarantine directory changed (a stat) or entries are pending, sync().
  void start();
  void stop();
  void sync();
  void state_changed(const std::string& qid, const std::string& state);
  size_t pending() const { return pending_; }

 private:
  static void on_timer(uv_timer_t* t);
  uv_timer_t timer_{};
  bool started_ = false;
  mta::Runtime& rt_;
  PgClient& db_;
  std::string node_;
  std::set<std::string> indexed_;  // entries the database has confirmed
  void load_states();
  void save_states();
  std::string states_path_;
  std::map<std::string, std::string> states_;  // release/delete not yet written (also on disk)
  int64_t seen_mtime_ns_ = -1;
  bool busy_ = false;
  size_t pending_ = 0;
};

// `parts`: the path split at '/', starting with "api", "v1", "quarantine".
void quarantine_api(mta::Runtime& rt, mta::Scheduler& sched, QuarantineIndex* index, const HttpRequest& req, const std::vector<std::string>& parts, Responder respond);

// For the EUQ console (admin/euq_console.h): the ID check, one entry as GET shows it, and
// release/delete with the admin API's effects (the index, the scheduler), logged with `by`.
bool quarantine_id_valid(const std::string& id);
nlohmann::json quarantine_entry(const mta::Runtime& rt, const Envelope& e, bool with_headers);
bool quarantine_release(mta::Runtime& rt, mta::Scheduler& sched, QuarantineIndex* index, const std::string& id,
                        const std::string& by, std::string& err);
bool quarantine_delete(mta::Runtime& rt, QuarantineIndex* index, const std::string& id, const std::string& by,
                       std::string& err);

// The /metrics lines of the scanning gate (postern_scan_*, postern_patterns_*).
std::string scan_metrics(const mta::Runtime& rt);

}  // namespace postern::admin
