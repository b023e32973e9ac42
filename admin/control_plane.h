// control_plane.h — the top of the house, on the control thread: PostgreSQL (embedded or given
// by URL), events and alerts, the snapshot of admin-managed state (cached on disk so posternd
// starts and relays while the database is down), LISTEN/NOTIFY between nodes, and the admin
// HTTPS API with /metrics.
#pragma once

#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "admin/admin_server.h"
#include "admin/cert_expiry.h"
#include "admin/dashboard_api.h"
#include "admin/euq_console.h"
#include "admin/euq_server.h"
#include "admin/license_manager.h"
#include "admin/pattern_manager.h"
#include "admin/pg_client.h"
#include "admin/pg_embedded.h"
#include "admin/quarantine_api.h"
#include "admin/web_auth.h"
#include "base/snapshot.h"
#include "mta/queue/scheduler.h"
#include "mta/runtime.h"
#include "tls/cert_watch.h"

namespace postern::admin {

class CertStore;

// Admin-managed state the data path reads (grows with certificates, licenses and patterns).
struct ControlState {
  std::map<std::string, std::string> settings;  // key -> JSON text
  std::string source = "empty";                 // "database", "cache" or "empty"
  int64_t loaded_at = 0;
};

class ControlPlane {
 public:
  struct Hooks {
    std::function<std::string(const std::string& why)> reload;  // returns "" or the failures
  };
  ControlPlane(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched, Hooks hooks);
  ~ControlPlane();
  // Start-up (blocking where it must be: initdb). Throws std::runtime_error.
  void start();
  // Begins the shutdown: closes the API, the database connection and the private cluster.
  void stop();

  // Events: logged at once, stored in the database (buffered while it is down), NOTIFYed.
  void raise(const std::string& code, const std::string& severity, const std::string& text,
             const std::string& queue_id = "", bool alert = false);
  void resolve_alert(const std::string& code);
  // Every reload trigger (SIGHUP, the API, another node) comes through here: applies it through
  // Hooks::reload and records RELOAD_APPLIED / RELOAD_FAILED. Returns "" or what was refused.
  std::string reload(const std::string& by);
  // New session-ticket keys, the old ones dropped (an admin's "a key was replaced for cause"),
  // recorded as TLS_TICKETS_FLUSHED. Returns "" or the error.
  std::string flush_tickets(const std::string& by);
  const std::string& node() const { return node_; }
  std::shared_ptr<const ControlState> state() const { return state_.load(); }
  bool database_up() const { return db_ && db_->up(); }
  LicenseManager* licenses() { return licenses_.get(); }  // the Licenses snapshot is rt.licenses
  CertStore* certs() { return certs_.get(); }
  PatternManager* patterns() { return patterns_.get(); }  // pattern bundles (admin/pattern_manager.h)  // the certificate store (admin/cert_api.h); null before start()

 private:
  void handle(const HttpRequest& req, Responder respond);
  void notify_nodes(const std::string& kind);  // NOTIFY the other nodes (when the database is up)
  HttpResponse queue_page(const HttpRequest& req);
  static constexpr size_t kQueuePageDefault = 100;
  static constexpr size_t kQueuePageMax = 1000;
  void on_db_state(bool up);
  void on_notify(const std::string& channel, const std::string& payload);
  void load_state();
  void write_cache(const ControlState& s);
  void read_cache();
  void flush_buffered_events();
  void save_buffered();
  bool write_cache_file(const std::string& name, const std::string& text) const;
  void load_buffered();
  std::string buffered_path() const;
  static constexpr size_t kMaxBuffered = 1000;
  void insert_event(const std::string& json, bool replay = false);
  std::string metrics() const;
  std::string admin_password_hash() const;  // from the settings snapshot ("" = none set)
  void password_saved(const std::string& hash);

  uv_loop_t* loop_;
  mta::Runtime& rt_;
  mta::Scheduler& sched_;
  Hooks hooks_;
  std::string node_;
  std::string state_dir_;
  std::unique_ptr<EmbeddedPostgres> embedded_;
  std::unique_ptr<PgClient> db_;
  std::unique_ptr<WebAuth> web_auth_;  // the dashboard's login and sessions (before api_: it uses it)
  std::unique_ptr<AdminServer> api_;
  std::unique_ptr<ThroughputSampler> throughput_;  // GET /api/v1/stats/throughput
  std::unique_ptr<EuqServer> euq_;  // null when [euq] listen is ""
  std::unique_ptr<EuqConsole> euq_console_;  // the console behind it (null with it)
  std::unique_ptr<tls::CertWatch> watch_;  // the config's certificate files
  std::unique_ptr<CertExpiry> expiry_;
  std::unique_ptr<LicenseManager> licenses_;
  std::unique_ptr<CertStore> certs_;
  std::unique_ptr<PatternManager> patterns_;
  std::unique_ptr<QuarantineIndex> quarantine_;  // the quarantine table, kept in step with the spool
  Snapshot<ControlState> state_;
  std::deque<std::string> buffered_;  // events (JSON) waiting for the database
  size_t replaying_ = 0;              // buffered events sent to the database, not yet answered
  uint64_t events_raised_ = 0;
  bool outage_open_ = false;  // DATABASE_UNAVAILABLE raised and not yet followed by AVAILABLE
};

// Creates <state_dir>/admin.token (0600, 256 random bits) at first start; returns the token.
std::string ensure_token(const std::string& state_dir);

}  // namespace postern::admin
