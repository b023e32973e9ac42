// outbound_connection.cpp — the I/O driver of outbound delivery. Security-sensitive: the TLS
// policy. Under encrypt/verify the session never sends MAIL before the handshake succeeded (the
// session enforces it); "verify" adds chain and host name checks here; under "may" a failed
// handshake is retried once in plaintext on the same address, as other MTAs do. TLS sessions are
// resumed only under the same address, host name, policy and context generation, so a session
// that was not verified is never resumed where verification is required.
#include "mta/delivery/outbound_connection.h"

#include <fcntl.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "base/log.h"
#include "mta/client/mime_downgrade.h"
#include "mta/queue/scan_edits.h"
#include "mta/queue/spool.h"
#include "mta/connection_host.h"
#include "mta/dns/resolver.h"

namespace postern::delivery {
namespace {

constexpr size_t kMaxCandidates = 10;
constexpr unsigned kMaxJobsPerConnection = 100;

const char* level_name(TlsLevel l) {
  switch (l) {
    case TlsLevel::kNone: return "none";
    case TlsLevel::kMay: return "may";
    case TlsLevel::kEncrypt: return "encrypt";
    case TlsLevel::kVerify: return "verify";
  }
  return "?";
}

bool same_ip(const sockaddr_storage& a, const sockaddr* b) {
  if (a.ss_family != b->sa_family) return false;
  if (a.ss_family == AF_INET)
    return std::memcmp(&reinterpret_cast<const sockaddr_in*>(&a)->sin_addr,
                       &reinterpret_cast<const sockaddr_in*>(b)->sin_addr, 4) == 0;
  return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr,
                     &reinterpret_cast<const sockaddr_in6*>(b)->sin6_addr, 16) == 0;
}

bool is_local_address(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET && (ntohl(reinterpret_cast<const sockaddr_in*>(&a)->sin_addr.s_addr) >> 24) == 127)
    return true;
  if (a.ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&a)->sin6_addr))
    return true;
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return false;
  bool found = false;
  for (auto* i = ifs; i && !found; i = i->ifa_next)
    if (i->ifa_addr && same_ip(a, i->ifa_addr)) found = true;
  freeifaddrs(ifs);
  return found;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// The gate's edits (mta/queue/scan_edits.h): X-Postern-Scan in front, the Subject tag inside.
std::string scan_prefix(const Envelope* env) { return env ? queue::scan_prefix(*env) : std::string(); }

std::vector<smtp::ClientMessage> client_messages(const std::vector<JobMessage>& msgs) {
  std::vector<smtp::ClientMessage> v;
  for (auto& m : msgs)
    v.push_back({m.qid, m.env.get(), m.rcpts, m.size + (m.env ? queue::scan_edits_size(*m.env, m.size) : 0), false,
                 m.probe});
  return v;
}

}  // namespace

// A next hop that is one of this node's own SMTP listeners: the mail would loop.
bool points_to_own_listener(const sockaddr_storage& a, const Config& cfg) {
  uint16_t port = a.ss_family == AF_INET ? ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port)
                                         : ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
  for (auto& l : cfg.smtp.listen) {
    if (l.port != port) continue;
    if (l.host == "0.0.0.0" || l.host == "::") {
      if (is_local_address(a)) return true;
      continue;
    }
    sockaddr_storage ls{};
    if (l.host.find(':') != std::string::npos) {
      ls.ss_family = AF_INET6;
      if (inet_pton(AF_INET6, l.host.c_str(), &reinterpret_cast<sockaddr_in6*>(&ls)->sin6_addr) != 1) continue;
    } else {
      ls.ss_family = AF_INET;
      if (inet_pton(AF_INET, l.host.c_str(), &reinterpret_cast<sockaddr_in*>(&ls)->sin_addr) != 1) continue;
    }
    if (same_ip(a, reinterpret_cast<const sockaddr*>(&ls))) return true;
  }
  return false;
}

void OutboundConnection::start(mta::ConnectionHost& w, DeliveryJob job, Done done) {
  auto* c = new OutboundConnection(w, std::move(job), std::move(done));
  c->resolve();
}

