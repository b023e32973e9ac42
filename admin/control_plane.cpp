// control_plane.cpp — see control_plane.h. Security-sensitive: the admin token (0600, compared
// in constant time by AdminServer) and the API's queue actions.
#include "admin/control_plane.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "admin/license_api.h"
#include "admin/cert_api.h"
#include "admin/pattern_api.h"
#include "base/log.h"
#include "http/static_files.h"

namespace postern::admin {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kChannel = "postern";

HttpResponse ok_json(const json& j) { return {200, "application/json", j.dump()}; }
HttpResponse err(int status, const std::string& msg) { return {status, "application/json", json_error(msg)}; }

json rcpt_json(const Recipient& r) {
  const char* st = r.state == RcptState::kDelivered ? "delivered" : r.state == RcptState::kFailed ? "failed" : "pending";
  return {{"address", r.address}, {"state", st}, {"status", r.status}, {"diag", r.diag}, {"remote", r.remote}};
}

json queue_json(const mta::QueueInfo& q) {
  json rs = json::array();
  for (auto& r : q.rcpts) rs.push_back(rcpt_json(r));
  return {{"queue_id", q.qid}, {"from", q.from},           {"received_at", q.received_at},
          {"size", q.size},    {"attempts", q.attempts},   {"next_attempt", q.next_attempt},
          {"held", q.held},    {"in_flight", q.in_flight}, {"recipients", rs}};
}

json role_json(const tls::ContextProvider& p) {
  auto cur = p.current();
  std::string last_error = p.last_error();
  json j{{"role", tls::role_name(p.role())}, {"reloads", p.reloads()}, {"reload_failures", p.reload_failures()},
         {"last_error", last_error.empty() ? json(nullptr) : json(last_error)}};
  if (!cur) {
    j["certificate"] = nullptr;
    return j;
  }
  json certs = json::array();
  for (auto& c : cur->certs)
    certs.push_back({{"file", c.source}, {"key_type", c.key_type}, {"subject", c.subject},
                     {"fingerprint", c.fingerprint_sha256}, {"not_before", c.not_before}, {"not_after", c.not_after},
                     {"chain_length", c.chain_length}});
  std::string cert = cur->cert_file.find('/') == std::string::npos ? cur->cert_file : fs::path(cur->cert_file).stem().string();
  j.update({{"certificate", cert}, {"file", cur->cert_file},
            {"subject", cur->subject}, {"fingerprint", cur->fingerprint_sha256}, {"not_after", cur->not_after},
            {"generation", cur->generation}, {"certificates", certs}, {"origin", cur->origin}});
  json sni = json::array();
  for (auto& [name, set] : cur->sni) sni.push_back({{"name", name}, {"fingerprint", set->fingerprint_sha256}});
  j["sni"] = sni;
  return j;
}

// Queue IDs are the spool's base-31 names; anything else (empty, '/', '?', '..') is refused
// before it reaches a lookup or a file name.
bool valid_queue_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 &&
         std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isalnum(c) != 0; });
}

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> parts;
  std::stringstream ss(p);
  std::string s;
  while (std::getline(ss, s, '/'))
    if (!s.empty()) parts.push_back(s);
  return parts;
}

}  // namespace

std::string ensure_token(const std::string& state_dir) {
  std::string path = state_dir + "/admin.token";
  std::ifstream in(path);
  std::string tok;
  if (in >> tok && tok.size() >= 32) return tok;
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("cannot generate the admin token");
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : raw) {
    tok.push_back(hex[c >> 4]);
    tok.push_back(hex[c & 15]);
  }
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, (tok + "\n").data(), tok.size() + 1) != static_cast<ssize_t>(tok.size() + 1) ||
      ::fsync(fd) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot write " + path);
  spdlog::info("admin api: token created in {}", path);
  return tok;
}

ControlPlane::ControlPlane(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched, Hooks hooks)
    : loop_(loop), rt_(rt), sched_(sched), hooks_(std::move(hooks)) {}

ControlPlane::~ControlPlane() = default;

