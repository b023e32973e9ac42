// inbound_connection.cpp — the I/O driver of the inbound SMTP session. Security-sensitive: the
// STARTTLS switch (the 220 goes out in plaintext, the session has already discarded every
// buffered plaintext byte, and from then on every byte read goes to TLS: TlsStream), and the
// deadlines that keep a slow or silent client from holding a session.
#include "mta/server/inbound_connection.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "base/log.h"
#include "base/time_format.h"
#include "mta/connection_host.h"
#include "mta/dns/resolver.h"
#include "policy/client_limits.h"
#include "scan/scan_service.h"

namespace postern::mta {
namespace {

constexpr size_t kInputHighWater = 64 * 1024;

tls::StreamLimits stream_limits(const Config& cfg) {
  tls::StreamLimits l;
  l.write_timeout = cfg.smtp.write_timeout;
  l.close_timeout = cfg.smtp.close_timeout;
  return l;
}

}  // namespace

void InboundConnection::accept(ConnectionHost& w, int fd) {
  auto* c = new InboundConnection(w, w.runtime().config.load());
  c->start(fd);
}

InboundConnection::InboundConnection(ConnectionHost& w, std::shared_ptr<const Config> cfg)
    : w_(w), cfg_(std::move(cfg)), started_(std::chrono::steady_clock::now()) {
  uv_timer_init(w_.loop(), &timer_);
  timer_.data = this;
  id_ = w_.register_conn(this);
  stream_ = tls::TlsStream::create(w_.loop(), this, stream_limits(*cfg_));
}

InboundConnection::~InboundConnection() {
  end_session();
  w_.unregister_conn(id_);
}

void InboundConnection::start(int fd) {
  auto& rt = w_.runtime();
  rt.counters.sessions_active.fetch_add(1);
  rt.counters.sessions_total.fetch_add(1);
  session_counted_ = true;
  if (stream_->open(fd) != 0) return;  // the stream closes; on_stream_closed() follows
  smtp::ClientInfo ci;
  ci.ip = stream_->peer_ip();
  stream_->peer_addr(ci.family, ci.addr);
  ip_ = ci.ip;
  bool tls_ok = cfg_->smtp.starttls && rt.tls.current(tls::Role::kInboundMta) != nullptr;
  policy::ClientAddress who{ci.addr, ci.family};
  bool hold = policy::greet_pause_applies(*cfg_, who);
  session_ = std::make_unique<smtp::SmtpServerSession>(cfg_, ci, *this, tls_ok, hold);
  spdlog::info("session={} connect client={} worker={}", id_, ip_, w_.index());
  if (!admit(policy::session_limit_exempt(*cfg_, who))) return;
  if (hold) {  // smtp.greet_pause: talking before the 220 gets 554 5.5.1 (see the session)
    uv_timer_start(&timer_, timer_cb, static_cast<uint64_t>(std::max<int64_t>(1, cfg_->smtp.greet_pause.count())), 0);
    return;
  }
  stream_->write(session_->greeting());
  arm_timer();
}

// The session limits, checked at connect: past them the client gets 421 and the stream closes.
bool InboundConnection::admit(bool exempt_per_ip) {
  auto& rt = w_.runtime();
  uint32_t limit = rt.session_limit.load();
  if (rt.counters.sessions_active.load() > limit) {
    spdlog::warn("session={} client={} refused: too many sessions ({})", id_, ip_, limit);
    refuse("421 4.3.2 " + cfg_->hostname + " Too many connections, try again later\r\n");
    return false;
  }
  if (exempt_per_ip) return true;  // smtp.session_limit_exceptions
  if (!rt.ip_limits.acquire(ip_, cfg_->smtp.max_sessions_per_ip)) {
    spdlog::warn("session={} client={} refused: too many sessions from this address", id_, ip_);
    refuse("421 4.7.0 " + cfg_->hostname + " Too many connections from your host\r\n");
    return false;
  }
  ip_counted_ = true;
  return true;
}

void InboundConnection::refuse(const std::string& reply) {
  w_.runtime().counters.sessions_refused.fetch_add(1);
  end_session();
  stream_->write(reply);
  stream_->close();
}

// The session is over (closed, lost, refused): its slots are free for the next client now, not
// when the socket has finished closing.
void InboundConnection::end_session() {
  auto& rt = w_.runtime();
  if (session_counted_ && session_) {
    if (session_->improper_pipelining()) rt.counters.improper_pipelining.fetch_add(1);
    if (session_->spoke_before_greeting()) rt.counters.pregreet.fetch_add(1);
  }
  if (ip_counted_) rt.ip_limits.release(ip_);
  ip_counted_ = false;
  if (session_counted_) rt.counters.sessions_active.fetch_sub(1);
  session_counted_ = false;
}

void InboundConnection::on_stream_data(std::string_view bytes) {
  if (!session_ || session_->closed()) return;
  session_->feed(bytes);
  after_session(session_->in_body());  // content bytes are progress; a half command line is not
}

void InboundConnection::on_stream_tls_ready() {
  auto& rt = w_.runtime();
  rt.counters.tls_handshakes.fetch_add(1);
  auto* e = stream_->engine();
  spdlog::info("session={} client={} starttls version={} cipher={} cert_generation={}", id_, ip_, e->version(),
               e->cipher(), e->context().generation);
  session_->tls_established(e->version(), e->cipher(), e->cipher_bits());
  after_session(true);
}

void InboundConnection::on_stream_end(tls::StreamEnd why, const std::string& detail) {
  auto& rt = w_.runtime();
  if (why == tls::StreamEnd::kTlsError && stream_->tls_started() && !stream_->tls_ready())
    rt.counters.tls_failures.fetch_add(1);
  if (why == tls::StreamEnd::kWriteTimeout || why == tls::StreamEnd::kWriteQueueFull)
    rt.counters.sessions_write_stalled.fetch_add(1);
  if (why != tls::StreamEnd::kEof)
    spdlog::info("session={} client={} {}{}{}", id_, ip_, tls::stream_end_name(why), detail.empty() ? "" : ": ",
                 esc(detail));
  if (session_) session_->connection_lost();
  scan_wait_.cancel();  // a verdict still to come is dropped
  if (writer_) abort_message();
  end_session();
}

void InboundConnection::on_stream_closed() {
  stream_ = nullptr;
  if (writer_) abort_message();
  spdlog::info("session={} disconnect client={} messages={}", id_, ip_, session_ ? session_->messages_accepted() : 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    delete static_cast<InboundConnection*>(h->data);
  });
}

