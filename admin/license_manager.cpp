// license_manager.cpp — see license_manager.h. Security-sensitive: verify() guards every way a
// record comes in; server and profile text reaches logs only through esc().
#include "admin/license_manager.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "admin/local_mail.h"
#include "admin/pg_client.h"
#include "base/log.h"
#include "base/time_format.h"
#include "licensing/activation_code.h"

namespace postern::admin {
namespace lic = licensing;
using nlohmann::json;

namespace {

constexpr const char* kUpdated = "License updated successfully.";
constexpr const char* kNoUpdate = "No update needed.";
constexpr const char* kUnreachable = "Unable to complete the update. Check the Internet connection and try again.";
constexpr int64_t kRetryAfterFailure = 3600;  // a failed scheduled check is tried again hourly
constexpr size_t kMaxAnswer = 64 * 1024;

std::string alert_code(lic::LicenseKind k) {
  std::string c = "LICENSE_";
  for (const char* p = lic::cli_name(k); *p; ++p) c += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
  return c;
}

std::string iso(int64_t t) {
  if (t <= 0) return "";
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string read_text(const std::string& path, size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::string s(max + 1, '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  s.resize(static_cast<size_t>(in.gcount()));
  return s.size() > max ? "" : s;
}

}  // namespace

LicenseManager::LicenseManager(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched, Hooks hooks)
    : loop_(loop), rt_(rt), sched_(sched), hooks_(std::move(hooks)) {}

LicenseManager::~LicenseManager() { stop(); }

int64_t LicenseManager::now() {
  bool back = false;
  int64_t real = rt_.clock->unix_seconds();
  int64_t t = guard_.observe(real, back);
  if (back && real < t - 60 && !clock_back_logged_) {
    clock_back_logged_ = true;
    spdlog::warn("license: the clock went back to {} below the latest time seen {}: licenses are evaluated at the "
                 "latest time seen",
                 iso(real), iso(t));
    if (hooks_.raise)
      hooks_.raise("LICENSE_CLOCK_BACK", "warning",
                   "the clock went back below the latest time seen (" + iso(t) + "): it does not extend a license", false);
  } else if (!back) {
    clock_back_logged_ = false;
  }
  return t;
}

// Config-dependent parts: the pinned key, the time zone, the HTTP client's proxy.
void LicenseManager::configure() {
  cfg_ = rt_.config.load();
  tz_ = lic::TimeZone::parse(cfg_->timezone).value_or(lic::TimeZone{});
  if (cfg_->license.public_key_file != key_file_ || !key_) {
    key_file_ = cfg_->license.public_key_file;
    key_.reset();
    key_error_.clear();
    if (key_file_.empty()) {
      key_error_ = "license.public_key_file is not set: no license record can be verified";
    } else {
      std::string pem = read_text(key_file_, 16 * 1024);
      key_ = lic::public_key_from_pem(pem, key_error_);
      if (!key_) key_error_ = key_file_ + ": " + key_error_;
    }
    if (!key_) spdlog::warn("license: {}", key_error_);
    else spdlog::info("license: pinned key {}", key_file_);
  }
  auto opt = http::HttpClient::options_from(*cfg_);
  if (!cfg_->license.proxy.empty()) opt.proxy = cfg_->license.proxy;
  if (!http_) http_ = std::make_unique<http::HttpClient>(loop_, opt);
  else http_->set_options(opt);
}

void LicenseManager::start() {
  configure();
  read_cache();
  publish();
  mailer_ = std::make_unique<LocalMailer>(loop_, rt_, sched_);
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<LicenseManager*>(t->data)->tick(); }, 1000, 1000);
}

void LicenseManager::stop() {
  if (timer_) {
    uv_timer_stop(timer_);
    timer_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
  http_.reset();
  if (mailer_) mailer_->stop();
}

void LicenseManager::tick() {
  if (rt_.config.load() != cfg_) {
    configure();
    published_day_ = INT64_MIN;
  }
  int64_t t = now();
  if (tz_.day_of(t) != published_day_) publish();
  if (t - saved_latest_ >= 3600) {  // the latest time seen survives a restart (to the hour)
    saved_latest_ = t;
    save_meta("latest_seen", std::to_string(t));
    write_cache();
  }
  run_due_checks();
  send_due_mails();
}

std::optional<lic::LicenseRecord> LicenseManager::verify(const std::string& doc, std::string& why) const {
  if (!key_) {
    why = key_error_;
    return std::nullopt;
  }
  return lic::verify_record(doc, key_.get(), why);
}

bool LicenseManager::store(const lic::LicenseRecord& r, const std::string& source, bool may_replace, std::string& why) {
  auto it = slots_.find(r.kind);
  if (it != slots_.end()) {
    const auto& old = it->second.record;
    if (old.code != r.code && !may_replace) {
      why = "a license profile cannot replace the activation code " + old.code + " by " + r.code +
            "; activate the new code instead";
      return false;
    }
    if (old.code == r.code && r.signed_at < old.signed_at) {
      why = "the record is older than the one in use (signed " + iso(r.signed_at) + ", in use " + iso(old.signed_at) + ")";
      return false;
    }
  }
  Slot& s = slots_[r.kind];
  s.record = r;
  s.source = source;
  s.last_error.clear();
  after_check(s, true);
  save(r.kind);
  write_cache();
  notify_nodes();
  publish();
  return true;
}

// The next check after one that ended now: seed 004's next check day at 00:00; after a failure
// within the hour, but never later than the scheduled day.
void LicenseManager::after_check(Slot& s, bool ok) {
  int64_t t = now();
  lic::Day today = tz_.day_of(t);
  int64_t scheduled = tz_.midnight(lic::next_check_day(s.record.expires, today));
  s.next_check = ok ? scheduled : std::min(scheduled, t + kRetryAfterFailure);
  if (ok) s.last_check = t;
}

void LicenseManager::publish() {
  int64_t t = now();
  std::map<lic::LicenseKind, lic::LicenseRecord> recs;
  for (auto& [k, s] : slots_) recs[k] = s.record;
  auto l = std::make_shared<const lic::Licenses>(lic::evaluate_all(recs, t, tz_, hide_optional_));
  published_day_ = l->today;
  rt_.licenses.publish(l);
  update_alerts(*l);
}

// Each license's notice is an alert while it is true; a changed text (a new day's count)
// resolves the old one and raises the new one.
void LicenseManager::update_alerts(const lic::Licenses& l) {
  for (auto& v : l.items) {
    auto& last = alert_text_[static_cast<size_t>(v.kind) - 1];
    if (v.notice == last) continue;
    std::string code = alert_code(v.kind);
    if (!last.empty() && hooks_.resolve_alert) hooks_.resolve_alert(code);
    last = v.notice;
    if (!v.notice.empty() && hooks_.raise)
      hooks_.raise(code, v.status.state == lic::State::kExpired ? "error" : "warning", v.notice, true);
  }
}

void LicenseManager::status_request(const std::string& path, json body, http::HttpClient::Callback cb) {
  http::HttpClient::Request req;
  req.method = "POST";
  std::string base = cfg_->license.server;
  while (!base.empty() && base.back() == '/') base.pop_back();
  req.url = base + path;
  req.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
  body["node"] = hooks_.node;
  req.body = body.dump();
  req.timeout = std::chrono::seconds(30);
  req.max_response_size = kMaxAnswer;
  http_->start(std::move(req), std::move(cb));
}

// A check of one stored code. done(result): 1 updated (a new expiry), 0 no change, -1 failed
// (unreachable or refused: the state stays as it was).
void LicenseManager::start_check(lic::LicenseKind k, std::function<void(int, std::string)> done) {
  auto it = slots_.find(k);
  if (it == slots_.end()) return done(0, "");
  if (cfg_->license.server.empty()) return done(-1, "no license server configured (license.server)");
  std::string code = it->second.record.code;
  status_request("/v1/status", {{"code", code}}, [this, k, code, done](http::HttpClient::Response r) {
    auto it2 = slots_.find(k);
    if (it2 == slots_.end() || it2->second.record.code != code) return done(0, "");  // replaced meanwhile
    Slot& s = it2->second;
    std::string why = !r.error.empty() ? r.error : r.status != 200 ? "HTTP " + std::to_string(r.status) : "";
    std::optional<lic::LicenseRecord> rec;
    if (why.empty()) {
      rec = verify(r.body, why);
      if (rec && rec->code != code) rec.reset(), why = "the answer is for another code";
      if (!rec) {
        ++records_refused_;
        why = "answer refused: " + why;
        if (hooks_.raise) hooks_.raise("LICENSE_RECORD_REFUSED", "error", "license check for " + code + ": " + why, false);
      }
    }
    if (!rec) {
      ++checks_failed_;
      s.last_error = why;
      after_check(s, false);
      spdlog::warn("license: check code={} failed, state unchanged: {}", code, esc(why));
      return done(-1, why);
    }
    ++checks_ok_;
    lic::Day old = s.record.expires;
    std::string err;
    if (!store(*rec, "server", false, err)) {
      s.last_error = err;
      after_check(s, false);
      spdlog::warn("license: check code={} refused: {}", code, esc(err));
      return done(-1, err);
    }
    bool changed = rec->expires != old;
    spdlog::info("license: check code={} expires={}{}", code, lic::format_date(rec->expires),
                 changed ? " (was " + lic::format_date(old) + ")" : "");
    if (changed && hooks_.raise)
      hooks_.raise("LICENSE_UPDATED", "info",
                   std::string(lic::display_name(k)) + ": expiry " + lic::format_date(old) + " -> " +
                       lic::format_date(rec->expires),
                   false);
    done(changed ? 1 : 0, "");
  });
}

void LicenseManager::run_due_checks() {
  int64_t t = now();
  for (auto& [k, s] : slots_) {
    if (s.in_flight || s.next_check > t) continue;
    s.in_flight = 1;
    spdlog::info("license: scheduled check code={} license={}", s.record.code, lic::cli_name(k));
    start_check(k, [this, kind = k](int, std::string) {
      if (auto it = slots_.find(kind); it != slots_.end()) it->second.in_flight = 0;
    });
  }
}

void LicenseManager::activate(lic::LicenseKind k, const std::string& code, Reply reply) {
  auto parsed = lic::parse_code(code);
  if (!lic::can_activate(k) || !parsed || !lic::code_fits(k, parsed->prefix, parsed->kind))
    return reply(400, {{"error", lic::kCodeRefused}});
  if (!key_) return reply(503, {{"error", key_error_}});
  if (cfg_->license.server.empty())
    return reply(503, {{"error", "no license server configured (license.server): import a license file instead"}});
  std::string c = parsed->text;
  status_request("/v1/activate", {{"code", c}, {"license", lic::cli_name(k)}},
                 [this, k, c, reply](http::HttpClient::Response r) {
    if (!r.error.empty()) return reply(502, {{"error", "cannot reach the license server: " + r.error}});
    if (r.status != 200) {
      auto j = json::parse(r.body, nullptr, false);
      std::string e = !j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_string()
                          ? j["error"].get<std::string>() : "HTTP " + std::to_string(r.status);
      return reply(r.status == 404 || r.status == 409 || r.status == 400 ? 400 : 502,
                   {{"error", e == lic::kCodeRefused ? e : "the license server refused: " + esc(e, 300)}});
    }
    std::string why;
    auto rec = verify(r.body, why);
    if (rec && rec->code != c) rec.reset(), why = "the answer is for another code";
    if (!rec) {
      ++records_refused_;
      if (hooks_.raise) hooks_.raise("LICENSE_RECORD_REFUSED", "error", "activation of " + c + ": " + why, false);
      return reply(502, {{"error", "the license server's answer was refused: " + why}});
    }
    if (!store(*rec, "server", true, why)) return reply(409, {{"error", why}});
    if (hooks_.raise)
      hooks_.raise("LICENSE_ACTIVATED", "info",
                   std::string(lic::display_name(k)) + " activated with " + c + ", expires " +
                       lic::format_date(rec->expires),
                   false);
    reply(200, {{"activated", lic::cli_name(k)}, {"code", c}, {"expires", lic::format_date(rec->expires)},
                {"licenses", list()["licenses"]}});
  });
}

// Manual update: checks every stored code; the seed's three answers.
void LicenseManager::update_status(Reply reply) {
  if (slots_.empty()) return reply(200, {{"message", kNoUpdate}, {"checked", 0}});
  struct Acc {
    size_t left;
    bool updated = false, failed = false;
    std::vector<std::string> errors;
  };
  auto acc = std::make_shared<Acc>(Acc{slots_.size()});
  std::vector<lic::LicenseKind> kinds;
  for (auto& [k, s] : slots_) kinds.push_back(k);
  for (auto k : kinds)
    start_check(k, [acc, reply, k](int result, std::string why) {
      if (result > 0) acc->updated = true;
      if (result < 0) acc->failed = true, acc->errors.push_back(std::string(lic::cli_name(k)) + ": " + why);
      if (--acc->left > 0) return;
      std::string msg = acc->failed ? kUnreachable : acc->updated ? kUpdated : kNoUpdate;
      reply(acc->failed ? 502 : 200, {{"message", msg}, {"error", acc->failed ? json(msg) : json(nullptr)},
                                      {"details", acc->errors}});
    });
}

void LicenseManager::import(const std::string& doc, const std::string& source, Reply reply) {
  std::string why;
  auto rec = verify(doc, why);
  if (!rec) {
    ++records_refused_;
    if (hooks_.raise) hooks_.raise("LICENSE_RECORD_REFUSED", "error", "license " + source + " refused: " + why, false);
    return reply(400, {{"error", "license " + source + " refused: " + why}});
  }
  if (!store(*rec, source, source == "file", why)) return reply(409, {{"error", why}});
  if (hooks_.raise)
    hooks_.raise("LICENSE_IMPORTED", "info",
                 std::string(lic::display_name(rec->kind)) + " license " + rec->code + " from a " + source +
                     ", expires " + lic::format_date(rec->expires),
                 false);
  reply(200, {{"imported", lic::cli_name(rec->kind)}, {"code", rec->code}, {"expires", lic::format_date(rec->expires)}});
}

void LicenseManager::set_hide_optional(bool hide, Reply reply) {
  hide_optional_ = hide;
  save_meta("hide_optional", hide ? "true" : "false");
  write_cache();
  notify_nodes();
  publish();
  reply(200, {{"hide_optional", hide}});
}

json LicenseManager::list() const {
  auto l = current();
  json items = json::array();
  if (!l) return {{"licenses", items}};
  for (auto& v : l->items) {
    lic::LicenseKind from = v.kind == lic::LicenseKind::kReputation ? lic::LicenseKind::kAntispam : v.kind;
    auto it = slots_.find(from);
    bool on = v.record.has_value();
    json j{{"license", lic::cli_name(v.kind)},
           {"name", lic::display_name(v.kind)},
           {"state", lic::state_name(v.status.state)},
           {"optional", lic::is_optional(v.kind)},
           {"can_activate", lic::can_activate(v.kind)},
           {"code", on ? json(v.record->code) : json(nullptr)},
           {"expires", on ? json(lic::format_date(v.status.expires)) : json(nullptr)},
           {"grace_end", on ? json(lic::format_date(v.status.grace_end)) : json(nullptr)},
           {"days_left", on ? json(v.status.days_left) : json(nullptr)},
           {"grace_days_left", on ? json(std::max<int64_t>(0, v.status.grace_left)) : json(nullptr)},
           {"notice", v.notice.empty() ? json(nullptr) : json(v.notice)}};
    bool have = on && it != slots_.end();
    j["last_check"] = have && it->second.last_check ? json(iso(it->second.last_check)) : json(nullptr);
    j["next_check"] = have ? json(iso(it->second.next_check)) : json(nullptr);
    j["source"] = have ? json(it->second.source) : json(nullptr);
    j["last_error"] = have && !it->second.last_error.empty() ? json(it->second.last_error) : json(nullptr);
    items.push_back(j);
  }
  return {{"licenses", items},          {"today", lic::format_date(l->today)}, {"timezone", l->tz.name},
          {"hide_optional", hide_optional_}, {"server", cfg_ ? cfg_->license.server : ""},
          {"key", key_ ? json(key_file_) : json(nullptr)}};
}

std::string LicenseManager::metrics() const {
  auto l = current();
  if (!l) return "";
  std::ostringstream o;
  o << "# HELP postern_license_state 1 for the state each license is in.\n# TYPE postern_license_state gauge\n";
  for (auto& v : l->items)
    for (auto st : {lic::State::kNotActivated, lic::State::kActive, lic::State::kExpiring, lic::State::kGrace,
                    lic::State::kExpired})
      o << "postern_license_state{license=\"" << lic::cli_name(v.kind) << "\",state=\"" << lic::state_name(st)
        << "\"} " << (v.status.state == st ? 1 : 0) << "\n";
  o << "# HELP postern_license_days_to_expiry Days until the expiry date D (negative after it).\n"
       "# TYPE postern_license_days_to_expiry gauge\n";
  for (auto& v : l->items)
    if (v.record) o << "postern_license_days_to_expiry{license=\"" << lic::cli_name(v.kind) << "\"} " << v.status.days_left << "\n";
  o << "# HELP postern_license_days_to_grace_end Days until the grace period ends (D+90).\n"
       "# TYPE postern_license_days_to_grace_end gauge\n";
  for (auto& v : l->items)
    if (v.record) o << "postern_license_days_to_grace_end{license=\"" << lic::cli_name(v.kind) << "\"} " << v.status.grace_left << "\n";
  o << "# HELP postern_license_checks_total License server checks by result.\n# TYPE postern_license_checks_total counter\n"
    << "postern_license_checks_total{result=\"ok\"} " << checks_ok_ << "\n"
    << "postern_license_checks_total{result=\"failed\"} " << checks_failed_ << "\n"
    << "# HELP postern_license_records_refused_total License records refused (bad signature, other key, stale).\n"
       "# TYPE postern_license_records_refused_total counter\npostern_license_records_refused_total "
    << records_refused_ << "\n"
    << "# HELP postern_license_mails_total Daily license mails queued.\n# TYPE postern_license_mails_total counter\n"
       "postern_license_mails_total "
    << mails_queued_ << "\n";
  return o.str();
}

// --- the daily admin mail ---------------------------------------------------------------------

void LicenseManager::send_due_mails() {
  if (!cfg_ || cfg_->license.admin_email.empty() || !rt_.spool) return;
  auto l = current();
  if (!l) return;
  for (auto& v : l->items) {
    auto m = lic::daily_mail(v.kind, v.status);
    if (!m) continue;
    auto it = mail_day_.find(v.kind);
    if (it != mail_day_.end() && it->second >= l->today) continue;
    mail_day_[v.kind] = l->today;  // one a day, whatever the clock does; undone if the commit fails
    claim_and_queue(v.kind, *m, l->today);
  }
}

// Nodes sharing a database send each day's mail once: the node whose claim row goes in sends
// it. Without the database (down, or the query fails) this node sends it itself.
void LicenseManager::claim_and_queue(lic::LicenseKind k, const lic::AdminMail& m, lic::Day day) {
  PgClient* db = hooks_.db ? hooks_.db() : nullptr;
  auto send = [this, k, m, day] {
    if (!queue_mail(k, m, day) && mail_day_[k] == day) mail_day_.erase(k);
  };
  if (!db || !db->up()) return send();
  // The same node may claim again (its first try could not be committed to the spool).
  db->query("INSERT INTO license_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET updated_at = now() "
            "WHERE license_meta.value = EXCLUDED.value RETURNING key",
            {std::string("mail.") + lic::cli_name(k) + "." + lic::format_date(day), hooks_.node},
            [this, k, day, send](PgResult r) {
    if (!r.ok || !r.rows.empty()) return send();
    spdlog::info("license: the {} mail of {} is sent by another node", lic::cli_name(k), lic::format_date(day));
  });
}

// Through admin/local_mail (the spool, then the scheduler once committed). A failed write or
// commit forgets the day, so the next tick writes it again.
bool LicenseManager::queue_mail(lic::LicenseKind k, const lic::AdminMail& m, lic::Day day) {
  if (!mailer_) return false;
  LocalMail lm;
  lm.to = cfg_->license.admin_email;
  lm.subject = m.subject;
  lm.body = m.body;
  lm.tag = "license";
  lm.headers = {{"X-Postern-License", std::string(lic::cli_name(k)) + " " + lic::format_date(day)}};
  std::string qid;
  bool written = mailer_->send(lm, [this, k, day](bool ok, const std::string& q) {
    if (!ok) {
      spdlog::error("queue_id={} license mail could not be committed; written again", q);
      if (mail_day_[k] == day) mail_day_.erase(k);
      return;
    }
    ++mails_queued_;
    save_meta(std::string("mail_day.") + lic::cli_name(k), std::to_string(day));
    write_cache();
  }, &qid);
  if (!written) {
    spdlog::error("license: cannot write the license mail for {} to the spool; tried again in a second", lic::cli_name(k));
    return false;
  }
  spdlog::info("queue_id={} license mail license={} day={} to=<{}> subject={}", qid, lic::cli_name(k),
               lic::format_date(day), esc(cfg_->license.admin_email), esc(m.subject));
  return true;
}

// --- persistence: PostgreSQL and the local cache ------------------------------------------------

void LicenseManager::save(lic::LicenseKind k) {
  PgClient* db = hooks_.db ? hooks_.db() : nullptr;
  auto it = slots_.find(k);
  if (!db || !db->up() || it == slots_.end()) return;
  const Slot& s = it->second;
  auto st = lic::evaluate(s.record.expires, tz_.day_of(guard_.latest()));
  db->query(
      "INSERT INTO licenses (product, activation_code, expires_on, state, last_check, next_check, record, source, "
      "updated_at) VALUES ($1, $2, $3::date, $4, to_timestamp(NULLIF($5::bigint, 0)), to_timestamp($6::bigint), $7, $8, "
      "now()) ON CONFLICT (product) DO UPDATE SET activation_code = EXCLUDED.activation_code, expires_on = "
      "EXCLUDED.expires_on, state = EXCLUDED.state, last_check = EXCLUDED.last_check, next_check = "
      "EXCLUDED.next_check, record = EXCLUDED.record, source = EXCLUDED.source, updated_at = now()",
      {lic::cli_name(k), s.record.code, lic::format_date(s.record.expires), lic::state_name(st.state),
       std::to_string(s.last_check), std::to_string(s.next_check), s.record.document, s.source},
      [k](PgResult r) {
        if (!r.ok) spdlog::warn("license: cannot store the {} record in the database: {}", lic::cli_name(k), r.error);
      });
}

void LicenseManager::save_meta(const std::string& key, const std::string& value) {
  PgClient* db = hooks_.db ? hooks_.db() : nullptr;
  if (!db || !db->up()) return;
  db->query("INSERT INTO license_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = "
            "EXCLUDED.value, updated_at = now()",
            {key, value}, [](PgResult) {});
}

void LicenseManager::notify_nodes() {
  PgClient* db = hooks_.db ? hooks_.db() : nullptr;
  if (!db || !db->up()) return;
  db->query("SELECT pg_notify('postern', json_build_object('node', $1::text, 'kind', 'licenses')::text)", {hooks_.node},
            [](PgResult) {});
}

// The database's records and settings, merged with what this node has: per license the record
// signed last wins; what this node has that is newer is written back.
void LicenseManager::reload_from_database() {
  PgClient* db = hooks_.db ? hooks_.db() : nullptr;
  if (!db || !db->up()) return;
  db->query("SELECT product, coalesce(record, ''), coalesce(extract(epoch FROM last_check)::bigint, 0), "
            "coalesce(extract(epoch FROM next_check)::bigint, 0), coalesce(source, '') FROM licenses",
            {}, [this](PgResult r) {
    if (!r.ok) return;
    std::set<lic::LicenseKind> seen;
    for (auto& row : r.rows) {
      if (row[1].empty()) continue;
      std::string why;
      auto rec = verify(row[1], why);
      if (!rec || row[0] != lic::cli_name(rec->kind)) {
        ++records_refused_;
        spdlog::error("license: the database's record for {} is refused: {}", esc(row[0]),
                      rec ? "it is not for that license" : why);
        continue;
      }
      seen.insert(rec->kind);
      auto it = slots_.find(rec->kind);
      if (it != slots_.end() && it->second.record.signed_at >= rec->signed_at) {
        if (it->second.record.signed_at > rec->signed_at) save(rec->kind);
        continue;
      }
      Slot& s = slots_[rec->kind];
      s.record = *rec;
      s.last_check = std::atoll(row[2].c_str());
      s.next_check = std::atoll(row[3].c_str());
      s.source = row[4];
    }
    for (auto& [k, s] : slots_)
      if (!seen.count(k)) save(k);  // activated while the database was away
    write_cache();
    publish();
  });
  db->query("SELECT key, value FROM license_meta", {}, [this](PgResult r) {
    if (!r.ok) return;
    for (auto& row : r.rows) {
      if (row[0] == "hide_optional") hide_optional_ = row[1] == "true";
      else if (row[0] == "latest_seen") guard_ = lic::ClockGuard(std::max<int64_t>(guard_.latest(), std::atoll(row[1].c_str())));
      else if (auto k = row[0].rfind("mail_day.", 0) == 0 ? lic::kind_from_cli(row[0].substr(9)) : std::nullopt)
        mail_day_[*k] = std::max<int64_t>(mail_day_.count(*k) ? mail_day_[*k] : INT64_MIN, std::atoll(row[1].c_str()));
    }
    publish();
  });
}

void LicenseManager::write_cache() const {
  if (!cfg_) return;
  json recs = json::array();
  for (auto& [k, s] : slots_)
    recs.push_back({{"document", s.record.document}, {"last_check", s.last_check}, {"next_check", s.next_check},
                    {"source", s.source}});
  json mail = json::object();
  for (auto& [k, d] : mail_day_) mail[lic::cli_name(k)] = d;
  std::string text = json{{"records", recs}, {"hide_optional", hide_optional_}, {"latest_seen", guard_.latest()},
                          {"mail_day", mail}}.dump() + "\n";
  std::string dir = cfg_->state_dir + "/cache", path = dir + "/licenses.json", tmp = path + ".tmp";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) spdlog::warn("license: cannot write {}", path);
}

// The cache is verified like everything else: a hand-edited file extends nothing, and a broken
// one is ignored (logged), never fatal.
void LicenseManager::read_cache() {
  try {
    read_cache_file();
  } catch (const json::exception& e) {
    spdlog::error("license: {}/cache/licenses.json is malformed and ignored: {}", cfg_->state_dir, e.what());
  }
}

void LicenseManager::read_cache_file() {
  std::string text = read_text(cfg_->state_dir + "/cache/licenses.json", 1 << 20);
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  if (j.contains("records") && j["records"].is_array())
    for (auto& e : j["records"]) {
      if (!e.is_object() || !e.contains("document") || !e["document"].is_string()) continue;
      std::string why;
      auto rec = verify(e["document"].get<std::string>(), why);
      if (!rec) {
        ++records_refused_;
        spdlog::error("license: a cached record is refused: {}", why);
        continue;
      }
      Slot& s = slots_[rec->kind];
      s.record = *rec;
      s.last_check = e.value("last_check", int64_t{0});
      s.next_check = e.value("next_check", int64_t{0});
      s.source = e.value("source", "cache");
    }
  hide_optional_ = j.value("hide_optional", false);
  guard_ = lic::ClockGuard(j.value("latest_seen", int64_t{0}));
  if (j.contains("mail_day") && j["mail_day"].is_object())
    for (auto& [name, d] : j["mail_day"].items())
      if (auto k = lic::kind_from_cli(name); k && d.is_number_integer()) mail_day_[*k] = d.get<int64_t>();
}

}  // namespace postern::admin