void ControlPlane::start() {
  auto cfg = rt_.config.load();
  state_dir_ = cfg->state_dir;
  node_ = cfg->node_name;
  read_cache();
  load_buffered();
  std::string conninfo = cfg->database_url;
  if (conninfo.empty()) {
    embedded_ = std::make_unique<EmbeddedPostgres>(loop_, cfg->state_dir);
    if (auto e = embedded_->prepare(); !e.empty()) throw std::runtime_error("private PostgreSQL: " + e);
    embedded_->start();
    conninfo = embedded_->conninfo();
  }
  db_ = std::make_unique<PgClient>(loop_, conninfo, std::vector<std::string>{kChannel});
  db_->on_state = [this](bool up) { on_db_state(up); };
  db_->on_notify = [this](const std::string& c, const std::string& p) { on_notify(c, p); };
  certs_ = std::make_unique<CertStore>(loop_, rt_, *db_, node_, state_dir_,
                                       [this](const std::string& c, const std::string& s, const std::string& t, bool a) {
                                         raise(c, s, t, "", a);
                                       });
  certs_->start();
  quarantine_ = std::make_unique<QuarantineIndex>(loop_, rt_, *db_, node_);
  quarantine_->start();
  db_->start();

  licenses_ = std::make_unique<LicenseManager>(loop_, rt_, sched_, LicenseManager::Hooks{
      [this] { return db_.get(); },
      [this](const std::string& c, const std::string& sev, const std::string& t, bool alert) { raise(c, sev, t, "", alert); },
      [this](const std::string& c) { resolve_alert(c); }, node_});
  licenses_->start();
  patterns_ = std::make_unique<PatternManager>(loop_, rt_, PatternManager::Hooks{
      [this](const std::string& c, const std::string& sev, const std::string& t, bool alert) { raise(c, sev, t, "", alert); },
      [this](const std::string& c) { resolve_alert(c); },
      [this](scan::PatternSet s, PatternManager::EngineDone d) {
        if (!rt_.engines) return d(false, "no scanning engine in this process");
        rt_.engines->install(std::move(s), std::move(d));
      }});
  patterns_->start();

  std::string token = ensure_token(cfg->state_dir);
  web_auth_ = std::make_unique<WebAuth>(*rt_.clock, token, [this] { return admin_password_hash(); },
                                        [this](const std::string& c, const std::string& sev, const std::string& t) {
                                          raise(c, sev, t);
                                        });
  web_auth_->configure(cfg->admin_web);
  std::string web_root = cfg->admin_web.web_root.empty() ? http::default_web_root("admin") : cfg->admin_web.web_root;
  api_ = std::make_unique<AdminServer>(loop_, rt_.tls.role(tls::Role::kAdminConsole), *web_auth_, web_root,
                                       [this](const HttpRequest& r, Responder resp) { handle(r, std::move(resp)); }, cfg->admin);
  throughput_ = std::make_unique<ThroughputSampler>(loop_, rt_);
  throughput_->start();
  ListenAddr a;
  parse_listen(cfg->admin_listen, a);
  api_->listen(a.host, a.port);
  spdlog::info("admin api: https://{}:{}/api/v1/ node={} database={}", a.host, a.port, node_,
               cfg->database_url.empty() ? "private cluster" : "configured URL");
  watch_ = std::make_unique<tls::CertWatch>(loop_, [this](const std::string& path) { reload("file change: " + path); });
  if (auto e = watch_->watch(tls::watched_files(*cfg)); !e.empty()) spdlog::warn("cert watch: off: {}", e);
  expiry_ = std::make_unique<CertExpiry>(rt_.tls, *rt_.clock, CertExpiry::Sink{
      [this](const std::string& c, const std::string& sev, const std::string& t, bool al) { raise(c, sev, t, "", al); },
      [this](const std::string& c) { resolve_alert(c); }});
  expiry_->start(loop_);
  if (!cfg->euq_listen.empty()) {
    euq_console_ = std::make_unique<EuqConsole>(loop_, rt_, sched_, *db_, quarantine_.get(), node_, EuqConsole::Hooks{
        [this](const std::string& c, const std::string& sev, const std::string& t, const std::string& q) { raise(c, sev, t, q); },
        [this] {
          return json{{"status", "ok"}, {"service", "euq"}, {"node", node_}, {"database", database_up() ? "up" : "down"}}.dump();
        }});
    euq_console_->start();
    if (db_->up()) euq_console_->database_up();
  }
  euq_ = start_euq_server(loop_, rt_.tls.role(tls::Role::kEuqConsole), *cfg,
                          [this](const http::Request& r, http::Responder resp) { euq_console_->handle(r, std::move(resp)); });
  raise("NODE_STARTED", "info", std::string("posternd ") + POSTERN_VERSION + " started with " +
                                    std::to_string(sched_.size()) + " queued messages");
}

