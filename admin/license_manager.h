// license_manager.h — posternd's side of licensing, on the control thread: the verified records
// (PostgreSQL table `licenses`, cached in <state_dir>/cache/licenses.json), the Licenses
// snapshot published to mta::Runtime::licenses for the scanning gate, the check schedule (a 1 s
// tick compared against rt.clock, since libuv timers do not follow the test clock), checks and
// activation through http::HttpClient (libcurl multi on the loop: never blocking), manual
// update-status, offline imports and profiles, the notices as alerts and the daily admin mail
// queued through Postern's own spool and scheduler.
//
// Security-sensitive: every record, whether from the license server, a file, a profile, the
// database or the cache, is verified against the pinned key (license.public_key_file) before
// it is stored or used, and its code must be the one asked about; a record older (signed_at)
// than the one in use for the same code is refused (no replay of an old answer). Failing to
// reach the server never changes a state. The guarded clock (licensing::ClockGuard) keeps a
// clock stepped back from extending a license. Server replies are bounded (64 KiB).
#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "admin/local_mail.h"
#include "http/http_client.h"
#include "licensing/license_record.h"
#include "licensing/license_state.h"
#include "licensing/licenses.h"
#include "mta/queue/scheduler.h"
#include "mta/runtime.h"

namespace postern::admin {

class PgClient;

class LicenseManager {
 public:
  struct Hooks {
    std::function<PgClient*()> db;  // null or down: the cache only
    std::function<void(const std::string& code, const std::string& severity, const std::string& text, bool alert)> raise;
    std::function<void(const std::string& code)> resolve_alert;
    std::string node;
  };
  // status: an HTTP status; body: the JSON answer.
  using Reply = std::function<void(int status, nlohmann::json body)>;

  LicenseManager(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched, Hooks hooks);
  ~LicenseManager();
  void start();  // reads the key and the cache, publishes, starts the tick
  void stop();
  void reload_from_database();  // the database is (back) up, or another node changed licenses

  void activate(licensing::LicenseKind k, const std::string& code, Reply reply);
  void update_status(Reply reply);
  // source: "file" (posternctl license import) or "profile" (a central manager's push).
  void import(const std::string& document, const std::string& source, Reply reply);
  void set_hide_optional(bool hide, Reply reply);
  nlohmann::json list() const;
  std::string metrics() const;
  std::shared_ptr<const licensing::Licenses> current() const { return rt_.licenses.load(); }
  void tick();  // public for the timer callback

 private:
  struct Slot {
    licensing::LicenseRecord record;
    int64_t last_check = 0;
    int64_t next_check = 0;
    std::string source;
    std::string last_error;
    uint64_t in_flight = 0;  // HttpClient request id of a scheduled check
  };
  void configure();
  int64_t now();
  std::optional<licensing::LicenseRecord> verify(const std::string& doc, std::string& why) const;
  // Stores a verified record (from `source`); false with why when refused (stale, replaced).
  bool store(const licensing::LicenseRecord& r, const std::string& source, bool may_replace, std::string& why);
  void publish();
  void update_alerts(const licensing::Licenses& l);
  void start_check(licensing::LicenseKind k, std::function<void(int result, std::string why)> done);
  void after_check(Slot& s, bool ok);
  void run_due_checks();
  void send_due_mails();
  void claim_and_queue(licensing::LicenseKind k, const licensing::AdminMail& m, licensing::Day day);
  bool queue_mail(licensing::LicenseKind k, const licensing::AdminMail& m, licensing::Day day);
  void save(licensing::LicenseKind k);
  void save_meta(const std::string& key, const std::string& value);
  void write_cache() const;
  void read_cache();
  void read_cache_file();
  void notify_nodes();
  void status_request(const std::string& path, nlohmann::json body, http::HttpClient::Callback cb);

  uv_loop_t* loop_;
  mta::Runtime& rt_;
  mta::Scheduler& sched_;
  Hooks hooks_;
  std::unique_ptr<http::HttpClient> http_;
  uv_timer_t* timer_ = nullptr;
  licensing::Key key_;
  std::string key_error_;
  std::string key_file_;
  licensing::TimeZone tz_;
  std::shared_ptr<const Config> cfg_;
  licensing::ClockGuard guard_;
  bool clock_back_logged_ = false;
  std::map<licensing::LicenseKind, Slot> slots_;  // by the kind the code was issued for
  bool hide_optional_ = false;
  std::map<licensing::LicenseKind, licensing::Day> mail_day_;  // the last day a mail was queued
  std::array<std::string, licensing::kAllLicenses.size()> alert_text_{};
  licensing::Day published_day_ = INT64_MIN;
  int64_t saved_latest_ = 0;
  std::unique_ptr<LocalMailer> mailer_;  // the admin mail through the spool and the scheduler
  uint64_t mails_queued_ = 0, checks_ok_ = 0, checks_failed_ = 0, records_refused_ = 0;
};

}  // namespace postern::admin