OutboundConnection::OutboundConnection(mta::ConnectionHost& w, DeliveryJob job, Done done)
    : w_(w), job_(std::move(job)), done_(std::move(done)), cfg_(w.runtime().config.load()) {
  uv_timer_init(w_.loop(), &timer_);
  timer_.data = this;
  w_.outbound_started(this);
}

OutboundConnection::~OutboundConnection() { *alive_ = false; }

void OutboundConnection::resolve() {
  auto& res = w_.resolver();
  std::weak_ptr<bool> alive = alive_;
  auto cb = [this, alive](dns::Answer a) {
    auto live = alive.lock();
    if (!live || !*live || finished_) return;  // aborted while the query ran
    resolving_ = false;
    on_answer(std::move(a));
  };
  resolving_ = true;
  if (job_.has_route) {
    if (job_.route.mx) res.resolve_mx(job_.route.host, job_.route.port, cb);
    else res.resolve_host(job_.route.host, job_.route.port, cb);
  } else {
    res.resolve_mx(job_.domain, cfg_->outbound.mx_port, cb);
  }
}

void OutboundConnection::on_answer(dns::Answer a) {
  switch (a.kind) {
    case dns::Answer::kNullMx:
      return finish_all(smtp::Outcome::kFailed, "5.1.10", "recipient domain " + job_.domain + " has a null MX (RFC 7505)");
    case dns::Answer::kNotFound:
      return finish_all(smtp::Outcome::kFailed, "5.1.2", "host or domain name not found: " + a.error);
    case dns::Answer::kTempFail:
      return finish_all(smtp::Outcome::kDeferred, "4.4.3", "DNS: " + a.error);
    case dns::Answer::kOk:
      break;
  }
  for (auto& h : a.hosts)
    for (auto& addr : h.addrs)
      if (cands_.size() < kMaxCandidates) cands_.push_back({h.name, addr, false});
  try_next();
}

void OutboundConnection::try_next() {
  if (next_ >= cands_.size()) {
    std::string why = last_error_.empty() ? "no usable next hop" : last_error_;
    bool tls = tls_failed_ && job_.tls >= TlsLevel::kEncrypt;
    return finish_all(smtp::Outcome::kDeferred, tls ? "4.7.5" : "4.4.1", why);
  }
  cur_ = cands_[next_++];
  remote_ = cur_.host + "[" + dns::addr_to_string(cur_.addr) + "]";
  if (points_to_own_listener(cur_.addr, *cfg_)) {
    spdlog::warn("delivery job={} dest={} next hop {} is this node: mail loop", job_.id, esc(job_.dest), esc(remote_));
    return finish_all(smtp::Outcome::kFailed, "5.4.6",
                      "mail for " + job_.domain + " loops back to myself (" + remote_ + ")");
  }
  session_.reset();
  tls::StreamLimits lim;
  lim.write_timeout = cfg_->outbound.data_timeout;
  lim.close_timeout = std::chrono::seconds(10);
  stream_ = tls::TlsStream::create(w_.loop(), this, lim);
  int r = stream_->connect(reinterpret_cast<const sockaddr*>(&cur_.addr));
  if (r != 0) {
    stream_->detach();
    stream_ = nullptr;
    return attempt_failed("connect to " + remote_ + ": " + uv_strerror(r));
  }
  arm_timer(cfg_->outbound.connect_timeout);
}

void OutboundConnection::arm_timer(std::chrono::milliseconds t) {
  uv_timer_start(&timer_, [](uv_timer_t* h) {
    auto* self = static_cast<OutboundConnection*>(h->data);
    if (self->parked_) {  // idle in the connection cache long enough: say goodbye
      self->w_.unpark(self);
      self->parked_ = false;
      self->session_->quit();
      self->drive();
      return;
    }
    if (!self->session_) {
      self->attempt_failed("connect to " + self->remote_ + ": timed out");
      return;
    }
    self->session_->connection_lost("timeout talking to " + self->remote_ + " in state " +
                                    smtp::SmtpClientSession::state_name(self->session_->state()));
    self->drive();
  }, static_cast<uint64_t>(std::max<int64_t>(1, t.count())), 0);
}