void ControlPlane::stop() {
  if (api_) api_->close();
  if (throughput_) throughput_->close();
  if (euq_) euq_->close();
  if (euq_console_) euq_console_->stop();
  if (watch_) watch_->close();
  if (expiry_) expiry_->close();
  if (licenses_) licenses_->stop();
  if (patterns_) patterns_->stop();
  if (quarantine_) quarantine_->stop();
  if (db_) db_->stop();
  if (embedded_) embedded_->stop();
}

// --- events ---------------------------------------------------------------------------------

void ControlPlane::raise(const std::string& code, const std::string& severity, const std::string& text,
                         const std::string& queue_id, bool alert) {
  ++events_raised_;
  auto lvl = severity == "info" ? spdlog::level::info : severity == "warning" ? spdlog::level::warn
                                                                                : spdlog::level::err;
  spdlog::log(lvl, "event code={} severity={}{}{} {}", code, severity, queue_id.empty() ? "" : " queue_id=",
              queue_id, esc(text, 2000));
  json e{{"node", node_}, {"code", code}, {"severity", severity}, {"text", text}, {"queue_id", queue_id},
         {"alert", alert}, {"at", static_cast<int64_t>(std::time(nullptr))}};
  if (!database_up()) {
    if (buffered_.size() >= kMaxBuffered) buffered_.pop_front();
    buffered_.push_back(e.dump());
    save_buffered();
    return;
  }
  insert_event(e.dump());
}

// Events waiting for the database survive a restart: state_dir/cache/events.pending, one JSON
// document per line, rewritten whenever the waiting list changes (rare: only while the
// database is down).
constexpr const char* kPendingEventsFile = "events.pending";

std::string ControlPlane::buffered_path() const { return state_dir_ + "/cache/" + kPendingEventsFile; }

void ControlPlane::save_buffered() {
  if (replaying_ > 0) return;  // the file still holds what is being replayed; saved once all answer
  if (buffered_.empty()) {
    std::error_code ec;
    fs::remove(buffered_path(), ec);
    return;
  }
  std::string text;
  for (auto& e : buffered_) text += e + "\n";
  if (!write_cache_file(kPendingEventsFile, text))
    spdlog::warn("control plane: cannot save the events waiting for the database in {}", buffered_path());
}

// state_dir/cache/<name>, replaced atomically (written beside it, then renamed).
bool ControlPlane::write_cache_file(const std::string& name, const std::string& text) const {
  std::string dir = state_dir_ + "/cache", path = dir + "/" + name, tmp = path + ".tmp";
  std::error_code ec;
  fs::create_directories(dir, ec);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) return false;
  }
  // 0600: control.json holds the admin password's hash.
  fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write, ec);
  fs::rename(tmp, path, ec);
  return !ec;
}

void ControlPlane::load_buffered() {
  std::ifstream in(buffered_path());
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("code")) continue;  // a torn last line
    if (buffered_.size() >= kMaxBuffered) buffered_.pop_front();
    buffered_.push_back(line);
    ++n;
  }
  if (n) spdlog::info("control plane: {} events from before the restart wait for the database", n);
}