// Sends what the session produced and acts on what it asked for. progressed: the deadline
// starts again (a reply was produced, content arrived, TLS came up).
void InboundConnection::after_session(bool progressed) {
  if (!stream_ || stream_->closing()) return;
  if (session_->closed()) end_session();  // before the last reply goes out: the client may reconnect at once
  std::string out = session_->take_output();
  if (!out.empty()) {
    stream_->write(out);
    progressed = true;
  }
  if (session_->starttls_requested() && !stream_->tls_started()) {
    auto ctx = w_.runtime().tls.current(tls::Role::kInboundMta);
    if (!stream_->start_tls(ctx, true)) {
      spdlog::error("session={} cannot start TLS", id_);
      w_.runtime().counters.tls_failures.fetch_add(1);
      return;
    }
  }
  if (session_->closed()) {
    end_session();
    uv_timer_stop(&timer_);
    stream_->close();  // close_notify and the last reply, within smtp.close_timeout
    return;
  }
  bool in_body = session_->in_body();
  if (in_body != was_in_body_) progressed = true;
  was_in_body_ = in_body;
  stream_->set_reading(session_->wants_input() || session_->buffered_input() <= kInputHighWater);
  if (progressed) arm_timer();
}

void InboundConnection::arm_timer() {
  using namespace std::chrono;
  if (session_->awaiting_scan() && scan_wait_.waiting()) {  // a 1 s tick checks the scan deadline
    auto left = duration_cast<milliseconds>(scan_wait_.deadline() - w_.runtime().clock->steady());
    auto t = std::clamp<milliseconds>(left, milliseconds(1), milliseconds(1000));
    uv_timer_start(&timer_, timer_cb, static_cast<uint64_t>(t.count()), 0);
    return;
  }
  auto limit = session_->in_body() ? cfg_->smtp.data_timeout : cfg_->smtp.idle_timeout;
  auto left = duration_cast<milliseconds>(cfg_->smtp.max_session_duration - (steady_clock::now() - started_));
  auto t = std::max<milliseconds>(std::min(limit, left), milliseconds(1));
  uv_timer_start(&timer_, timer_cb, static_cast<uint64_t>(t.count()), 0);
}

