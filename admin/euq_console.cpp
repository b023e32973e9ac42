// euq_console.cpp — see euq_console.h. Security-sensitive: every request is from anyone; the
// session's address decides which quarantined messages exist for it.
#include "admin/euq_console.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "admin/euq_server.h"
#include "admin/euq_token.h"
#include "base/log.h"
#include "base/time_format.h"
#include "http/static_files.h"
#include "licensing/calendar.h"
#include "mta/queue/spool.h"

namespace postern::admin {
namespace {

using json = nlohmann::json;
constexpr const char* kCookie = "euq_session";
constexpr size_t kMaxWindows = 10000;      // per-address and per-IP counters kept
constexpr size_t kMaxListed = 10000;       // quarantine entries read at once
constexpr size_t kMaxPerDigest = 100;      // messages listed in one recipient's digest
constexpr size_t kMaxDigestRecipients = 10000;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

http::Response answer(int status, const json& j) {
  auto r = http::json_response(status, j.dump(-1, ' ', false, json::error_handler_t::replace));
  http::add_console_headers(r);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

http::Response error(int status, const std::string& m) { return answer(status, {{"error", m}}); }

const char* kDbDown =
    "the database is unavailable: links cannot be checked right now (a link is never accepted twice); try again in "
    "a minute";

// A plausible single address: local@domain, printable ASCII without spaces, bounded.
bool valid_address(const std::string& a) {
  if (a.empty() || a.size() > 254) return false;
  auto at = a.rfind('@');
  if (at == std::string::npos || at == 0 || at + 1 >= a.size() || at > 64) return false;
  for (unsigned char c : a)
    if (c <= 32 || c >= 127 || c == '<' || c == '>' || c == ',' || c == '"' || c == '\\') return false;
  return a.find('@') == at;
}

bool addressed_to(const Envelope& e, const std::string& who) {
  return std::any_of(e.rcpts.begin(), e.rcpts.end(), [&](const Recipient& r) { return lower(r.address) == who; });
}

bool only_to(const Envelope& e, const std::string& who) {
  return std::all_of(e.rcpts.begin(), e.rcpts.end(), [&](const Recipient& r) { return lower(r.address) == who; });
}

// The parts of an entry a recipient sees (not the other recipients, not the client IP).
json for_recipient(const json& full) {
  json j{{"id", full["id"]},           {"from", full["sender"]},     {"subject", full["subject"]},
         {"date", full["received_at"]}, {"verdict", full["signature"]}, {"size", full["size"]}};
  if (full.contains("headers")) j["headers"] = full["headers"];
  return j;
}

std::string read_small(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s.size() == 64 ? s : std::string();
}

bool write_key(const std::string& path, const std::string& key) {
  std::string tmp = path + ".tmp", text = key + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  if (fd >= 0) ok = ::close(fd) == 0 && ok;
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

int64_t secs(std::chrono::milliseconds d) { return std::chrono::duration_cast<std::chrono::seconds>(d).count(); }

std::string lifetime_text(int64_t s) {
  if (s % 86400 == 0) return std::to_string(s / 86400) + (s == 86400 ? " day" : " days");
  if (s % 3600 == 0) return std::to_string(s / 3600) + (s == 3600 ? " hour" : " hours");
  if (s % 60 == 0) return std::to_string(s / 60) + " minutes";
  return std::to_string(s) + " seconds";
}

// An address at relay.domains: the only ones Postern mails sign-in links and digests to.
bool ours(const Config& cfg, const std::string& addr) {
  std::string domain = lower(addr.substr(addr.rfind('@') + 1));
  return std::any_of(cfg.relay.domains.begin(), cfg.relay.domains.end(),
                     [&](const std::string& d) { return lower(d) == domain; });
}

bool same_secret(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

EuqConsole::EuqConsole(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched, PgClient& db, QuarantineIndex* index,
                       std::string node, Hooks hooks)
    : loop_(loop), rt_(rt), sched_(sched), db_(db), index_(index), node_(std::move(node)), hooks_(std::move(hooks)) {}

EuqConsole::~EuqConsole() { stop(); }

void EuqConsole::start() {
  auto cfg = rt_.config.load();
  key_path_ = cfg->state_dir + "/euq.key";
  key_ = read_small(key_path_);
  if (key_.empty()) {
    key_ = random_hex(32);
    if (!write_key(key_path_, key_)) throw std::runtime_error("cannot write " + key_path_);
    spdlog::info("euq console: link key created in {}", key_path_);
  }
  web_root_ = http::default_web_root("euq");
  mailer_ = std::make_unique<LocalMailer>(loop_, rt_, sched_);
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, [](uv_timer_t* t) { if (t->data) static_cast<EuqConsole*>(t->data)->tick(); }, 1000, 1000);
}

void EuqConsole::stop() {
  if (timer_) {
    uv_timer_stop(timer_);
    timer_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
  if (mailer_) mailer_->stop();
}

void EuqConsole::event(const std::string& code, const std::string& sev, const std::string& text, const std::string& qid) {
  if (hooks_.event) hooks_.event(code, sev, text, qid);
}

// The first node's key wins; the others adopt it (links they signed before stop working).
void EuqConsole::database_up() {
  db_.query("INSERT INTO euq_meta (key, value) VALUES ('link_key', $1) ON CONFLICT (key) DO NOTHING", {key_},
            [](PgResult) {});
  db_.query("SELECT value FROM euq_meta WHERE key = 'link_key'", {}, [this](PgResult r) {
    if (!r.ok || r.rows.empty() || r.rows[0][0].size() != 64 || r.rows[0][0] == key_) return;
    key_ = r.rows[0][0];
    if (!write_key(key_path_, key_)) spdlog::warn("euq console: cannot write {}", key_path_);
    spdlog::info("euq console: the link key shared by the nodes is adopted (links signed here before are void)");
  });
}

std::string EuqConsole::public_url() const {
  auto cfg = rt_.config.load();
  std::string u = cfg->euq.public_url.empty() ? "https://" + cfg->euq_listen : cfg->euq.public_url;
  while (!u.empty() && u.back() == '/') u.pop_back();
  return u;
}

// The address of a valid session cookie ("" when none); `nonce` is the session's.
std::string EuqConsole::session_of(const http::Request& req, std::string& nonce) const {
  std::string c = http::cookie_value(req, kCookie), why;
  auto t = euq_verify(key_, c, "session", rt_.clock->unix_seconds(), why);
  if (!t) return {};
  nonce = t->nonce;
  return t->recipient;
}

bool EuqConsole::limited(std::map<std::string, Window>& m, const std::string& key, uint32_t limit, int64_t now,
                         bool& first) {
  int64_t window = secs(rt_.config.load()->euq.signin_window);
  auto it = m.find(key);
  if (it == m.end()) {
    if (m.size() >= kMaxWindows)
      std::erase_if(m, [&](const auto& kv) { return kv.second.start + window <= now; });
    if (m.size() >= kMaxWindows) return first = false, true;  // too many at once: refused, not remembered
    it = m.emplace(key, Window{now, 0}).first;
  }
  if (it->second.start + window <= now) it->second = Window{now, 0};
  ++it->second.n;
  first = it->second.n == limit + 1;
  return it->second.n > limit;
}

void EuqConsole::handle(const http::Request& req, http::Responder respond) {
  if (req.path == "/health") return respond(euq_route(req, hooks_.health));
  if (req.path.rfind("/api/", 0) != 0) {
    auto r = http::serve_static(web_root_, req);
    http::add_console_headers(r);
    return respond(r);
  }
  const std::string& m = req.method;
  if (req.path == "/api/signin") return m == "POST" ? signin(req, respond) : respond(error(405, "method not allowed"));
  if (req.path == "/api/session") return m == "POST" ? open_session(req, respond) : respond(error(405, "method not allowed"));
  if (req.path == "/api/link") return m == "POST" ? use_link(req, respond) : respond(error(405, "method not allowed"));
  bool known = req.path == "/api/me" || req.path == "/api/signout" || req.path == "/api/messages" ||
               req.path.rfind("/api/messages/", 0) == 0;
  if (!known) return respond(error(404, "no such endpoint"));
  std::string nonce, who = session_of(req, nonce);
  if (who.empty()) return respond(error(401, "not signed in (or the session expired): ask for a sign-in link"));
  std::string csrf = hmac_hex(key_, "csrf:" + nonce);
  if (m != "GET" && m != "HEAD") {
    auto it = req.headers.find("x-csrf-token");
    if (it == req.headers.end() || !same_secret(it->second, csrf)) return respond(error(403, "missing or wrong CSRF token"));
  }
  if (req.path == "/api/me") {
    if (m != "GET") return respond(error(405, "method not allowed"));
    return respond(answer(200, {{"address", who}, {"csrf", csrf}, {"database", db_.up() ? "up" : "down"}}));
  }
  if (req.path == "/api/signout") {
    if (m != "POST") return respond(error(405, "method not allowed"));
    auto r = answer(200, {{"signed_out", true}});
    r.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict");
    return respond(r);
  }
  messages(req, who, respond);
}

void EuqConsole::signin(const http::Request& req, http::Responder respond) {
  auto cfg = rt_.config.load();
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("address") || !j["address"].is_string())
    return respond(error(400, "send {\"address\": \"you@example.com\"}"));
  std::string addr = lower(j["address"].get<std::string>());
  while (!addr.empty() && addr.back() == ' ') addr.pop_back();
  while (!addr.empty() && addr.front() == ' ') addr.erase(0, 1);
  if (!valid_address(addr)) return respond(error(400, "that is not an e-mail address"));
  int64_t now = rt_.clock->unix_seconds();
  bool first_a = false, first_i = false;
  // The client's own count first: one client cannot fill the per-address counters.
  bool over_i = limited(by_ip_, req.peer_ip, cfg->euq.signin_limit_per_ip, now, first_i);
  bool over_a = !over_i && limited(by_address_, addr, cfg->euq.signin_limit_per_address, now, first_a);
  if (over_a || over_i) {
    if (first_a || first_i)
      event("EUQ_SIGNIN_LIMITED", "warning",
            "sign-in requests refused for " + (over_a ? "<" + esc(addr) + ">" : std::string("client ") + esc(req.peer_ip)) +
                " until the window (" + lifetime_text(secs(cfg->euq.signin_window)) + ") ends");
    return respond(error(429, "too many sign-in requests; try again later"));
  }
  int64_t life = secs(cfg->euq.link_lifetime);
  std::string same = "If this address receives mail here, a sign-in link is on its way to it. The link works once, for " +
                     lifetime_text(life) + ".";
  if (!ours(*cfg, addr)) {
    spdlog::info("euq console: sign-in asked for <{}> from {}: not a relay.domains address, no mail sent", esc(addr),
                 esc(req.peer_ip));
    return respond(answer(200, {{"status", "sent"}, {"message", same}}));
  }
  EuqToken t{"signin", addr, now + life, "", ""};
  std::string link = public_url() + "/?signin=" + euq_sign(key_, t);
  LocalMail mail;
  mail.to = addr;
  mail.tag = "euq-signin";
  mail.subject = "Your quarantine sign-in link";
  mail.headers = {{"X-Postern-EUQ", "signin"}};
  mail.body = "Someone (probably you) asked to see the quarantined mail of <" + addr + "> from " + req.peer_ip +
              ".\n\nSign in here (the link works once, for " + lifetime_text(life) + "):\n\n" + link +
              "\n\nIf you did not ask for it, ignore this message.\n";
  std::string qid;
  std::string ip = req.peer_ip;
  if (!mailer_->send(mail, [this, addr, ip](bool ok, const std::string& q) {
        if (ok) event("EUQ_SIGNIN_SENT", "info", "sign-in link mailed to <" + esc(addr) + "> (asked from " + esc(ip) + ")", q);
      }, &qid))
    return respond(error(503, "the sign-in mail cannot be written now; try again in a minute"));
  spdlog::info("queue_id={} euq console: sign-in link for <{}> asked from {}", qid, esc(addr), esc(req.peer_ip));
  respond(answer(200, {{"status", "sent"}, {"message", same}}));
}

void EuqConsole::consume(const EuqToken& t, http::Responder respond, std::function<void()> then) {
  if (!db_.up()) return respond(error(503, kDbDown));
  db_.query("INSERT INTO euq_used_links (nonce, purpose, recipient, expires_at, node) VALUES ($1, $2, $3, "
            "to_timestamp($4::bigint), $5) ON CONFLICT DO NOTHING RETURNING nonce",
            {t.nonce, t.purpose, t.recipient, std::to_string(t.expires), node_},
            [this, t, respond, then](PgResult r) {
              if (!r.ok) return respond(error(503, kDbDown));
              if (r.rows.empty()) {
                event("EUQ_LINK_REFUSED", "warning", "a used " + t.purpose + " link of <" + esc(t.recipient) + "> was tried again", t.qid);
                return respond(error(410, "this link was already used: ask for a new one"));
              }
              then();
            });
}

void EuqConsole::open_session(const http::Request& req, http::Responder respond) {
  auto j = json::parse(req.body, nullptr, false);
  std::string token = !j.is_discarded() && j.is_object() && j.contains("token") && j["token"].is_string()
                          ? j["token"].get<std::string>() : "";
  std::string why;
  auto t = euq_verify(key_, token, "signin", rt_.clock->unix_seconds(), why);
  if (!t) {
    spdlog::info("euq console: sign-in link refused from {}: {}", esc(req.peer_ip), why);
    return respond(error(why == "expired" ? 410 : 403,
                         why == "expired" ? "this sign-in link has expired: ask for a new one" : "this sign-in link is not valid"));
  }
  std::string ip = req.peer_ip;
  EuqToken tok = *t;
  consume(tok, respond, [this, tok, ip, respond] {
    auto cfg = rt_.config.load();
    int64_t life = secs(cfg->euq.session_lifetime);
    EuqToken s{"session", tok.recipient, rt_.clock->unix_seconds() + life, "", ""};
    s.nonce = random_hex(16);
    std::string cookie = euq_sign(key_, s);
    event("EUQ_SIGNIN", "info", "<" + esc(tok.recipient) + "> signed in to the quarantine console from " + esc(ip));
    auto r = answer(200, {{"address", tok.recipient}, {"csrf", hmac_hex(key_, "csrf:" + s.nonce)}});
    r.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=" + cookie + "; Path=/; Max-Age=" +
                                             std::to_string(life) + "; Secure; HttpOnly; SameSite=Strict");
    respond(r);
  });
}

// A digest's link: the action it names, for the message and recipient it names.
void EuqConsole::use_link(const http::Request& req, http::Responder respond) {
  auto j = json::parse(req.body, nullptr, false);
  std::string token = !j.is_discarded() && j.is_object() && j.contains("token") && j["token"].is_string()
                          ? j["token"].get<std::string>() : "";
  int64_t now = rt_.clock->unix_seconds();
  std::string why;
  auto t = euq_verify(key_, token, "release", now, why);
  if (!t && why == "wrong purpose") t = euq_verify(key_, token, "delete", now, why);
  if (!t || !quarantine_id_valid(t->qid)) {
    return respond(error(why == "expired" ? 410 : 403,
                         why == "expired" ? "this link has expired: sign in to see your quarantine" : "this link is not valid"));
  }
  EuqToken tok = *t;
  consume(tok, respond, [this, tok, respond] {
    Envelope e;
    std::string err;
    if (!rt_.spool || !rt_.spool->load_quarantined(tok.qid, e, err) || !addressed_to(e, tok.recipient))
      return respond(error(404, "this message is no longer in quarantine"));
    if (!only_to(e, tok.recipient))
      return respond(error(409, "this message is also addressed to others: ask your administrator"));
    bool release = tok.purpose == "release";
    bool ok = release ? quarantine_release(rt_, sched_, index_, tok.qid, "<" + tok.recipient + "> (digest link)", err)
                      : quarantine_delete(rt_, index_, tok.qid, "<" + tok.recipient + "> (digest link)", err);
    if (!ok) return respond(error(500, std::string("cannot ") + tok.purpose + ": " + err));
    event(release ? "EUQ_RELEASE" : "EUQ_DELETE", "info",
          "<" + esc(tok.recipient) + "> " + (release ? "released" : "deleted") + " a quarantined message from a digest link (" +
              esc(e.quarantined) + ")", tok.qid);
    respond(answer(200, {{release ? "released" : "deleted", tok.qid}, {"address", tok.recipient}}));
  });
}

void EuqConsole::messages(const http::Request& req, const std::string& who, http::Responder respond) {
  if (!rt_.spool) return respond(error(503, "no spool"));
  const std::string prefix = "/api/messages";
  const std::string& m = req.method;
  if (req.path == prefix) {
    if (m != "GET") return respond(error(405, "method not allowed"));
    json out = json::array();
    for (auto& e : rt_.spool->list_quarantined(kMaxListed))
      if (addressed_to(e, who)) out.push_back(for_recipient(quarantine_entry(rt_, e, false)));
    return respond(answer(200, {{"address", who}, {"messages", out}, {"count", out.size()}}));
  }
  if (req.path.rfind(prefix + "/", 0) != 0) return respond(error(404, "no such endpoint"));
  std::string rest = req.path.substr(prefix.size() + 1), id = rest, action;
  if (auto s = rest.find('/'); s != std::string::npos) id = rest.substr(0, s), action = rest.substr(s + 1);
  // Not valid, not there, or not theirs: the same 404.
  Envelope e;
  std::string err;
  if (!quarantine_id_valid(id) || !rt_.spool->load_quarantined(id, e, err) || !addressed_to(e, who))
    return respond(error(404, "no such message in your quarantine"));
  if (action.empty()) {
    if (m != "GET") return respond(error(405, "method not allowed"));
    return respond(answer(200, for_recipient(quarantine_entry(rt_, e, true))));
  }
  if (action != "release" && action != "delete") return respond(error(404, "no such endpoint"));
  if (m != "POST") return respond(error(405, "method not allowed"));
  if (!only_to(e, who)) return respond(error(409, "this message is also addressed to others: ask your administrator"));
  bool release = action == "release";
  bool ok = release ? quarantine_release(rt_, sched_, index_, id, "<" + who + "> (quarantine console)", err)
                    : quarantine_delete(rt_, index_, id, "<" + who + "> (quarantine console)", err);
  if (!ok) return respond(error(500, "cannot " + action + ": " + err));
  event(release ? "EUQ_RELEASE" : "EUQ_DELETE", "info",
        "<" + esc(who) + "> " + (release ? "released" : "deleted") + " a quarantined message (" + esc(e.quarantined) + ")", id);
  respond(answer(200, {{release ? "released" : "deleted", id}}));
}

// --- the clock's work: digest, purge, old nonces --------------------------------------------

void EuqConsole::tick() {
  auto cfg = rt_.config.load();
  int64_t now = rt_.clock->unix_seconds();
  if (now - last_purge_ >= 60) {
    last_purge_ = now;
    purge(now);
  }
  if (now - last_prune_ >= 3600 && db_.up()) {
    last_prune_ = now;
    db_.query("DELETE FROM euq_used_links WHERE expires_at < to_timestamp($1::bigint)", {std::to_string(now)},
              [](PgResult) {});
  }
  const std::string& dt = cfg->euq.digest_time;
  if (dt.size() != 5 || digest_busy_) return;
  auto tz = licensing::TimeZone::parse(cfg->timezone).value_or(licensing::TimeZone{});
  int64_t day = tz.day_of(now);
  int64_t due = tz.midnight(day) + std::stoi(dt.substr(0, 2)) * 3600 + std::stoi(dt.substr(3, 2)) * 60;
  // A node started more than an hour after today's digest time leaves today's digest (it was
  // sent, or its mail would arrive out of the recipients' routine); within the hour it catches up.
  if (digest_day_ == INT64_MIN) digest_day_ = now >= due + 3600 ? day : day - 1;
  if (now < due || digest_day_ >= day) return;
  if (!db_.up()) return;  // the claim needs the database: the digest waits for it
  digest_day_ = day;
  send_digests(day);
}

void EuqConsole::send_digests(int64_t day) {
  std::map<std::string, std::vector<Envelope>> by_rcpt;
  auto cfg = rt_.config.load();
  for (auto& e : rt_.spool->list_quarantined(kMaxListed))
    for (auto& r : e.rcpts) {
      if (!ours(*cfg, r.address) || !valid_address(lower(r.address))) continue;  // no digest to the outside
      if (!by_rcpt.count(lower(r.address)) && by_rcpt.size() >= kMaxDigestRecipients) continue;
      auto& v = by_rcpt[lower(r.address)];
      if (v.size() < kMaxPerDigest) v.push_back(e);
    }
  if (by_rcpt.empty()) return spdlog::info("euq console: digest of {}: no quarantined mail", licensing::format_date(day));
  digest_busy_ = true;
  db_.query("INSERT INTO euq_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING key",
            {"digest." + licensing::format_date(day), node_}, [this, day, by_rcpt, cfg](PgResult r) {
    digest_busy_ = false;
    if (!r.ok) {
      digest_day_ = day - 1;  // tried again on the next tick
      return;
    }
    if (r.rows.empty()) return spdlog::info("euq console: the digest of {} is sent by another node", licensing::format_date(day));
    int64_t now = rt_.clock->unix_seconds(), life = secs(cfg->euq.digest_link_lifetime);
    std::string base = public_url();
    size_t sent = 0;
    for (auto& [who, list] : by_rcpt) {
      std::string body = "Quarantined mail for <" + who + "> (" + std::to_string(list.size()) +
                         (list.size() == 1 ? " message" : " messages") + "). Each link works once, for " +
                         lifetime_text(life) + ".\n";
      for (auto& e : list) {
        json j = quarantine_entry(rt_, e, false);
        body += "\nFrom:    " + esc(e.mail_from.empty() ? "<>" : e.mail_from) + "\nSubject: " +
                esc(j["subject"].get<std::string>()) + "\nDate:    " + j["received_at"].get<std::string>() +
                "\nVerdict: " + esc(e.quarantined) + "\n";
        if (e.rcpts.size() == 1) {
          body += "Release: " + base + "/?link=" + euq_sign(key_, {"release", who, now + life, "", e.queue_id}) + "\n";
          body += "Delete:  " + base + "/?link=" + euq_sign(key_, {"delete", who, now + life, "", e.queue_id}) + "\n";
        } else {
          body += "(addressed to others too: ask your administrator to release it)\n";
        }
      }
      body += "\nSee them all: " + base + "/\n";
      LocalMail m;
      m.to = who;
      m.tag = "euq-digest";
      m.subject = "Quarantine digest: " + std::to_string(list.size()) + (list.size() == 1 ? " message" : " messages");
      m.headers = {{"X-Postern-EUQ", "digest " + licensing::format_date(day)}};
      m.body = body;
      size_t n = list.size();
      if (mailer_->send(m, [this, who, n, day](bool ok, const std::string& q) {
            if (ok) event("EUQ_DIGEST_SENT", "info", "quarantine digest of " + licensing::format_date(day) + " (" +
                                                         std::to_string(n) + " messages) mailed to <" + esc(who) + ">", q);
          }))
        ++sent;
    }
    spdlog::info("euq console: digest of {} mailed to {} recipients", licensing::format_date(day), sent);
  });
}

void EuqConsole::purge(int64_t now) {
  int64_t keep = secs(rt_.config.load()->euq.retention);
  if (keep <= 0 || !rt_.spool) return;
  for (auto& e : rt_.spool->list_quarantined(kMaxListed)) {
    if (e.received_at + keep > now) continue;
    std::string err;
    if (!quarantine_delete(rt_, index_, e.queue_id, "retention (euq.retention)", err)) {
      spdlog::warn("queue_id={} quarantine purge failed: {}", e.queue_id, esc(err));
      continue;
    }
    event("EUQ_PURGE", "info", "quarantined message purged after " + lifetime_text(keep) + " (" + esc(e.quarantined) + ")",
          e.queue_id);
  }
}

}  // namespace postern::admin
