// quarantine_api.cpp — see quarantine_api.h. Security-sensitive: every ID is validated before it
// reaches a path (Spool::load_quarantined checks again); header text is bounded and JSON-escaped.
#include "admin/quarantine_api.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "licensing/licenses.h"
#include "mta/queue/spool.h"
#include "scan/scan_service.h"

namespace postern::admin {
namespace {

using json = nlohmann::json;
constexpr size_t kMaxHeaderShown = 64 * 1024;
constexpr size_t kMaxListed = 10000;
constexpr size_t kMaxStatesFile = 4 << 20;  // quarantine-index.json: far above kMaxListed entries

HttpResponse ok(const json& j) { return {200, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace)}; }
HttpResponse fail(int status, const std::string& m) { return {status, "application/json", json_error(m)}; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// The header section of the stored message (bounded).
std::string header_section(const mta::Runtime& rt, const Envelope& e) {
  std::string text;
  if (!queue::Spool::read_message(rt.spool->quarantine_path(e.queue_id), std::min<uint64_t>(e.message_size, kMaxHeaderShown), text))
    return {};
  auto end = text.find("\r\n\r\n");
  if (end != std::string::npos) text.resize(end + 2);
  return text;
}

// The Subject: field, unfolded, from a header section.
std::string subject_of(const std::string& head) {
  std::string low = lower(head);
  size_t at = low.rfind("subject:", 0) == 0 ? 0 : low.find("\nsubject:");
  if (at == std::string::npos) return {};
  size_t start = at + (at == 0 && low[0] == 's' ? 8 : 9);
  std::string v;
  for (size_t i = start; i < head.size(); ++i) {
    if (head[i] == '\r') continue;
    if (head[i] == '\n') {
      if (i + 1 < head.size() && (head[i + 1] == ' ' || head[i + 1] == '\t')) continue;
      break;
    }
    v += head[i];
  }
  size_t b = v.find_first_not_of(" \t");
  return b == std::string::npos ? std::string() : v.substr(b, 998);
}

std::string iso(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

json entry_json(const mta::Runtime& rt, const Envelope& e, bool with_headers) {
  json rc = json::array();
  for (auto& r : e.rcpts) rc.push_back(r.address);
  std::string head = header_section(rt, e);
  json j = {{"id", e.queue_id}, {"received_at", iso(e.received_at)}, {"sender", e.mail_from}, {"recipients", rc},
            {"subject", subject_of(head)}, {"signature", e.quarantined}, {"size", e.message_size},
            {"client_ip", e.client_ip}, {"state", "quarantined"}};
  if (with_headers) j["headers"] = e.scan_header + head;
  return j;
}

bool matches(const Envelope& e, const HttpRequest& req) {
  auto q = [&](const char* k) -> std::string {
    auto it = req.query.find(k);
    return it == req.query.end() ? std::string() : lower(it->second);
  };
  std::string rcpt = q("rcpt"), sender = q("sender"), sig = q("signature");
  if (!sender.empty() && lower(e.mail_from).find(sender) == std::string::npos) return false;
  if (!sig.empty() && lower(e.quarantined).find(sig) == std::string::npos) return false;
  if (!rcpt.empty() && std::none_of(e.rcpts.begin(), e.rcpts.end(), [&](const Recipient& r) {
        return lower(r.address).find(rcpt) != std::string::npos;
      }))
    return false;
  return true;
}

bool valid_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 &&
         std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isalnum(c) != 0; });
}

}  // namespace

QuarantineIndex::QuarantineIndex(uv_loop_t* loop, mta::Runtime& rt, PgClient& db, std::string node)
    : rt_(rt), db_(db), node_(std::move(node)) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  auto cfg = rt_.config.load();
  if (cfg) states_path_ = cfg->state_dir + "/quarantine-index.json";
  load_states();
  pending_ = states_.size();
}

// {"node": ..., "states": {"<qid>": "released" | "deleted"}}: the changes still owed to the
// database. A file for another node name, or one that does not parse, is kept aside (.bad), not
// trusted.
void QuarantineIndex::load_states() {
  if (states_path_.empty()) return;
  std::ifstream in(states_path_, std::ios::binary);
  if (!in) return;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > kMaxStatesFile) return (void)spdlog::error("quarantine index: {} is too large, ignored", states_path_);
  json j = json::parse(text, nullptr, false);
  bool good = j.is_object() && j.value("node", std::string()) == node_ && j.contains("states") && j["states"].is_object();
  if (good)
    for (auto& [qid, st] : j["states"].items())
      if (!valid_id(qid) || !st.is_string() || (st != "released" && st != "deleted")) good = false;
  if (!good) {
    spdlog::error("quarantine index: {} is not a pending-state file of node {}: moved to .bad", states_path_, esc(node_));
    ::rename(states_path_.c_str(), (states_path_ + ".bad").c_str());
    return;
  }
  for (auto& [qid, st] : j["states"].items()) states_[qid] = st.get<std::string>();
  if (!states_.empty())
    spdlog::info("quarantine index: {} release/delete changes still to write to the database", states_.size());
}

