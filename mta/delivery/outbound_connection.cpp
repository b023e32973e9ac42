// outbound_connection.cpp — the I/O driver of outbound delivery. Security-sensitive: the TLS
// policy. Under encrypt/verify the session never sends MAIL before the handshake succeeded (the
// session enforces it); "verify" adds chain and host name checks here; under "may" a failed
// handshake is retried once in plaintext on the same address, as other MTAs do.
#include "mta/delivery/outbound_connection.h"

#include "mta/client/mime_downgrade.h"
#include "mta/queue/spool.h"

#include <fcntl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>

#include "mta/worker.h"

namespace postern::delivery {
namespace {

constexpr size_t kWriteHighWater = 256 * 1024;
constexpr size_t kMaxCandidates = 10;
constexpr unsigned kMaxJobsPerConnection = 100;

struct WriteReq {
  uv_write_t req;
  std::string data;
  OutboundConnection* owner;
};

}  // namespace

void OutboundConnection::start(mta::Worker& w, DeliveryJob job, Done done) {
  auto* c = new OutboundConnection(w, std::move(job), std::move(done));
  c->resolve();
}

OutboundConnection::OutboundConnection(mta::Worker& w, DeliveryJob job, Done done)
    : w_(w), job_(std::move(job)), done_(std::move(done)), cfg_(w.runtime().config.load()) {
  uv_timer_init(w_.loop(), &timer_);
  timer_.data = this;
  handles_ = 1;
  w_.outbound_started(this);
}

void OutboundConnection::resolve() {
  auto& res = w_.resolver();
  auto cb = [this](dns::Answer a) { on_answer(std::move(a)); };
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
  tls_.reset();
  session_.reset();
  tcp_ = new uv_tcp_t;
  uv_tcp_init(w_.loop(), tcp_);
  tcp_->data = this;
  ++handles_;
  auto* req = new uv_connect_t;
  req->data = this;
  int r = uv_tcp_connect(req, tcp_, reinterpret_cast<const sockaddr*>(&cur_.addr), [](uv_connect_t* rq, int status) {
    auto* self = static_cast<OutboundConnection*>(rq->data);
    delete rq;
    if (status == UV_ECANCELED) return;  // closed meanwhile
    self->on_connected(status);
  });
  if (r != 0) {
    delete req;
    attempt_failed("connect to " + remote_ + ": " + uv_strerror(r));
    return;
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
    self->session_->connection_lost("timeout talking to " + self->remote_);
    self->drive();
  }, static_cast<uint64_t>(std::max<int64_t>(1, t.count())), 0);
}

void OutboundConnection::close_tcp() {
  if (!tcp_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_), [](uv_handle_t* h) {
    auto* self = static_cast<OutboundConnection*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    --self->handles_;
    self->maybe_delete();
  });
  tcp_ = nullptr;
  close_when_written_ = false;
  if (body_fd_ >= 0) {
    ::close(body_fd_);
    body_fd_ = -1;
  }
  body_active_ = false;
}

void OutboundConnection::attempt_failed(const std::string& why) {
  spdlog::info("delivery job={} dest={} {}", job_.id, job_.dest, why);
  last_error_ = why;
  close_tcp();
  uv_timer_stop(&timer_);
  try_next();
}

void OutboundConnection::on_connected(int status) {
  if (status < 0) return attempt_failed("connect to " + remote_ + ": " + uv_strerror(status));
  uv_tcp_nodelay(tcp_, 1);  // command/reply turns: Nagle plus delayed ACK would add 40 ms each
  smtp::SmtpClientSession::Options o;
  o.helo_name = cfg_->hostname;
  o.tls = cur_.no_tls ? TlsLevel::kNone : job_.tls;
  o.tls_possible = w_.runtime().outbound.current() != nullptr;
  o.keep_open = cfg_->outbound.connection_cache_time.count() > 0;
  std::vector<smtp::ClientMessage> msgs;
  for (auto& m : job_.msgs) msgs.push_back({m.qid, m.env.get(), m.rcpts, m.size});
  session_ = std::make_unique<smtp::SmtpClientSession>(o, std::move(msgs));
  session_->set_downgrader([this](smtp::ClientMessage& m) { return downgrade(m); });
  uv_read_start(reinterpret_cast<uv_stream_t*>(tcp_),
                [](uv_handle_t* h, size_t, uv_buf_t* b) {
                  auto* self = static_cast<OutboundConnection*>(h->data);
                  *b = uv_buf_init(self->w_.read_buffer(), 64 * 1024);
                },
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
                  auto* self = static_cast<OutboundConnection*>(s->data);
                  if (n == 0) return;
                  if (n < 0) {
                    self->session_->connection_lost("connection to " + self->remote_ + " closed (" +
                                                    uv_strerror(static_cast<int>(n)) + ")");
                    self->drive();
                    return;
                  }
                  self->on_bytes(b->base, static_cast<size_t>(n));
                });
  arm_timer(cfg_->outbound.command_timeout);
}

