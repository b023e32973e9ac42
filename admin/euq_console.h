// euq_console.h — the end-user quarantine console on the EUQ listener ([euq] listen, the EUQ
// role's certificate): recipients see and act on the quarantined mail addressed to them.
//
//   Sign-in without passwords: POST /api/signin {"address"} mails a one-time link
//   (<public_url>/?signin=<token>, admin/euq_token.h) through Postern's own outbound path
//   (admin/local_mail.h), only to addresses at relay.domains, and answers the same whatever the
//   address (no enumeration); requests are limited per address and per client IP
//   (euq.signin_limit_*, euq.signin_window; over it: 429 until the window ends). The page posts
//   the link's token to POST /api/session: its nonce is recorded as used in PostgreSQL
//   (euq_used_links) before the session cookie is set — with the database down the link is
//   refused (503, said on the page), never accepted twice.
//   Session: a signed token in the cookie euq_session (Secure; HttpOnly; SameSite=Strict; Path=/),
//   lasting euq.session_lifetime; every change carries X-CSRF-Token (HMAC of the session nonce).
//   GET  /api/me                        {address, csrf, database}
//   GET  /api/messages                  the recipient's quarantined mail (from, subject, date, verdict)
//   GET  /api/messages/{id}             with the header section; 404 unless addressed to them
//   POST /api/messages/{id}/release     back to the queue, delivered with X-Postern-Scan noting it
//   POST /api/messages/{id}/delete
//   POST /api/link {"token"}            a digest's release/delete link (single use, expiring)
//   POST /api/signout
//   Anything else GET: the page's files (web/euq/, http/static_files.h).
// Digest: daily at euq.digest_time (server.timezone, on rt.clock) to each recipient with
// quarantined mail, with signed per-message release and delete links; nodes sharing a database
// send it once (the claim row digest.<day> in euq_meta); without the database it waits.
// Retention: quarantined mail older than euq.retention is purged (checked every minute of rt.clock).
// Events: EUQ_SIGNIN_SENT, EUQ_SIGNIN_LIMITED, EUQ_SIGNIN, EUQ_LINK_REFUSED, EUQ_RELEASE,
// EUQ_DELETE, EUQ_DIGEST_SENT, EUQ_PURGE.
// A message addressed to several recipients cannot be released or deleted from here (409: it is
// the others' mail too): the admin console does that.
// Security-sensitive: reachable by anyone who can connect; the address in a session is the only
// authority, and every message ID is checked against the recipients of the stored envelope.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "admin/euq_token.h"
#include "admin/local_mail.h"
#include "admin/pg_client.h"
#include "admin/quarantine_api.h"
#include "http/http_server.h"
#include "mta/queue/scheduler.h"
#include "mta/runtime.h"

namespace postern::admin {

class EuqConsole {
 public:
  struct Hooks {
    std::function<void(const std::string& code, const std::string& severity, const std::string& text,
                       const std::string& queue_id)> event;
    std::function<std::string()> health;  // GET /health's JSON
  };
  EuqConsole(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched, PgClient& db, QuarantineIndex* index,
             std::string node, Hooks hooks);
  ~EuqConsole();
  void start();  // the key (<state_dir>/euq.key) and the 1 s tick; throws std::runtime_error
  void stop();
  void database_up();  // shares the link key through euq_meta
  void handle(const http::Request& req, http::Responder respond);
  void tick();

 private:
  struct Window {
    int64_t start = 0;
    uint32_t n = 0;
  };
  void signin(const http::Request& req, http::Responder respond);
  void open_session(const http::Request& req, http::Responder respond);
  void use_link(const http::Request& req, http::Responder respond);
  void messages(const http::Request& req, const std::string& who, http::Responder respond);
  // Records the token's nonce as used: then(true) once; 503/410 answered otherwise.
  void consume(const EuqToken& t, http::Responder respond, std::function<void()> then);
  bool limited(std::map<std::string, Window>& m, const std::string& key, uint32_t limit, int64_t now, bool& first);
  std::string session_of(const http::Request& req, std::string& nonce) const;
  std::string public_url() const;
  void send_digests(int64_t day);
  void purge(int64_t now);
  void event(const std::string& code, const std::string& sev, const std::string& text, const std::string& qid = "");

  uv_loop_t* loop_;
  mta::Runtime& rt_;
  mta::Scheduler& sched_;
  PgClient& db_;
  QuarantineIndex* index_;
  std::string node_;
  Hooks hooks_;
  std::string key_;
  std::string key_path_;
  std::string web_root_;
  std::unique_ptr<LocalMailer> mailer_;
  uv_timer_t* timer_ = nullptr;
  std::map<std::string, Window> by_address_, by_ip_;
  int64_t digest_day_ = INT64_MIN;
  bool digest_busy_ = false;
  int64_t last_purge_ = 0;
  int64_t last_prune_ = 0;
};

}  // namespace postern::admin
