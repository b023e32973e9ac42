// inbound_connection.cpp — the I/O driver of the inbound SMTP session. Security-sensitive: the
// STARTTLS switch. The 220 goes out in plaintext, the session has already discarded every
// buffered plaintext byte, and from then on every byte read goes to the TLS engine.
#include "mta/server/inbound_connection.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <ctime>

#include "base/time_format.h"
#include "mta/worker.h"

namespace postern::mta {
namespace {

constexpr size_t kWriteHighWater = 256 * 1024;
constexpr size_t kInputHighWater = 64 * 1024;

struct WriteReq {
  uv_write_t req;
  std::string data;
};

}  // namespace

void InboundConnection::accept(Worker& w, uv_stream_t* server) {
  auto* c = new InboundConnection(w, w.runtime().config.load());
  if (!c->start(server)) c->close();
}

InboundConnection::InboundConnection(Worker& w, std::shared_ptr<const Config> cfg)
    : w_(w), cfg_(std::move(cfg)), started_(std::chrono::steady_clock::now()) {
  uv_tcp_init(w_.loop(), &tcp_);
  tcp_.data = this;
  uv_timer_init(w_.loop(), &timer_);
  timer_.data = this;
  handles_open_ = 2;
  id_ = w_.register_conn(this);
}

InboundConnection::~InboundConnection() {
  w_.unregister_conn(id_);
  if (ip_counted_) w_.runtime().ip_limits.release(ip_);
  w_.runtime().counters.sessions_active.fetch_sub(1);
}

bool InboundConnection::start(uv_stream_t* server) {
  auto& rt = w_.runtime();
  rt.counters.sessions_active.fetch_add(1);
  rt.counters.sessions_total.fetch_add(1);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) return false;
  uv_tcp_nodelay(&tcp_, 1);
  sockaddr_storage ss{};
  int len = sizeof ss;
  smtp::ClientInfo ci;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      std::memcpy(ci.addr, &sin->sin_addr, 4);
      ci.family = AF_INET;
      inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    } else if (ss.ss_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
      std::memcpy(ci.addr, &sin6->sin6_addr, 16);
      ci.family = AF_INET6;
      inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
      if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {  // treat ::ffff:a.b.c.d as IPv4
        std::memmove(ci.addr, ci.addr + 12, 4);
        ci.family = AF_INET;
        inet_ntop(AF_INET, ci.addr, buf, sizeof buf);
      }
    }
    ci.ip = buf;
  }
  ip_ = ci.ip;
  bool tls_ok = cfg_->smtp.starttls && rt.inbound.current() != nullptr;
  session_ = std::make_unique<smtp::SmtpServerSession>(cfg_, ci, *this, tls_ok);
  spdlog::info("session={} connect client={} worker={}", id_, ip_, w_.index());
  if (rt.counters.sessions_active.load() > cfg_->smtp.max_sessions) {
    rt.counters.sessions_refused.fetch_add(1);
    spdlog::warn("session={} client={} refused: too many sessions ({})", id_, ip_, cfg_->smtp.max_sessions);
    send_plain("421 4.3.2 " + cfg_->hostname + " Too many connections, try again later\r\n");
    close_after_write_ = true;
    return true;
  }
  if (!rt.ip_limits.acquire(ip_, cfg_->smtp.max_sessions_per_ip)) {
    rt.counters.sessions_refused.fetch_add(1);
    spdlog::warn("session={} client={} refused: too many sessions from this address", id_, ip_);
    send_plain("421 4.7.0 " + cfg_->hostname + " Too many connections from your host\r\n");
    close_after_write_ = true;
    return true;
  }
  ip_counted_ = true;
  send_plain(session_->greeting());
  resume_reading();
  arm_timer();
  return true;
}

void InboundConnection::alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<InboundConnection*>(h->data);
  *buf = uv_buf_init(c->w_.read_buffer(), 64 * 1024);
}