// The deadline for what the session waits for now: none while the body streams (the stream's
// write-progress deadline, outbound.data_timeout, covers it), the final reply, or a reply.
void OutboundConnection::arm_for_state() {
  using S = smtp::SmtpClientSession::State;
  if (!session_ || parked_) return;
  if (body_active_) return (void)uv_timer_stop(&timer_);
  arm_timer(session_->state() == S::kFinal ? cfg_->outbound.final_reply_timeout : cfg_->outbound.command_timeout);
}

void OutboundConnection::drop_stream(bool graceful) {
  if (stream_) {
    stream_->detach();
    if (graceful) stream_->close();
    else stream_->abort();
    stream_ = nullptr;
  }
  close_body();
}

void OutboundConnection::close_body() {
  if (body_fd_ >= 0) ::close(body_fd_);
  body_fd_ = -1;
  body_active_ = false;
}

void OutboundConnection::attempt_failed(const std::string& why) {
  spdlog::info("delivery job={} dest={} {}", job_.id, esc(job_.dest), esc(why));
  last_error_ = why;
  drop_stream(false);
  uv_timer_stop(&timer_);
  try_next();
}

// --- StreamHandler --------------------------------------------------------------------------

void OutboundConnection::on_stream_connected(int status) {
  if (status < 0) {
    stream_->detach();
    stream_ = nullptr;
    return attempt_failed("connect to " + remote_ + ": " + uv_strerror(status));
  }
  smtp::SmtpClientSession::Options o;
  o.helo_name = cfg_->hostname;
  o.tls = cur_.no_tls ? TlsLevel::kNone : job_.tls;
  o.tls_possible = w_.runtime().tls.current(tls::Role::kOutboundMta) != nullptr;
  o.keep_open = cfg_->outbound.connection_cache_time.count() > 0;
  session_ = std::make_unique<smtp::SmtpClientSession>(o, client_messages(job_.msgs));
  session_->set_downgrader([this](smtp::ClientMessage& m) { return downgrade(m); });
  arm_timer(cfg_->outbound.command_timeout);
}

void OutboundConnection::on_stream_data(std::string_view bytes) {
  if (!session_) return;
  auto before = session_->state();
  session_->feed(bytes);
  if (session_->state() != before || session_->has_output()) arm_for_state();  // a reply is progress
  drive();
}

void OutboundConnection::on_stream_tls_ready() {
  auto& rt = w_.runtime();
  rt.counters.tls_handshakes_outbound.fetch_add(1);
  auto* e = stream_->engine();
  SSL* ssl = e->ssl();
  bool verified = SSL_get0_peer_certificate(ssl) != nullptr && SSL_get_verify_result(ssl) == X509_V_OK;
  spdlog::info("delivery job={} relay={} tls version={} cipher={} policy={} verified={} resumed={}", job_.id,
               esc(remote_), e->version(), e->cipher(), level_name(job_.tls), verified ? "yes" : "no",
               SSL_session_reused(ssl) ? "yes" : "no");
  if (job_.tls == TlsLevel::kVerify && !verified) {  // never MAIL under verify without a verified peer
    session_->connection_lost("TLS with " + remote_ + ": peer not verified");
    tls_failed_ = true;
    return drive();
  }
  session_->tls_started();
  arm_for_state();
  drive();
}

void OutboundConnection::on_stream_writable() {
  if (body_active_) stream_body();
}

void OutboundConnection::on_stream_end(tls::StreamEnd why, const std::string& detail) {
  bool in_handshake = stream_ && stream_->tls_started() && !stream_->tls_ready();
  if (why == tls::StreamEnd::kTlsError && in_handshake) {
    w_.runtime().counters.tls_failures_outbound.fetch_add(1);
    tls_failed_ = true;
  }
  if (stream_) stream_->detach();
  stream_ = nullptr;
  close_body();
  std::string what = why == tls::StreamEnd::kTlsError ? "TLS with " + remote_ + " failed: " + detail
                                                      : "connection to " + remote_ + ": " + tls::stream_end_name(why) +
                                                            (detail.empty() ? "" : " (" + detail + ")");
  if (!session_) return attempt_failed(what);
  session_->connection_lost(what);
  drive();
}