void OutboundConnection::on_bytes(const char* data, size_t n) {
  arm_timer(cfg_->outbound.command_timeout);
  if (!tls_) {
    session_->feed(std::string_view(data, n));
    return drive();
  }
  tls_->put_ciphertext(data, n);
  std::string plain, cipher;
  bool was_done = tls_->handshake_done();
  auto st = tls_->pump(plain);
  tls_->take_ciphertext(cipher);
  if (!cipher.empty()) send_raw(std::move(cipher));
  if (st == tls::TlsEngine::Status::kError) {
    if (!was_done) {
      w_.runtime().counters.tls_failures_outbound.fetch_add(1);
      tls_failed_ = true;
    }
    session_->connection_lost("TLS with " + remote_ + " failed: " + tls_->error());
    return drive();
  }
  if (!was_done && tls_->handshake_done()) {
    w_.runtime().counters.tls_handshakes_outbound.fetch_add(1);
    spdlog::info("delivery job={} relay={} tls version={} cipher={} verified={}", job_.id, remote_,
                 tls_->version(), tls_->cipher(), job_.tls == TlsLevel::kVerify ? "yes" : "no");
    session_->tls_started();
  }
  if (!plain.empty()) session_->feed(plain);
  if (st == tls::TlsEngine::Status::kClosed) session_->connection_lost("TLS closed by " + remote_);
  drive();
}

void OutboundConnection::start_tls() {
  auto ctx = w_.runtime().outbound.current();
  bool literal = cur_.host.find_first_not_of("0123456789.:") == std::string::npos;
  tls_ = std::make_unique<tls::TlsEngine>(ctx, false, literal ? "" : cur_.host);
  if (!tls_->valid()) {
    session_->connection_lost("TLS setup failed: " + tls_->error());
    return;
  }
  SSL* ssl = tls_->ssl();
  if (job_.tls == TlsLevel::kVerify) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    if (literal) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), cur_.host.c_str());
    else SSL_set1_host(ssl, cur_.host.c_str());
  }
  std::string key = dns::addr_to_string(cur_.addr);
  if (SSL_SESSION* s = w_.tls_session(key)) SSL_set_session(ssl, s);
  std::string plain, cipher;
  tls_->pump(plain);  // writes the ClientHello
  tls_->take_ciphertext(cipher);
  send_raw(std::move(cipher));
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
  bool read = jm && queue::Spool::read_message(jm->path, m.size, original);
  if (!read || !smtp::downgrade_to_7bit(original, converted)) {
    spdlog::info("queue_id={} relay={} no 8BITMIME and the message {}", m.qid, remote_,
                 !read ? "could not be read for conversion" : "cannot be converted to 7-bit MIME");
    return false;
  }
  spdlog::info("queue_id={} relay={} no 8BITMIME: converted to 7-bit MIME size={} converted_size={}", m.qid, remote_,
               m.size, converted.size());
  m.size = converted.size();
  m.downgraded = true;
  converted_[m.qid] = std::move(converted);
  return true;
}

void OutboundConnection::drive() {
  if (!session_ || !tcp_) return;
  // Each result as soon as the session has it: on disk before the job ends (issue 9).
  auto rs = session_->take_results();
  if (!rs.empty() && job_.record) job_.record(rs, remote_);
  for (auto& r : rs) results_.push_back(std::move(r));
  std::string out = session_->take_output();
  if (!out.empty()) send(out);
  if (session_->wants_starttls() && !tls_) start_tls();
  if (session_->wants_body() && !body_active_) {
    const auto& m = session_->current();
    auto conv = converted_.find(m.qid);
    if (m.downgraded && conv != converted_.end()) {  // the 7-bit MIME version, from memory
      body_mem_ = std::move(conv->second);
      converted_.erase(conv);
      body_mem_pos_ = 0;
      body_left_ = body_mem_.size();
    } else {
      const JobMessage* jm = job_message(m.qid);
      std::string path = jm ? jm->path : std::string();
      body_left_ = jm ? jm->size : 0;  // the queue file's first `size` bytes; its envelope follows
      body_fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (body_fd_ < 0) {
        session_->connection_lost("cannot read queue file " + path + ": " + std::strerror(errno));
        return drive();
      }
    }
    stuffer_ = smtp::DotStuffer();
    body_active_ = true;
    session_->body_started();
    stream_body();
    return;
  }
  if (session_->done() || (session_->idle() && has_job_)) session_finished();
}