void InboundConnection::timer_cb(uv_timer_t* t) {
  auto* c = static_cast<InboundConnection*>(t->data);
  if (!c->stream_ || c->stream_->closing()) return;
  if (c->session_->greeting_held()) {  // the greeting pause is over
    c->session_->release_greeting();
    return c->after_session(true);
  }
  if (c->session_->awaiting_scan()) return c->scan_tick();
  if (c->session_->awaiting_commit()) return;  // re-armed when the commit answers
  bool expired = std::chrono::steady_clock::now() - c->started_ >= c->cfg_->smtp.max_session_duration;
  spdlog::info("session={} client={} {} in state {}", c->id_, c->ip_, expired ? "session duration limit" : "timeout",
               smtp::state_name(c->session_->state()));
  if (c->stream_->tls_started() && !c->stream_->tls_ready()) {  // timed out inside the handshake
    c->session_->connection_lost();
    c->end_session();
    c->stream_->abort();
    return;
  }
  if (expired) c->session_->session_expired();
  else c->session_->timeout();
  c->after_session(false);
}

void InboundConnection::drain() {
  if (!stream_ || stream_->closing()) return;
  session_->shutting_down();
  after_session(false);
}

void InboundConnection::force_close() {
  if (!stream_) return;
  if (session_ && session_->awaiting_commit()) return;  // the commit answers soon; never drop a 250
  if (session_ && !stream_->closing()) {
    session_->timeout();
    after_session(false);
  }
  if (stream_) stream_->abort();
}

// --- SessionHooks ---------------------------------------------------------------------------

std::string InboundConnection::new_queue_id() { return w_.runtime().spool->new_queue_id(); }

std::string InboundConnection::rfc5322_date() { return postern::rfc5322_date(w_.runtime().clock->unix_seconds()); }

int64_t InboundConnection::now_unix() { return w_.runtime().clock->unix_seconds(); }

bool InboundConnection::disk_below_floor() {
  return w_.runtime().spool_free_bytes.load() < cfg_->smtp.min_free_space;
}

bool InboundConnection::begin_message(const Envelope& env) {
  writer_ = w_.runtime().spool->open(env.queue_id);
  return writer_ != nullptr;
}

bool InboundConnection::write_body(std::string_view bytes) { return writer_ && writer_->write(bytes); }

// --- the scanning gate: the written, not yet committed file is scanned on a scan thread -------

policy::ScanFacts InboundConnection::scan_facts(const scan::Engine* engine, bool stale) const {
  policy::ScanFacts f;
  f.engine_version = scan::clamav_version();
  f.stale = stale;
  int64_t now = w_.runtime().clock->unix_seconds();
  if (engine)
    for (auto& s : engine->sets()) f.patterns.push_back({s.source, s.version, now - s.issued_at});
  return f;
}

namespace {

const char* verdict_word(scan::Verdict v) {
  return v == scan::Verdict::kClean ? "clean" : v == scan::Verdict::kInfected ? "infected" : "error";
}

// The scan thread, after an infected verdict under on_virus = "tag": the stored header section
// (bounded: max_header_size, Postern's Received: and folding on top) and where the tag goes.
policy::SubjectEdit find_subject(int fd, uint64_t len, uint64_t max_header, const std::string& tag) {
  size_t want = static_cast<size_t>(std::min<uint64_t>(len, max_header + 8192));
  std::string head(want, '\0');
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd, head.data() + got, want - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return {};  // unreadable: no tag (the header still says infected)
    got += static_cast<size_t>(n);
  }
  return policy::subject_edit(head, want == len, tag);
}

}  // namespace