void ControlPlane::insert_event(const std::string& ej, bool replay) {
  auto done = [this, ej, replay](PgResult r) {
    if (replay) --replaying_;
    if (!r.ok && buffered_.size() < kMaxBuffered) buffered_.push_back(ej);  // for when the database is back
    if (!r.ok || replay) save_buffered();
  };
  if (auto j = json::parse(ej, nullptr, false); j.is_object() && j.contains("resolve") && j["resolve"].is_string())
    return db_->query("UPDATE events SET resolved_at = to_timestamp($2::bigint) WHERE code = $1 AND alert AND "
                      "resolved_at IS NULL",
                      {j["resolve"].get<std::string>(), std::to_string(j.value("at", int64_t{0}))}, done);
  db_->query(
      "WITH e AS (INSERT INTO events (at, node, code, severity, text, queue_id, alert) "
      "SELECT to_timestamp((j->>'at')::bigint), j->>'node', j->>'code', j->>'severity', j->>'text', "
      "NULLIF(j->>'queue_id', ''), (j->>'alert')::boolean FROM (SELECT $1::jsonb AS j) s RETURNING id, code) "
      "SELECT pg_notify('postern', json_build_object('node', $2::text, 'kind', 'event', 'id', e.id, "
      "'code', e.code)::text) FROM e",
      {ej, node_}, done);
}

std::string ControlPlane::reload(const std::string& by) {
  std::string failures = hooks_.reload ? hooks_.reload(by) : "";
  if (watch_) watch_->watch(tls::watched_files(*rt_.config.load()));  // the config may name other files now
  if (web_auth_) web_auth_->configure(rt_.config.load()->admin_web);
  raise(failures.empty() ? "RELOAD_APPLIED" : "RELOAD_FAILED", failures.empty() ? "info" : "error",
        "reload requested by " + by + (failures.empty() ? " applied" : " failed: " + failures));
  return failures;
}

std::string ControlPlane::flush_tickets(const std::string& by) {
  std::string err = rt_.tls.flush_tickets(std::chrono::system_clock::now());
  if (!err.empty()) {
    raise("TLS_TICKETS_FLUSH_FAILED", "error", "session-ticket flush requested by " + by + " failed: " + err);
    return err;
  }
  raise("TLS_TICKETS_FLUSHED", "warning",
        "session-ticket keys flushed (requested by " + by + "): every TLS session from before needs a full handshake");
  return "";
}

// While the database is down a resolve waits in the same list as the events, in order, so an
// alert raised before it (before a restart, say) is resolved when the database is back and one
// raised after it stays open.
void ControlPlane::resolve_alert(const std::string& code) {
  json r{{"resolve", code}, {"node", node_}, {"at", static_cast<int64_t>(std::time(nullptr))}};
  if (!database_up()) {
    if (buffered_.size() >= kMaxBuffered) buffered_.pop_front();
    buffered_.push_back(r.dump());
    save_buffered();
    return;
  }
  insert_event(r.dump());
}

void ControlPlane::flush_buffered_events() {
  std::deque<std::string> b;
  b.swap(buffered_);
  // The file keeps them until every insert has answered; one that fails comes back to buffered_.
  for (auto& e : b) {
    ++replaying_;
    insert_event(e, true);
  }
}

void ControlPlane::on_db_state(bool up) {
  if (up) {
    flush_buffered_events();
    resolve_alert("DATABASE_UNAVAILABLE");
    if (outage_open_) raise("DATABASE_AVAILABLE", "info", "the database is reachable again");
    outage_open_ = false;
    load_state();
    certs_->on_db_up();
    if (licenses_) licenses_->reload_from_database();
    if (quarantine_) quarantine_->sync();  // entries quarantined while it was down
    if (euq_console_) euq_console_->database_up();
  } else {
    outage_open_ = true;
    raise("DATABASE_UNAVAILABLE", "error",
          "the database is unreachable: " + db_->last_error() + "; mail flows on the cached state", "", true);
  }
}

void ControlPlane::on_notify(const std::string& channel, const std::string& payload) {
  auto j = json::parse(payload, nullptr, false);
  if (j.is_discarded() || channel != kChannel) return;
  std::string from = j.value("node", "");
  if (from == node_) return;
  std::string kind = j.value("kind", "");
  if (kind == "reload") {
    spdlog::info("notify: reload requested by node {}", esc(from));
    reload("node " + from);
  } else if (kind == "flush-tickets") {
    spdlog::info("notify: session-ticket flush requested by node {}", esc(from));
    flush_tickets("node " + from);
  } else if (kind == "event") {
    spdlog::info("notify: event from node {} code={} id={}", esc(from), esc(j.value("code", "")), j.value("id", 0));
  } else if (kind == "settings") {
    load_state();
  } else if (kind == "certs") {
    certs_->on_notify();
  } else if (kind == "licenses" && licenses_) {
    licenses_->reload_from_database();
  }
}