void InboundConnection::read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<InboundConnection*>(s->data);
  if (n == 0) return;  // EAGAIN
  if (n < 0) {
    if (n != UV_EOF) spdlog::info("session={} client={} read error: {}", c->id_, c->ip_, uv_strerror(static_cast<int>(n)));
    c->session_->connection_lost();
    c->close();
    return;
  }
  c->on_bytes(buf->base, static_cast<size_t>(n));
}

void InboundConnection::on_bytes(const char* data, size_t n) {
  if (closing_) return;
  if (!tls_) {
    session_->feed(std::string_view(data, n));
  } else {
    tls_->put_ciphertext(data, n);
    std::string plain;
    bool was_done = tls_->handshake_done();
    auto st = tls_->pump(plain);
    std::string cipher;
    tls_->take_ciphertext(cipher);
    if (!cipher.empty()) send_plain(std::move(cipher));
    if (st == tls::TlsEngine::Status::kError) {
      auto& rt = w_.runtime();
      if (!was_done) rt.counters.tls_failures.fetch_add(1);
      spdlog::warn("session={} client={} TLS error: {}", id_, ip_, tls_->error());
      session_->connection_lost();
      close_after_write_ = true;
      if (write_pending_ == 0) close();
      return;
    }
    if (!was_done && tls_->handshake_done()) {
      w_.runtime().counters.tls_handshakes.fetch_add(1);
      spdlog::info("session={} client={} starttls version={} cipher={} cert_generation={}", id_, ip_,
                   tls_->version(), tls_->cipher(), tls_->context().generation);
      session_->tls_established(tls_->version(), tls_->cipher(), tls_->cipher_bits());
    }
    if (!plain.empty()) session_->feed(plain);
    if (st == tls::TlsEngine::Status::kClosed) {
      session_->connection_lost();
      close();
      return;
    }
  }
  arm_timer();
  after_session();
}

// Sends what the session produced and acts on what it asked for.
void InboundConnection::after_session() {
  if (closing_) return;
  std::string out = session_->take_output();
  if (!out.empty()) send(out);
  if (session_->starttls_requested() && !tls_) {
    auto ctx = w_.runtime().inbound.current();
    tls_ = std::make_unique<tls::TlsEngine>(ctx, true);
    if (!tls_->valid()) {
      spdlog::error("session={} cannot start TLS: {}", id_, tls_->error());
      w_.runtime().counters.tls_failures.fetch_add(1);
      close_after_write_ = true;
    }
  }
  if (session_->closed()) {
    if (tls_ && tls_->handshake_done()) {
      tls_->shutdown();
      std::string cipher;
      tls_->take_ciphertext(cipher);
      if (!cipher.empty()) send_plain(std::move(cipher));
    }
    close_after_write_ = true;
    if (write_pending_ == 0) close();
    return;
  }
  maybe_pause_reading();
}

void InboundConnection::send(std::string_view data) {
  if (!tls_ || !tls_->handshake_done()) return send_plain(std::string(data));
  std::string cipher;
  if (tls_->seal(data, cipher) != tls::TlsEngine::Status::kOk) {
    spdlog::warn("session={} TLS write failed: {}", id_, tls_->error());
    return close();
  }
  send_plain(std::move(cipher));
}

void InboundConnection::send_plain(std::string data) {
  if (closing_ || data.empty()) return;
  auto* wr = new WriteReq;
  wr->data = std::move(data);
  wr->req.data = this;
  uv_buf_t b = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  write_pending_ += wr->data.size();
  int r = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, write_cb);
  if (r != 0) {
    write_pending_ -= wr->data.size();
    delete wr;
    session_->connection_lost();
    close();
  }
}

void InboundConnection::write_cb(uv_write_t* req, int status) {
  auto* wr = reinterpret_cast<WriteReq*>(req);
  auto* c = static_cast<InboundConnection*>(req->data);
  c->write_pending_ -= wr->data.size();
  delete wr;
  if (c->closing_) return;
  if (status < 0) {
    c->session_->connection_lost();
    c->close();
    return;
  }
  if (c->close_after_write_ && c->write_pending_ == 0) {
    c->close();
    return;
  }
  if (c->write_pending_ < kWriteHighWater / 2) c->resume_reading();
}