void OutboundConnection::on_stream_closed() { stream_ = nullptr; }

// --- TLS ------------------------------------------------------------------------------------

// The generation is the one of the context the connection was made with, not whatever is current
// when the session is stored: a reload in between must not file an old session under the new key.
std::string OutboundConnection::tls_session_key(uint64_t generation) const {
  return dns::addr_to_string(cur_.addr) + "|" + cur_.host + "|" + level_name(job_.tls) + "|" +
         std::to_string(generation);
}

void OutboundConnection::start_tls() {
  auto ctx = w_.runtime().tls.current(tls::Role::kOutboundMta);
  bool literal = is_ip_literal(cur_.host);  // no SNI for an address; verify it as an IP
  std::string key = tls_session_key(ctx ? ctx->generation : 0);
  std::string host = cur_.host;
  bool verify = job_.tls == TlsLevel::kVerify;
  std::string setup_error;
  auto configure = [&](SSL* ssl) {
    if (verify) {
      SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
      int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str())
                       : SSL_set1_host(ssl, host.c_str());
      if (ok != 1) setup_error = "cannot set the name to verify (" + host + ")";
    }
    // Two guards: the cache key (address, host, policy, generation), and the session-id
    // context that offer_client_session() stamps on every session and checks before offering.
    SSL_SESSION* s = w_.runtime().tls_sessions.get(key);
    tls::offer_client_session(ssl, *ctx, verify ? host : "", s);
    if (s) SSL_SESSION_free(s);
  };
  if (!stream_->start_tls(ctx, false, literal ? "" : host, configure)) return;  // on_stream_end told us
  if (!setup_error.empty()) session_->connection_lost("TLS setup failed: " + setup_error);
}

const JobMessage* OutboundConnection::job_message(const std::string& qid) const {
  for (auto& jm : job_.msgs)
    if (jm.qid == qid) return &jm;
  return nullptr;
}

// 8-bit content for a server without 8BITMIME: the message converted to 7-bit MIME in memory
// (RFC 6152 section 3), streamed instead of the queue file.
bool OutboundConnection::downgrade(smtp::ClientMessage& m) {
  const JobMessage* jm = job_message(m.qid);
  std::string original, converted;
  bool read = jm && queue::Spool::read_message(jm->path, jm->size, original);
  if (read && jm->env) queue::apply_scan_edits(*jm->env, original);
  if (!read || !smtp::downgrade_to_7bit(original, converted)) {
    spdlog::info("queue_id={} relay={} no 8BITMIME and the message {}", m.qid, esc(remote_),
                 !read ? "could not be read for conversion" : "cannot be converted to 7-bit MIME");
    return false;
  }
  spdlog::info("queue_id={} relay={} no 8BITMIME: converted to 7-bit MIME size={} converted_size={}", m.qid, esc(remote_),
               m.size, converted.size());
  m.size = converted.size();
  m.downgraded = true;
  converted_[m.qid] = std::move(converted);
  return true;
}

// --- the session ----------------------------------------------------------------------------

void OutboundConnection::drive() {
  if (driving_) {  // a callback from inside (a failed write, a failed start_tls) asks again
    redrive_ = true;
    return;
  }
  driving_ = true;
  do {
    redrive_ = false;
    drive_once();
  } while (redrive_ && !finished_);
  driving_ = false;
}

void OutboundConnection::drive_once() {
  if (!session_) return;
  // Each result as soon as the session has it: on disk before the job ends (issue 9).
  auto rs = session_->take_results();
  if (!rs.empty() && job_.record) job_.record(rs, remote_);
  for (auto& r : rs) results_.push_back(std::move(r));
  std::string out = session_->take_output();
  if (!out.empty() && stream_) stream_->write(out);
  if (stream_ && session_->wants_starttls() && !stream_->tls_started()) start_tls();
  if (stream_ && session_->wants_body() && !body_active_) return begin_body();
  if (session_->done() || (session_->idle() && has_job_)) return session_finished();
}