// --- state snapshot and its cache ---------------------------------------------------------------

void ControlPlane::load_state() {
  db_->query("SELECT key, value::text FROM settings ORDER BY key", {}, [this](PgResult r) {
    if (!r.ok) return;
    auto s = std::make_shared<ControlState>();
    for (auto& row : r.rows) s->settings[row[0]] = row[1];
    s->source = "database";
    s->loaded_at = static_cast<int64_t>(std::time(nullptr));
    write_cache(*s);
    state_.publish(std::move(s));
  });
}

void ControlPlane::write_cache(const ControlState& s) {
  json j{{"settings", s.settings}, {"loaded_at", s.loaded_at}};
  write_cache_file("control.json", j.dump() + "\n");
}

void ControlPlane::read_cache() {
  std::ifstream in(state_dir_ + "/cache/control.json");
  auto s = std::make_shared<ControlState>();
  if (in) {
    auto j = json::parse(in, nullptr, false);
    if (!j.is_discarded() && j.contains("settings")) {
      s->settings = j["settings"].get<std::map<std::string, std::string>>();
      s->loaded_at = j.value("loaded_at", int64_t{0});
      s->source = "cache";
    }
  }
  state_.publish(std::move(s));
}

// --- the API -----------------------------------------------------------------------------------

void ControlPlane::notify_nodes(const std::string& kind) {
  if (!database_up()) return;
  db_->query("SELECT pg_notify('postern', json_build_object('node', $1::text, 'kind', $2::text)::text)", {node_, kind},
             [](PgResult) {});
}