void InboundConnection::maybe_pause_reading() {
  bool pause = write_pending_ > kWriteHighWater ||
               (!session_->wants_input() && session_->buffered_input() > kInputHighWater);
  if (pause && reading_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    reading_ = false;
  } else if (!pause) {
    resume_reading();
  }
}

void InboundConnection::resume_reading() {
  if (reading_ || closing_ || close_after_write_) return;
  if (write_pending_ > kWriteHighWater) return;
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), alloc_cb, read_cb);
  reading_ = true;
}

void InboundConnection::arm_timer() {
  if (closing_) return;
  using namespace std::chrono;
  auto limit = session_->in_body() ? cfg_->smtp.data_timeout : cfg_->smtp.idle_timeout;
  auto left = duration_cast<milliseconds>(cfg_->smtp.max_session_duration - (steady_clock::now() - started_));
  auto t = std::max<milliseconds>(std::min(limit, left), milliseconds(1));
  uv_timer_start(&timer_, timer_cb, static_cast<uint64_t>(t.count()), 0);
}

void InboundConnection::timer_cb(uv_timer_t* t) {
  auto* c = static_cast<InboundConnection*>(t->data);
  if (c->session_->awaiting_commit()) return;  // re-armed when the commit answers
  bool expired = std::chrono::steady_clock::now() - c->started_ >= c->cfg_->smtp.max_session_duration;
  spdlog::info("session={} client={} {} in state {}", c->id_, c->ip_,
               expired ? "session duration limit" : "timeout", smtp::state_name(c->session_->state()));
  if (expired) c->session_->session_expired();
  else c->session_->timeout();
  if (c->tls_ && !c->tls_->handshake_done()) {  // timed out inside the handshake: just close
    c->close();
    return;
  }
  c->after_session();
}

void InboundConnection::drain() {
  if (closing_) return;
  session_->shutting_down();
  after_session();
}

void InboundConnection::force_close() {
  if (closing_) return;
  if (session_->awaiting_commit()) return;  // the commit answers soon; never drop a 250
  session_->timeout();
  after_session();
  close();
}

void InboundConnection::close() {
  if (closing_) return;
  closing_ = true;
  if (writer_) abort_message();
  spdlog::info("session={} disconnect client={} messages={}", id_, ip_,
               session_ ? session_->messages_accepted() : 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), close_cb);
}

void InboundConnection::close_cb(uv_handle_t* h) {
  auto* c = static_cast<InboundConnection*>(h->data);
  if (--c->handles_open_ == 0) delete c;
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

bool InboundConnection::write_body(std::string_view bytes) {
  return writer_ && writer_->write(bytes);
}

void InboundConnection::commit_message(const Envelope& env) {
  Worker* w = &w_;
  uint64_t id = id_;
  std::string qid = env.queue_id;
  auto& rt = w_.runtime();
  spdlog::debug("queue_id={} commit size={} nrcpt={}", qid, env.message_size, env.rcpts.size());
  w->commit_started();
  rt.spool->commit(std::move(writer_), env, [w, id, qid, &rt, env](bool ok) {
    (ok ? rt.counters.messages_accepted : rt.counters.messages_commit_failed).fetch_add(1);
    if (ok && rt.on_queued) rt.on_queued(env);
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
    spdlog::info("queue_id={} accepted client={} from=<{}> nrcpt={} size={}{}", env.queue_id, ip_,
                 env.mail_from, env.rcpts.size(), env.message_size, tls_ ? " tls=yes" : "");
  else
    spdlog::error("queue_id={} commit failed: answered 451", env.queue_id);
  session_->commit_done(ok);
  if (closing_) return;
  arm_timer();
  after_session();
}

void InboundConnection::abort_message() { writer_.reset(); }

}  // namespace postern::mta