void OutboundConnection::stream_body() {
  if (!body_active_) return;
  char buf[64 * 1024];
  while (write_pending_ < kWriteHighWater) {
    if (!tcp_ || session_->done()) {  // a write failed: stop streaming, report
      body_active_ = false;
      return drive();
    }
    size_t want = static_cast<size_t>(std::min<uint64_t>(sizeof buf, body_left_));
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
      body_active_ = false;
      session_->connection_lost(n < 0 ? std::string("queue file read error: ") + std::strerror(errno)
                                      : std::string("queue file shorter than its message"));
      return drive();
    }
    body_left_ -= static_cast<uint64_t>(n);
    if (n == 0) {
      std::string tail;
      if (!session_->use_bdat()) stuffer_.finish(tail);
      if (!tail.empty()) send(tail);
      if (body_fd_ >= 0) ::close(body_fd_);
      body_fd_ = -1;
      body_mem_.clear();
      body_mem_.shrink_to_fit();
      body_active_ = false;
      session_->body_sent();
      return drive();
    }
    if (session_->use_bdat()) {
      send(std::string_view(buf, static_cast<size_t>(n)));
    } else {
      std::string stuffed;
      stuffer_.stuff(std::string_view(buf, static_cast<size_t>(n)), stuffed);
      send(stuffed);
    }
  }
  // Above the high-water mark: the write callback calls stream_body() again.
}

void OutboundConnection::send(std::string_view data) {
  if (!tls_ || !tls_->handshake_done()) return send_raw(std::string(data));
  std::string cipher;
  if (tls_->seal(data, cipher) != tls::TlsEngine::Status::kOk)
    return session_->connection_lost("TLS write failed: " + tls_->error());
  send_raw(std::move(cipher));
}

void OutboundConnection::send_raw(std::string data) {
  if (!tcp_ || data.empty()) return;
  auto* wr = new WriteReq{{}, std::move(data), this};
  wr->req.data = wr;
  uv_buf_t b = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  write_pending_ += wr->data.size();
  ++handles_;  // a write in flight keeps this object alive
  int r = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(tcp_), &b, 1, [](uv_write_t* req, int status) {
    auto* w = static_cast<WriteReq*>(req->data);
    OutboundConnection* self = w->owner;
    self->write_pending_ -= w->data.size();
    delete w;
    --self->handles_;
    if (status == 0 && self->tcp_ && self->body_active_ && self->write_pending_ < kWriteHighWater / 2)
      self->stream_body();
    if (self->close_when_written_ && self->write_pending_ == 0) self->close_tcp();
    self->maybe_delete();
  });
  if (r != 0) {
    write_pending_ -= wr->data.size();
    delete wr;
    --handles_;
    if (session_) session_->connection_lost(std::string("write failed: ") + uv_strerror(r));
  }
}

void OutboundConnection::session_finished() {
  uv_timer_stop(&timer_);
  if (tls_ && tls_->handshake_done()) {
    if (SSL_SESSION* s = SSL_get1_session(tls_->ssl())) w_.store_tls_session(dns::addr_to_string(cur_.addr), s);
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
  if (session_->idle() && has_job_) {
    bool keep = ++jobs_done_ < kMaxJobsPerConnection && !w_.draining();
    report(keep);
    if (keep) return park();
    session_->quit();
    return drive();
  }
  if (write_pending_ == 0) close_tcp();
  else close_when_written_ = true;  // let QUIT reach the server
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
  std::vector<smtp::ClientMessage> msgs;
  for (auto& m : job_.msgs) msgs.push_back({m.qid, m.env.get(), m.rcpts, m.size});
  arm_timer(cfg_->outbound.command_timeout);
  session_->reuse(std::move(msgs));
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
  close_tcp();
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

// No more jobs on this object: it is deleted once its handles are closed.
void OutboundConnection::finish() {
  if (finished_) return;
  finished_ = true;
  if (parked_) {
    w_.unpark(this);
    parked_ = false;
  }
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<OutboundConnection*>(h->data);
    --self->handles_;
    self->maybe_delete();
  });
}

void OutboundConnection::maybe_delete() {
  if (handles_ > 0 || !finished_) return;
  w_.outbound_finished(this);
  delete this;
}

}  // namespace postern::delivery

namespace postern::delivery {

void OutboundConnection::abort() {
  if (finished_) return;
  has_job_ = false;  // nothing is reported: the scheduler stops with the daemon
  if (session_) session_->connection_lost("shutting down");
  close_tcp();
  finish();
}

}  // namespace postern::delivery