bool InboundConnection::scan_message(const Envelope& env) {
  auto& rt = w_.runtime();
  if (!rt.scan || !writer_) return false;
  const ScanConfig& sc = cfg_->scan;
  auto lic = rt.licenses.load();
  auto av = lic ? lic->get(licensing::LicenseKind::kAntivirus).status.state : licensing::State::kNotActivated;
  switch (policy::pre_scan(sc, av)) {
    case policy::GatePre::kOff: return false;
    case policy::GatePre::kNotActivated: gate_answer(policy::not_activated_decision(sc), nullptr); return true;
    case policy::GatePre::kScan: break;
  }
  auto engine = rt.engines ? rt.engines->current() : nullptr;
  policy::ScanFacts facts = scan_facts(engine.get(), av == licensing::State::kExpired);
  scan::ScanResult fail;
  fail.error = "no_engine";
  int fd = engine ? writer_->open_for_read() : -1;
  if (engine && fd < 0) fail.error = "engine";
  if (fd >= 0) {
    ConnectionHost* w = &w_;
    uint64_t id = id_, len = writer_->bytes();
    uint64_t ticket = scan_wait_.begin(rt.clock->steady(), sc.timeout);
    std::string qid = env.queue_id;
    std::string tag = sc.on_virus == ScanAction::kTag ? sc.tag_subject : std::string();
    uint64_t max_header = cfg_->smtp.max_header_size;
    w->commit_started();  // the loop stays up until the verdict is in
    // The task owns fd and a reference to the engine; it finds the connection by id when it
    // answers (gone: the verdict is dropped), and the connection takes it only by its ticket.
    bool queued = rt.scan->pool().submit([w, id, fd, len, engine, facts, ticket, qid, tag, max_header] {
      scan::ScanResult r = engine->scan_fd(fd, len);
      policy::SubjectEdit subject;
      if (r.verdict == scan::Verdict::kInfected && !tag.empty()) subject = find_subject(fd, len, max_header, tag);
      ::close(fd);
      w->post([w, id, r, facts, ticket, qid, subject] {
        if (auto* c = w->find_conn(id)) c->scan_finished(ticket, qid, r, facts, subject);
        else spdlog::info("queue_id={} scan verdict={} after the client left: dropped, nothing queued", qid,
                          verdict_word(r.verdict));
        w->commit_answered();
      });
    });
    if (queued) {
      spdlog::debug("queue_id={} client={} scan queued size={}", qid, ip_, len);
      wait_facts_ = facts;
      arm_timer();  // the scan deadline's tick
      return true;
    }
    scan_wait_.cancel();
    ::close(fd);
    w->commit_answered();
    fail.error = "queue_full";
  }
  spdlog::warn("queue_id={} client={} not scanned: {}", env.queue_id, ip_, fail.error);
  gate_answer(policy::decide(sc, facts, fail), nullptr);
  return true;
}

void InboundConnection::scan_finished(uint64_t ticket, const std::string& qid, const scan::ScanResult& r,
                                      const policy::ScanFacts& facts, const policy::SubjectEdit& subject) {
  if (!session_ || !session_->awaiting_scan() || !scan_wait_.take(ticket)) {
    // The client left, or the deadline passed and scan.failure_action answered already.
    spdlog::info("queue_id={} session={} client={} late scan verdict={} ignored", qid, id_, ip_,
                 verdict_word(r.verdict));
    return;
  }
  gate_answer(policy::decide(cfg_->scan, facts, r, subject), &r);
  if (w_.draining() && !session_->awaiting_commit()) session_->shutting_down();  // refused while draining
  after_session(true);
}