void ControlPlane::handle(const HttpRequest& req, Responder respond) {
  if (req.path == "/metrics") {
    if (req.method != "GET") return respond(err(405, "method not allowed"));
    return respond({200, "text/plain; version=0.0.4; charset=utf-8", metrics()});
  }
  if (relay_route(patterns_.get(), req, respond)) return;
  auto p = split_path(req.path);
  if (p.size() < 3 || p[0] != "api" || p[1] != "v1") return respond(err(404, "no such endpoint"));
  const std::string& area = p[2];
  const std::string& m = req.method;
  if (area == "health" && m == "GET") {
    auto st = state();
    return respond(ok_json({{"status", "ok"}, {"node", node_}, {"database", database_up() ? "up" : "down"},
                            {"state_source", st->source}, {"queue", sched_.size()}}));
  }
  if (area == "licenses" && licenses_) return license_api(*licenses_, req, p, std::move(respond));
  if (area == "patterns" && patterns_) return pattern_api(*patterns_, req, p, std::move(respond));
  if (area == "stats" && p.size() == 4 && p[3] == "throughput" && m == "GET" && throughput_)
    return respond(ok_json(throughput_->data().to_json(rt_.clock->unix_seconds())));
  if (area == "admin" && p.size() == 4 && p[3] == "password")
    return admin_password_api(db_.get(), database_up(), req, std::move(respond), [this](const std::string& h) { password_saved(h); });
  if (area == "version" && m == "GET") return respond(ok_json({{"version", POSTERN_VERSION}, {"node", node_}}));
  if (area == "certificates") return certs_->handle(req, p, std::move(respond));
  if (area == "quarantine") return quarantine_api(rt_, sched_, quarantine_.get(), req, p, std::move(respond));
  if (area == "roles" && m == "GET") {
    json roles = json::array();
    for (tls::Role r : tls::kRoles) roles.push_back(role_json(rt_.tls.role(r)));
    return respond(ok_json(roles));
  }
  if (area == "reload" && m == "POST") {
    std::string failures = reload("the admin API");
    notify_nodes("reload");
    // 409 with the reason of every refusal; what was valid is applied all the same.
    if (!failures.empty()) return respond(err(409, "reload refused: " + failures));
    return respond(ok_json({{"reloaded", true}, {"node", node_}}));
  }
  if (area == "tls" && p.size() == 4 && p[3] == "flush-tickets") {
    if (m != "POST") return respond(err(405, "method not allowed"));
    if (auto e = flush_tickets("the admin API"); !e.empty()) return respond(err(500, "session-ticket flush failed: " + e));
    notify_nodes("flush-tickets");
    return respond(ok_json({{"flushed", true}, {"node", node_}, {"ticket_key_serial", rt_.tls.tickets().ring()->current->serial}}));
  }
  if (area == "events" || area == "alerts") {
    if (m != "GET") return respond(err(405, "method not allowed"));
    int limit = 100;
    if (auto it = req.query.find("limit"); it != req.query.end()) limit = std::clamp(std::atoi(it->second.c_str()), 1, 10000);
    std::string sql =
        "SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), node, code, severity, text, "
        "coalesce(queue_id, ''), alert, resolved_at IS NOT NULL FROM events ";
    sql += area == "alerts" ? "WHERE alert AND resolved_at IS NULL ORDER BY id DESC" : "ORDER BY id DESC LIMIT " + std::to_string(limit);
    return db_->query(sql, {}, [respond](PgResult r) {
      if (!r.ok) return respond(err(503, r.error.rfind("database unavailable", 0) == 0 ? r.error : "database error: " + r.error));
      json out = json::array();
      for (auto& row : r.rows)
        out.push_back({{"id", std::stoll(row[0])}, {"at", row[1]}, {"node", row[2]}, {"code", row[3]},
                       {"severity", row[4]}, {"text", row[5]}, {"queue_id", row[6]}, {"alert", row[7] == "t"},
                       {"resolved", row[8] == "t"}});
      respond(ok_json(out));
    });
  }
  if (area == "queue") {
    if (p.size() == 3 && m == "GET") return respond(queue_page(req));
    if (p.size() == 4 && p[3] == "flush" && m == "POST") {
      size_t n = sched_.flush_all();
      raise("QUEUE_FLUSH", "info", "flush of the whole queue: " + std::to_string(n) + " messages");
      return respond(ok_json({{"flushed", n}}));
    }
    if (p.size() < 4) return respond(err(404, "no such endpoint"));
    const std::string& qid = p[3];
    if (!valid_queue_id(qid)) return respond(err(400, "bad queue ID (letters and digits only): " + esc(qid, 80)));
    mta::QueueInfo q;
    if (!sched_.show(qid, q)) return respond(err(404, "no such message: " + qid));
    if (p.size() == 4 && m == "GET") return respond(ok_json(queue_json(q)));
    if (p.size() == 4 && m == "DELETE") {
      sched_.remove(qid);
      raise("QUEUE_DELETE", "info", "message deleted by an admin", qid);
      return respond(ok_json({{"deleted", qid}}));
    }
    if (p.size() == 5 && m == "POST") {
      const std::string& act = p[4];
      bool ok;
      if (act == "flush") ok = sched_.flush(qid);
      else if (act == "hold") ok = sched_.hold(qid);
      else if (act == "release") ok = sched_.release(qid);
      else return respond(err(404, "no such action: " + act));
      if (!ok) return respond(err(409, act + " is not possible now (held, in delivery, or not held)"));
      std::string code = "QUEUE_" + std::string(act == "flush" ? "FLUSH" : act == "hold" ? "HOLD" : "RELEASE");
      raise(code, "info", "message " + act + " by an admin", qid);
      return respond(ok_json({{act, qid}}));
    }
    return respond(err(405, "method not allowed"));
  }
  respond(err(404, "no such endpoint"));
}

// GET /api/v1/queue?limit=N&after=QID: one page in queue ID (= arrival) order, never the
// whole queue at once: a large queue must not hold the control loop (and /health) for seconds.
HttpResponse ControlPlane::queue_page(const HttpRequest& req) {
  size_t limit = kQueuePageDefault;
  if (auto it = req.query.find("limit"); it != req.query.end()) {
    const std::string& v = it->second;
    unsigned long n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n < 1 || n > kQueuePageMax)
      return err(400, "limit must be a number from 1 to " + std::to_string(kQueuePageMax));
    limit = n;
  }
  std::string after;
  if (auto it = req.query.find("after"); it != req.query.end()) {
    after = it->second;
    if (!after.empty() && !valid_queue_id(after)) return err(400, "after must be a queue ID");
  }
  auto page = sched_.list(after, limit);
  json msgs = json::array();
  for (auto& q : page.msgs) msgs.push_back(queue_json(q));
  json next = page.next_after.empty() ? json(nullptr) : json(page.next_after);
  return ok_json({{"total", page.total}, {"limit", limit}, {"messages", msgs}, {"next_after", next}});
}