void OutboundConnection::begin_body() {
  const auto& m = session_->current();
  auto conv = converted_.find(m.qid);
  if (m.downgraded && conv != converted_.end()) {  // the 7-bit MIME version, from memory
    body_mem_ = std::move(conv->second);
    converted_.erase(conv);
    body_mem_pos_ = 0;
    body_left_ = body_mem_.size();
    edit_left_ = -1;  // the converted copy holds the edits already
  } else {
    const JobMessage* jm = job_message(m.qid);
    std::string path = jm ? jm->path : std::string();
    body_left_ = jm ? jm->size : 0;  // the queue file's first `size` bytes; its envelope follows
    edit_left_ = -1;
    if (jm && jm->env && queue::has_subject_edit(*jm->env, jm->size)) {  // the Subject tag, sent at its offset
      edit_left_ = jm->env->subject_at;
      edit_text_ = jm->env->subject_edit;
    }
    body_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (body_fd_ < 0) {
      session_->connection_lost("cannot read queue file " + path + ": " + std::strerror(errno));
      redrive_ = true;
      return;
    }
  }
  stuffer_ = smtp::DotStuffer();
  body_active_ = true;
  session_->body_started();
  if (!m.downgraded) {  // the gate's header first (the converted copy already holds it)
    const JobMessage* jm = job_message(m.qid);
    std::string prefix = scan_prefix(jm ? jm->env.get() : nullptr);
    if (!prefix.empty() && session_->use_bdat()) {
      stream_->write(prefix);
    } else if (!prefix.empty()) {
      std::string stuffed;
      stuffer_.stuff(prefix, stuffed);
      stream_->write(stuffed);
    }
  }
  arm_for_state();
  stream_body();
}

void OutboundConnection::stream_body() {
  char buf[64 * 1024];
  while (body_active_ && stream_ && stream_->writable()) {
    if (session_->done()) {  // the server ended it meanwhile: stop streaming, report
      close_body();
      return drive();
    }
    if (edit_left_ == 0) {  // the file's bytes before the Subject edit are out: the edit now
      edit_left_ = -1;
      if (session_->use_bdat()) {
        stream_->write(edit_text_);
      } else {
        std::string stuffed;
        stuffer_.stuff(edit_text_, stuffed);
        stream_->write(stuffed);
      }
      continue;
    }
    size_t want = static_cast<size_t>(std::min<uint64_t>(sizeof buf, body_left_));
    if (edit_left_ > 0) want = std::min<size_t>(want, static_cast<size_t>(edit_left_));
    ssize_t n = 0;
    if (want > 0 && body_fd_ >= 0) {
      n = ::read(body_fd_, buf, want);
    } else if (want > 0) {
      std::memcpy(buf, body_mem_.data() + body_mem_pos_, want);
      body_mem_pos_ += want;
      n = static_cast<ssize_t>(want);
    }
    if (n < 0 || (n == 0 && body_left_ > 0)) {
      if (n < 0 && errno == EINTR) continue;
      close_body();
      session_->connection_lost(n < 0 ? std::string("queue file read error: ") + std::strerror(errno)
                                      : std::string("queue file shorter than its message"));
      return drive();
    }
    body_left_ -= static_cast<uint64_t>(n);
    if (edit_left_ > 0) edit_left_ -= n;
    if (n == 0) {
      std::string tail;
      if (!session_->use_bdat()) stuffer_.finish(tail);
      if (!tail.empty()) stream_->write(tail);
      close_body();
      body_mem_.clear();
      body_mem_.shrink_to_fit();
      session_->body_sent();
      arm_for_state();  // the final reply: outbound.final_reply_timeout
      return drive();
    }
    if (session_->use_bdat()) {
      stream_->write(std::string_view(buf, static_cast<size_t>(n)));
    } else {
      std::string stuffed;
      stuffer_.stuff(std::string_view(buf, static_cast<size_t>(n)), stuffed);
      stream_->write(stuffed);
    }
  }
  if (body_active_ && !stream_) {  // the stream failed under a write: on_stream_end reported it
    close_body();
    drive();
  }
  // Above the high-water mark: on_stream_writable() calls stream_body() again.
}