// No verdict within scan.timeout + the margin (libclamav's own limit did not stop it, or the
// scan waited in the queue that long): scan.failure_action now; the verdict, when it comes, is
// refused by its ticket.
void InboundConnection::scan_tick() {
  if (!scan_wait_.expire(w_.runtime().clock->steady())) return arm_timer();
  scan::ScanResult r;
  r.timeout = true;
  r.error = "timeout";
  spdlog::warn("queue_id={} client={} no scan verdict within scan.timeout + {}s", session_->envelope().queue_id, ip_,
               ScanWait::kMargin.count());
  gate_answer(policy::decide(cfg_->scan, wait_facts_, r), nullptr);
  if (w_.draining() && !session_->awaiting_commit()) session_->shutting_down();
  after_session(true);
}

// Metrics and the log line, then the session commits, quarantines or answers.
void InboundConnection::gate_answer(const policy::GateDecision& d, const scan::ScanResult* r) {
  auto& m = w_.runtime().scan->metrics();
  m.verdict(d.verdict);
  if (r) m.observe(r->seconds);
  if (!d.failure.empty()) m.failure(d.failure);
  const auto& env = session_->envelope();
  spdlog::info("queue_id={} client={} scan verdict={}{}{} seconds={:.3f} action={}", env.queue_id, ip_, d.verdict,
               !d.signature.empty() ? " signature=" : d.failure.empty() ? "" : " failure=",
               esc(d.signature.empty() ? d.failure : d.signature),
               r ? r->seconds : 0.0,
               d.action == policy::GateAction::kCommit ? "deliver"
               : d.action == policy::GateAction::kQuarantine ? "quarantine"
               : d.action == policy::GateAction::kReject ? "reject" : "tempfail");
  smtp::ScanOutcome o;
  o.commit = d.action == policy::GateAction::kCommit || d.action == policy::GateAction::kQuarantine;
  o.quarantine = d.action == policy::GateAction::kQuarantine;
  if (!o.commit) w_.runtime().counters.gate_rejected.fetch_add(1);  // the dashboard's throughput graph
  o.signature = d.signature;
  o.header = d.header;
  o.reply = d.reply;
  o.subject_at = d.subject.at;
  o.subject_edit = d.subject.text;
  session_->scan_done(std::move(o));
}

void InboundConnection::commit_message(const Envelope& env) {
  ConnectionHost* w = &w_;
  uint64_t id = id_;
  std::string qid = env.queue_id;
  auto& rt = w_.runtime();
  spdlog::debug("queue_id={} commit size={} nrcpt={}", qid, env.message_size, env.rcpts.size());
  w->commit_started();
  rt.spool->commit(std::move(writer_), env, [w, id, qid, &rt, env](bool ok) {
    (ok ? rt.counters.messages_accepted : rt.counters.messages_commit_failed).fetch_add(1);
    if (ok && env.quarantined.empty() && rt.on_queued) rt.on_queued(env);
    if (ok && !env.quarantined.empty() && rt.on_quarantined) rt.on_quarantined(env);
    w->post([w, id, qid, ok] {
      if (auto* c = w->find_conn(id)) c->commit_finished(ok);
      else if (ok) spdlog::info("queue_id={} accepted after the client left (possible duplicate)", qid);
      w->commit_answered();
    });
  });
}

void InboundConnection::commit_finished(bool ok) {
  const auto& env = session_->envelope();
  if (ok)
    spdlog::info("queue_id={} accepted client={} from=<{}> nrcpt={} size={}{}", env.queue_id, ip_, esc(env.mail_from),
                 env.rcpts.size(), env.message_size, stream_ && stream_->tls_ready() ? " tls=yes" : "");
  else
    spdlog::error("queue_id={} commit failed: answered 451", env.queue_id);
  session_->commit_done(ok);
  if (w_.draining()) session_->shutting_down();  // SIGTERM came while it was committed or scanned: 421 now
  after_session(true);
}

void InboundConnection::abort_message() { writer_.reset(); }

smtp::RcptCheck InboundConnection::check_recipient(const std::string& address) {
  return w_.verify_recipient(address, id_);
}

void InboundConnection::recipient_checked(const smtp::RcptCheck& c) {
  if (!session_) return;
  session_->recipient_checked(c);
  after_session(true);
}

}  // namespace postern::mta