std::string ControlPlane::admin_password_hash() const {
  auto st = state();
  auto it = st->settings.find(kPasswordSetting);
  if (it == st->settings.end()) return "";
  auto j = json::parse(it->second, nullptr, false);
  return j.is_string() ? j.get<std::string>() : "";
}

// The new hash is used at once on this node (the snapshot, then the cache), then re-read from
// the database; the other nodes are told. Sessions made under the old one end (web_auth.h).
void ControlPlane::password_saved(const std::string& hash) {
  auto s = std::make_shared<ControlState>(*state());
  s->settings[kPasswordSetting] = json(hash).dump();
  write_cache(*s);
  state_.publish(std::move(s));
  web_auth_->drop_sessions();
  raise("ADMIN_PASSWORD_SET", "info", "the admin password was set through the admin API");
  load_state();
  notify_nodes("settings");
}

std::string ControlPlane::metrics() const {
  std::ostringstream o;
  auto& c = rt_.counters;
  auto metric = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  metric("postern_sessions_active", "gauge", "Inbound SMTP sessions open now.");
  o << "postern_sessions_active " << c.sessions_active.load() << "\n";
  metric("postern_sessions_total", "counter", "Inbound SMTP sessions accepted.");
  o << "postern_sessions_total " << c.sessions_total.load() << "\n";
  metric("postern_sessions_refused_total", "counter", "Inbound sessions refused by connection limits.");
  o << "postern_sessions_refused_total " << c.sessions_refused.load() << "\n";
  metric("postern_sessions_write_stalled_total", "counter", "Sessions ended because the client did not read its replies.");
  o << "postern_sessions_write_stalled_total " << c.sessions_write_stalled.load() << "\n";
  metric("postern_smtp_improper_pipelining_total", "counter", "Sessions that sent a command before a reply they must wait for.");
  o << "postern_smtp_improper_pipelining_total " << c.improper_pipelining.load() << "\n";
  metric("postern_smtp_pregreet_total", "counter", "Sessions that talked before the greeting (smtp.greet_pause).");
  o << "postern_smtp_pregreet_total " << c.pregreet.load() << "\n";
  metric("postern_verify_probes_total", "counter", "Recipient verification probes sent to the next hop.");
  o << "postern_verify_probes_total " << c.verify_probes.load() << "\n";
  metric("postern_verify_cached_total", "counter", "RCPTs answered from the recipient verification cache.");
  o << "postern_verify_cached_total " << c.verify_cached.load() << "\n";
  metric("postern_verify_unreachable_total", "counter", "RCPTs answered as unreachable (relay.verify_unreachable).");
  o << "postern_verify_unreachable_total " << c.verify_unreachable.load() << "\n";
  metric("postern_accept_paused_total", "counter", "Times the SMTP listeners paused: out of file descriptors.");
  o << "postern_accept_paused_total " << c.accept_paused.load() << "\n";
  metric("postern_session_limit", "gauge", "Inbound sessions accepted at once (smtp.max_sessions, or less if descriptors are short).");
  o << "postern_session_limit " << rt_.session_limit.load() << "\n";
  metric("postern_messages_accepted_total", "counter", "Messages queued after 250 to DATA/BDAT.");
  o << "postern_messages_accepted_total " << c.messages_accepted.load() << "\n";
  metric("postern_messages_commit_failed_total", "counter", "Messages answered 451 because the spool could not commit them.");
  o << "postern_messages_commit_failed_total " << c.messages_commit_failed.load() << "\n";
  metric("postern_recipients_total", "counter", "Delivery results per recipient.");
  o << "postern_recipients_total{result=\"delivered\"} " << c.rcpts_delivered.load() << "\n";
  o << "postern_recipients_total{result=\"deferred\"} " << c.rcpts_deferred.load() << "\n";
  o << "postern_recipients_total{result=\"bounced\"} " << c.rcpts_bounced.load() << "\n";
  metric("postern_dsn_generated_total", "counter", "DSNs made (non-delivery and delay notices).");
  o << "postern_dsn_generated_total " << c.dsns_generated.load() << "\n";
  metric("postern_queue_messages", "gauge", "Messages in the queue.");
  o << "postern_queue_messages " << sched_.size() << "\n";
  metric("postern_queue_destinations", "gauge", "Destinations the scheduler tracks (waiting, active or cached).");
  o << "postern_queue_destinations " << sched_.destinations() << "\n";
  if (rt_.spool) {
    auto st = rt_.spool->stats();
    metric("postern_spool_commit_batches_total", "counter", "Group commits (one filesystem sync each).");
    o << "postern_spool_commit_batches_total " << st.batches << "\n";
    metric("postern_spool_commits_total", "counter", "Messages committed to the spool.");
    o << "postern_spool_commits_total " << st.messages << "\n";
    metric("postern_spool_sync_errors_total", "counter", "Failed spool syncs (the messages they covered got 451).");
    o << "postern_spool_sync_errors_total " << st.sync_errors << "\n";
    metric("postern_spool_free_files", "gauge", "Retired queue files kept for reuse.");
    o << "postern_spool_free_files " << rt_.spool->pool_size() << "\n";
  }
  metric("postern_outbound_connections", "gauge", "Delivery connections in progress.");
  o << "postern_outbound_connections " << sched_.active_connections() << "\n";
  o << tls::tls_role_metrics(rt_.tls);  // per role: notAfter, handshakes, failures, assigns
  metric("postern_tls_reloads_total", "counter", "Certificate reloads applied per role.");
  metric("postern_tls_reload_failures_total", "counter", "Certificate reloads refused per role.");
  for (tls::Role r : tls::kRoles) {
    auto& p = rt_.tls.role(r);
    o << "postern_tls_reloads_total{role=\"" << tls::role_name(r) << "\"} " << p.reloads() << "\n";
    o << "postern_tls_reload_failures_total{role=\"" << tls::role_name(r) << "\"} " << p.reload_failures() << "\n";
  }
  auto& tk = rt_.tls.tickets();
  metric("postern_tls_ticket_key_rotations_total", "counter", "Scheduled session-ticket key rotations.");
  o << "postern_tls_ticket_key_rotations_total " << tk.rotations() << "\n";
  metric("postern_tls_ticket_key_flushes_total", "counter", "Session-ticket key flushes (old tickets refused).");
  o << "postern_tls_ticket_key_flushes_total " << tk.flushes() << "\n";
  metric("postern_tls_tickets_total", "counter", "Session tickets issued, accepted, and refused as made under an unknown key.");
  o << "postern_tls_tickets_total{result=\"issued\"} " << tk.tickets_issued() << "\n";
  o << "postern_tls_tickets_total{result=\"accepted\"} " << tk.tickets_accepted() << "\n";
  o << "postern_tls_tickets_total{result=\"unknown_key\"} " << tk.tickets_unknown() << "\n";
  metric("postern_admin_requests_total", "counter", "Admin API requests.");
  o << "postern_admin_requests_total " << (api_ ? api_->requests() : 0) << "\n";
  if (web_auth_) {
    metric("postern_admin_logins_total", "counter", "Dashboard logins by result (locked: refused while locked out).");
    o << "postern_admin_logins_total{result=\"ok\"} " << web_auth_->logins_ok() << "\n";
    o << "postern_admin_logins_total{result=\"failed\"} " << web_auth_->logins_failed() << "\n";
    o << "postern_admin_logins_total{result=\"locked\"} " << web_auth_->logins_locked() << "\n";
    metric("postern_admin_sessions", "gauge", "Dashboard sessions open.");
    o << "postern_admin_sessions " << web_auth_->sessions() << "\n";
  }
  metric("postern_database_up", "gauge", "1 when the control-plane database is reachable.");
  o << "postern_database_up " << (database_up() ? 1 : 0) << "\n";
  metric("postern_events_total", "counter", "Events raised on this node.");
  o << "postern_events_total " << events_raised_ << "\n";
  if (licenses_) o << licenses_->metrics();
  if (patterns_) o << patterns_->metrics();
  o << scan_metrics(rt_);
  return o.str();
}

}  // namespace postern::admin