void OutboundConnection::session_finished() {
  uv_timer_stop(&timer_);
  if (stream_ && stream_->tls_ready()) {
    // A copy: OpenSSL marks the SSL's own session unresumable if that SSL is later freed without
    // close_notify (a cached connection aborted at drain, a lost connection).
    SSL_SESSION* sess = SSL_SESSION_dup(SSL_get0_session(stream_->engine()->ssl()));
    spdlog::debug("delivery job={} relay={} tls session resumable={}", job_.id, esc(remote_),
                  sess && SSL_SESSION_is_resumable(sess) ? "yes" : "no");
    w_.runtime().tls_sessions.put(tls_session_key(stream_->engine()->context().generation), sess);
  }
  if (session_->host_failed()) {
    std::string why = session_->host_failure();
    bool retry_plain = tls_failed_ && job_.tls == TlsLevel::kMay && !cur_.no_tls;
    if (retry_plain) {
      Candidate again = cur_;
      again.no_tls = true;
      cands_.insert(cands_.begin() + static_cast<long>(next_), again);
      why += " (retrying in plaintext: policy may)";
    }
    tls_failed_ = (tls_failed_ && !retry_plain) ||
                  (job_.tls >= TlsLevel::kEncrypt && why.find("TLS") != std::string::npos);
    return attempt_failed("host " + remote_ + ": " + why);
  }
  for (auto& r : session_->take_results()) results_.push_back(std::move(r));
  if (session_->idle() && has_job_ && stream_) {
    bool keep = ++jobs_done_ < kMaxJobsPerConnection && !w_.draining();
    report(keep);
    if (keep) return park();
    session_->quit();
    return drive();
  }
  drop_stream(true);  // QUIT and close_notify still go out, within the close deadline
  report();
  finish();
}

// Keeps the connection open for the next job to the same destination (connection cache).
void OutboundConnection::park() {
  parked_ = true;
  w_.park(job_.dest, this);
  arm_timer(cfg_->outbound.connection_cache_time);
}

void OutboundConnection::take_job(DeliveryJob job, Done done) {
  parked_ = false;
  job_ = std::move(job);
  done_ = std::move(done);
  has_job_ = true;
  results_.clear();
  converted_.clear();
  arm_timer(cfg_->outbound.command_timeout);
  session_->reuse(client_messages(job_.msgs));
  drive();
}

void OutboundConnection::finish_all(smtp::Outcome o, const std::string& status, const std::string& why) {
  for (auto& m : job_.msgs)
    for (size_t idx : m.rcpts) {
      smtp::RcptResult r;
      r.qid = m.qid;
      r.index = idx;
      r.outcome = o;
      r.status = status;
      r.diag = why;
      results_.push_back(std::move(r));
    }
  remote_.clear();
  report();
  drop_stream(false);
  finish();
}

// Answers the current job, exactly once.
void OutboundConnection::report(bool cached) {
  if (!has_job_) return;
  has_job_ = false;
  JobResult jr;
  jr.id = job_.id;
  jr.dest = job_.dest;
  for (auto& m : job_.msgs) jr.qids.push_back(m.qid);
  jr.results = std::move(results_);
  results_.clear();
  jr.remote = remote_;
  jr.cached_on = cached ? static_cast<int>(w_.index()) : -1;
  Done done = std::move(done_);
  done_ = nullptr;
  done(std::move(jr));
}

// No more jobs on this object: it is deleted once its timer is closed. A stream still closing
// (QUIT, close_notify) finishes on its own, detached.
void OutboundConnection::finish() {
  if (finished_) return;
  finished_ = true;
  *alive_ = false;
  if (parked_) {
    w_.unpark(this);
    parked_ = false;
  }
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<OutboundConnection*>(h->data);
    self->timer_open_ = false;
    self->maybe_delete();
  });
}

void OutboundConnection::maybe_delete() {
  if (timer_open_ || !finished_ || driving_) return;
  w_.outbound_finished(this);
  delete this;
}

void OutboundConnection::abort() {
  if (finished_) return;
  has_job_ = false;  // nothing is reported: the scheduler stops with the daemon
  if (session_) session_->connection_lost("shutting down");
  drop_stream(false);
  finish();
}

}  // namespace postern::delivery