void QuarantineIndex::save_states() {
  if (states_path_.empty()) return;
  if (states_.empty()) {
    if (::unlink(states_path_.c_str()) != 0 && errno != ENOENT)
      spdlog::error("quarantine index: cannot remove {}: {}", states_path_, std::strerror(errno));
    return;
  }
  json j = {{"node", node_}, {"states", json::object()}};
  for (auto& [qid, st] : states_) j["states"][qid] = st;
  std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::string tmp = states_path_ + ".tmp";
  std::string dir = states_path_.substr(0, states_path_.rfind('/') == std::string::npos ? 0 : states_path_.rfind('/'));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  if (fd >= 0 && ::close(fd) != 0) ok = false;
  ok = ok && ::rename(tmp.c_str(), states_path_.c_str()) == 0;
  if (ok) {
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok = dfd >= 0 && ::fsync(dfd) == 0;
    if (dfd >= 0) ::close(dfd);
  }
  if (!ok) spdlog::error("quarantine index: cannot write {}: {} (kept in memory)", states_path_, std::strerror(errno));
}

void QuarantineIndex::start() {
  started_ = true;
  uv_timer_start(&timer_, on_timer, 1000, 5000);
}

void QuarantineIndex::stop() {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

void QuarantineIndex::on_timer(uv_timer_t* t) {
  auto* q = static_cast<QuarantineIndex*>(t->data);
  if (!q->rt_.spool) return;
  struct stat st {};
  std::string dir = q->rt_.spool->dir() + "/quarantine";
  int64_t m = ::stat(dir.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec : 0;
  if (m == q->seen_mtime_ns_ && q->pending_ == 0) return;
  q->seen_mtime_ns_ = m;
  q->sync();
}

// Every entry on disk that the database has not confirmed is inserted (idempotent): while the
// database is down they wait on disk, and are written when it is back.
void QuarantineIndex::sync() {
  if (!rt_.spool) return;
  auto entries = rt_.spool->list_quarantined(kMaxListed);
  size_t n = 0;
  for (auto& e : entries) n += indexed_.count(e.queue_id) ? 0 : 1;
  pending_ = n + states_.size();
  if (db_.up() && !busy_) {
    auto states = states_;
    for (auto& [qid, state] : states) state_changed(qid, state);
  }
  if (!db_.up() || busy_ || n == 0) return;
  busy_ = true;
  auto left = std::make_shared<size_t>(n);
  for (auto& e : entries) {
    if (indexed_.count(e.queue_id)) continue;
    json rc = json::array();
    for (auto& r : e.rcpts) rc.push_back(r.address);
    std::string subject = subject_of(header_section(rt_, e));
    std::string qid = e.queue_id;
    db_.query("INSERT INTO quarantine (queue_id, node, received_at, sender, recipients, subject, signature, size) "
              "VALUES ($1, $2, to_timestamp($3::bigint), $4, $5::jsonb, $6, $7, $8::bigint) ON CONFLICT DO NOTHING",
              {qid, node_, std::to_string(e.received_at), e.mail_from, rc.dump(-1, ' ', false, json::error_handler_t::replace),
               subject, e.quarantined, std::to_string(e.message_size)},
              [this, qid, left](PgResult r) {
                if (r.ok) {
                  indexed_.insert(qid);
                  if (pending_) --pending_;
                } else {
                  spdlog::warn("queue_id={} quarantine index not written yet: {}", qid, esc(r.error));
                }
                if (--*left == 0) busy_ = false;
              });
  }
}

// A release or delete: written now, or kept and written by the next sync() with the database up.
void QuarantineIndex::state_changed(const std::string& qid, const std::string& state) {
  indexed_.erase(qid);
  auto& slot = states_[qid];
  if (slot != state) {
    slot = state;
    save_states();  // before the database is asked: a restart in between replays it
  }
  if (!db_.up()) return;  // the row says 'quarantined' until then; the change waits on disk
  db_.query("UPDATE quarantine SET state = $3, updated_at = now() WHERE node = $1 AND queue_id = $2",
            {node_, qid, state}, [this, qid, state](PgResult r) {
              if (!r.ok) return spdlog::warn("queue_id={} quarantine index update failed: {}", qid, esc(r.error));
              auto it = states_.find(qid);
              if (it != states_.end() && it->second == state) {
                states_.erase(it);
                if (pending_) --pending_;
                save_states();
              }
            });
}

void quarantine_api(mta::Runtime& rt, mta::Scheduler& sched, QuarantineIndex* index, const HttpRequest& req, const std::vector<std::string>& p, Responder respond) {
  const std::string& m = req.method;
  if (!rt.spool) return respond(fail(503, "no spool"));
  if (p.size() == 3) {
    if (m != "GET") return respond(fail(405, "method not allowed"));
    size_t limit = 1000;
    if (auto it = req.query.find("limit"); it != req.query.end())
      limit = static_cast<size_t>(std::clamp(std::atol(it->second.c_str()), 1L, static_cast<long>(kMaxListed)));
    json out = json::array();
    for (auto& e : rt.spool->list_quarantined(kMaxListed))
      if (out.size() < limit && matches(e, req)) out.push_back(entry_json(rt, e, false));
    return respond(ok({{"entries", out}, {"count", out.size()}, {"index_pending", index ? index->pending() : 0}}));
  }
  const std::string& id = p[3];
  if (!valid_id(id)) return respond(fail(400, "bad quarantine ID (letters and digits only): " + esc(id, 80)));
  Envelope e;
  std::string err;
  if (!rt.spool->load_quarantined(id, e, err)) return respond(fail(404, "no such quarantined message: " + id));
  if (p.size() == 4 && m == "GET") return respond(ok(entry_json(rt, e, true)));
  if (p.size() == 4 && m == "DELETE") {
    if (!rt.spool->delete_quarantined(id, err)) return respond(fail(500, "cannot delete: " + err));
    spdlog::info("queue_id={} quarantine deleted by an admin signature={}", id, esc(e.quarantined));
    if (index) index->state_changed(id, "deleted");
    return respond(ok({{"deleted", id}}));
  }
  if (p.size() == 5 && p[4] == "release") {
    if (m != "POST") return respond(fail(405, "method not allowed"));
    Envelope rel;
    if (!rt.spool->release_quarantined(id, rt.clock->unix_seconds(), rel, err))
      return respond(fail(500, "cannot release: " + err));
    spdlog::info("queue_id={} released from quarantine by an admin signature={}", id, esc(e.quarantined));
    sched.submit(rel);
    if (index) index->state_changed(id, "released");
    return respond(ok({{"released", id}}));
  }
  respond(fail(404, "no such endpoint"));
}

bool quarantine_id_valid(const std::string& id) { return valid_id(id); }

json quarantine_entry(const mta::Runtime& rt, const Envelope& e, bool with_headers) { return entry_json(rt, e, with_headers); }

bool quarantine_release(mta::Runtime& rt, mta::Scheduler& sched, QuarantineIndex* index, const std::string& id,
                        const std::string& by, std::string& err) {
  if (!rt.spool || !valid_id(id)) return err = "bad quarantine ID", false;
  Envelope e, rel;
  if (!rt.spool->load_quarantined(id, e, err)) return false;
  if (!rt.spool->release_quarantined(id, rt.clock->unix_seconds(), rel, err)) return false;
  spdlog::info("queue_id={} released from quarantine by {} signature={}", id, esc(by), esc(e.quarantined));
  sched.submit(rel);
  if (index) index->state_changed(id, "released");
  return true;
}

bool quarantine_delete(mta::Runtime& rt, QuarantineIndex* index, const std::string& id, const std::string& by,
                       std::string& err) {
  if (!rt.spool || !valid_id(id)) return err = "bad quarantine ID", false;
  Envelope e;
  if (!rt.spool->load_quarantined(id, e, err)) return false;
  if (!rt.spool->delete_quarantined(id, err)) return false;
  spdlog::info("queue_id={} quarantine deleted by {} signature={}", id, esc(by), esc(e.quarantined));
  if (index) index->state_changed(id, "deleted");
  return true;
}

std::string scan_metrics(const mta::Runtime& rt) {
  if (!rt.scan) return {};
  auto lic = rt.licenses.load();
  bool stale = lic && lic->get(licensing::LicenseKind::kAntivirus).status.state == licensing::State::kExpired;
  return rt.scan->metrics_text(rt.clock->unix_seconds(), stale);
}

}  // namespace postern::admin
