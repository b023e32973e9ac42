// tls_stream.cpp — see tls_stream.h. Security-sensitive: every byte a peer sends passes here,
// and so does the STARTTLS switch; the bounds and deadlines here are what keep a hostile or
// stuck peer from holding memory, descriptors or sessions.
#include "tls/tls_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace postern::tls {
namespace {

constexpr size_t kReadBuffer = 64 * 1024;

struct WriteReq {
  uv_write_t req;
  std::string data;
};

}  // namespace

const char* stream_end_name(StreamEnd e) {
  switch (e) {
    case StreamEnd::kEof: return "closed by peer";
    case StreamEnd::kReadError: return "read error";
    case StreamEnd::kWriteError: return "write error";
    case StreamEnd::kWriteTimeout: return "write timeout";
    case StreamEnd::kWriteQueueFull: return "write queue full";
    case StreamEnd::kTlsError: return "TLS error";
    case StreamEnd::kTlsClosed: return "TLS closed by peer";
  }
  return "ended";
}

TlsStream* TlsStream::create(uv_loop_t* loop, StreamHandler* handler, StreamLimits limits) {
  return new TlsStream(loop, handler, limits);
}

TlsStream::TlsStream(uv_loop_t* loop, StreamHandler* handler, StreamLimits limits)
    : loop_(loop), handler_(handler), limits_(limits) {
  limits_.read_chunk = std::clamp<size_t>(limits_.read_chunk, 1, kReadBuffer);
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  handles_ = 2;
}

TlsStream::~TlsStream() = default;

int TlsStream::open(int fd) {
  int r = uv_tcp_open(&tcp_, fd);
  if (r != 0) {
    ::close(fd);
    abort();
    return r;
  }
  opened_ = true;
  uv_tcp_nodelay(&tcp_, 1);
  learn_peer();
  update_reading();
  return 0;
}

int TlsStream::connect(const sockaddr* addr) {
  auto* req = new uv_connect_t;
  req->data = this;
  int r = uv_tcp_connect(req, &tcp_, addr, [](uv_connect_t* rq, int status) {
    auto* self = static_cast<TlsStream*>(rq->data);
    delete rq;
    if (status == UV_ECANCELED || self->closing_) return;
    if (status < 0) {
      self->ended_ = true;
      if (self->handler_) self->handler_->on_stream_connected(status);
      self->abort();
      return;
    }
    self->opened_ = true;
    uv_tcp_nodelay(&self->tcp_, 1);
    self->learn_peer();
    self->update_reading();
    if (self->handler_) self->handler_->on_stream_connected(0);
  });
  if (r != 0) {
    delete req;
    ended_ = true;
    abort();
  }
  return r;
}

void TlsStream::learn_peer() {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    peer_ip_ = "local";
    return;
  }
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    std::memcpy(peer_bytes_, &sin->sin_addr, 4);
    peer_family_ = AF_INET;
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    std::memcpy(peer_bytes_, &sin6->sin6_addr, 16);
    peer_family_ = AF_INET6;
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {  // ::ffff:a.b.c.d is IPv4
      std::memmove(peer_bytes_, peer_bytes_ + 12, 4);
      peer_family_ = AF_INET;
    }
  } else {
    peer_ip_ = "local";
    return;
  }
  inet_ntop(peer_family_, peer_bytes_, buf, sizeof buf);
  peer_ip_ = buf;
}

bool TlsStream::peer_addr(int& family, unsigned char out[16]) const {
  if (peer_family_ == 0) return false;
  family = peer_family_;
  std::memcpy(out, peer_bytes_, 16);
  return true;
}

// --- reading --------------------------------------------------------------------------------

void TlsStream::set_reading(bool want) {
  want_read_ = want;
  update_reading();
}

void TlsStream::update_reading() {
  bool want = opened_ && !closing_ && want_read_ && !was_full_;
  auto* s = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (want && !reading_) {
    uv_read_start(
        s,
        [](uv_handle_t* h, size_t, uv_buf_t* b) {
          thread_local char buf[kReadBuffer];  // consumed before the read callback returns
          *b = uv_buf_init(buf, static_cast<unsigned>(static_cast<TlsStream*>(h->data)->limits_.read_chunk));
        },
        [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) { static_cast<TlsStream*>(st->data)->on_read(n, b); });
    reading_ = true;
  } else if (!want && reading_) {
    uv_read_stop(s);
    reading_ = false;
  }
}

void TlsStream::on_read(ssize_t n, const uv_buf_t* buf) {
  if (n == 0) return;  // EAGAIN
  if (n < 0) {
    if (n == UV_EOF) return fail(StreamEnd::kEof, "");
    return fail(StreamEnd::kReadError, uv_strerror(static_cast<int>(n)));
  }
  if (closing_) return;
  bytes_in_ += static_cast<uint64_t>(n);
  if (engine_) return on_ciphertext(buf->base, static_cast<size_t>(n));
  if (handler_) handler_->on_stream_data(std::string_view(buf->base, static_cast<size_t>(n)));
}

void TlsStream::on_ciphertext(const char* data, size_t n) {
  engine_->put_ciphertext(data, n);
  bool was_done = engine_->handshake_done();
  std::string plain;
  auto st = engine_->pump(plain);
  flush_tls();
  if (st == TlsEngine::Status::kError) return fail(StreamEnd::kTlsError, engine_->error());
  if (!was_done && engine_->handshake_done()) {
    if (!held_.empty()) {
      std::string held = std::move(held_);
      held_.clear();
      write(held);
    }
    if (handler_ && !closing_) handler_->on_stream_tls_ready();
  }
  if (!plain.empty() && handler_ && !closing_) handler_->on_stream_data(plain);
  if (st == TlsEngine::Status::kClosed && !closing_) fail(StreamEnd::kTlsClosed, "");
}

// --- writing --------------------------------------------------------------------------------

bool TlsStream::write(std::string_view bytes) {
  if (closing_) return false;
  if (bytes.empty()) return true;
  if (!engine_) return queue_raw(std::string(bytes));
  if (!engine_->handshake_done()) {
    if (held_.size() + bytes.size() > limits_.max_write_queue) {
      fail(StreamEnd::kWriteQueueFull, "output held for the TLS handshake over the limit");
      return false;
    }
    held_.append(bytes);
    return true;
  }
  std::string cipher;
  if (engine_->seal(bytes, cipher) != TlsEngine::Status::kOk) {
    fail(StreamEnd::kTlsError, "TLS write failed: " + engine_->error());
    return false;
  }
  return queue_raw(std::move(cipher));
}

void TlsStream::flush_tls() {
  std::string cipher;
  engine_->take_ciphertext(cipher);
  if (!cipher.empty()) queue_raw(std::move(cipher));
}

bool TlsStream::queue_raw(std::string data) {
  if (data.empty() || handles_closed_) return !handles_closed_;
  if (queued_ + data.size() > limits_.max_write_queue) {
    fail(StreamEnd::kWriteQueueFull, std::to_string(queued_ + data.size()) + " bytes queued");
    return false;
  }
  auto* wr = new WriteReq;
  wr->data = std::move(data);
  wr->req.data = this;
  uv_buf_t b = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
  size_t n = wr->data.size();
  bool was_empty = queued_ == 0;
  queued_ += n;
  int r = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, [](uv_write_t* req, int status) {
    auto* w = reinterpret_cast<WriteReq*>(req);
    auto* self = static_cast<TlsStream*>(req->data);
    size_t len = w->data.size();
    delete w;
    self->on_write_done(len, status);
  });
  if (r != 0) {
    queued_ -= n;
    delete wr;
    fail(StreamEnd::kWriteError, uv_strerror(r));
    return false;
  }
  bytes_out_ += n;
  if (was_empty) arm_deadline();
  if (queued_ >= limits_.write_high_water && !was_full_) {
    was_full_ = true;
    update_reading();
  }
  return true;
}

void TlsStream::on_write_done(size_t n, int status) {
  queued_ -= n;
  if (status == UV_ECANCELED) return;  // closing
  if (status < 0) return fail(StreamEnd::kWriteError, uv_strerror(status));
  if (closing_) {
    if (queued_ == 0) finish_close();
    return;
  }
  arm_deadline();  // progress: the no-progress deadline starts again
  if (was_full_ && queued_ < limits_.write_high_water / 2) {
    was_full_ = false;
    update_reading();
    if (handler_) handler_->on_stream_writable();
  }
}

// Before close(): the write-progress deadline, running while output is queued. After: the
// close deadline, set once and never extended.
void TlsStream::arm_deadline() {
  if (closing_ || handles_closed_) return;
  if (queued_ == 0) {
    uv_timer_stop(&timer_);
    return;
  }
  uv_timer_start(&timer_, [](uv_timer_t* t) {
    auto* self = static_cast<TlsStream*>(t->data);
    if (self->closing_) return self->abort();
    self->fail(StreamEnd::kWriteTimeout,
               "no write progress for " + std::to_string(self->limits_.write_timeout.count() / 1000) + "s");
  }, static_cast<uint64_t>(std::max<int64_t>(1, limits_.write_timeout.count())), 0);
}

bool TlsStream::start_tls(std::shared_ptr<const ContextSet> ctx, bool server, const std::string& sni,
                          const std::function<void(SSL*)>& configure) {
  if (closing_ || engine_ || !ctx) return false;
  engine_ = std::make_unique<TlsEngine>(std::move(ctx), server, sni);
  if (!engine_->valid()) {
    fail(StreamEnd::kTlsError, "cannot start TLS: " + engine_->error());
    return false;
  }
  if (configure) configure(engine_->ssl());
  if (!server) {
    std::string none;
    if (engine_->pump(none) == TlsEngine::Status::kError) {  // writes the ClientHello
      fail(StreamEnd::kTlsError, engine_->error());
      return false;
    }
    flush_tls();
  }
  return true;
}

// --- ending ---------------------------------------------------------------------------------

void TlsStream::fail(StreamEnd why, const std::string& detail) {
  if (handles_closed_) return;
  bool tell = !ended_;
  ended_ = true;
  bool graceful = why == StreamEnd::kTlsError || why == StreamEnd::kEof || why == StreamEnd::kTlsClosed;
  if (graceful) close();  // a TLS alert or our last reply may still be worth sending
  else abort();
  if (tell && handler_) handler_->on_stream_end(why, detail);
}

void TlsStream::close() {
  if (closing_ || handles_closed_) return;
  closing_ = true;
  ended_ = true;
  update_reading();
  if (engine_ && engine_->handshake_done()) {
    engine_->shutdown();
    flush_tls();
  }
  if (queued_ == 0) return finish_close();
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<TlsStream*>(t->data)->abort(); },
                 static_cast<uint64_t>(std::max<int64_t>(1, limits_.close_timeout.count())), 0);
}

void TlsStream::abort() {
  closing_ = true;
  ended_ = true;
  finish_close();
}

void TlsStream::finish_close() {
  if (handles_closed_) return;
  handles_closed_ = true;
  if (reading_) uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
  auto done = [](uv_handle_t* h) {
    auto* self = static_cast<TlsStream*>(h->data);
    if (--self->handles_ > 0) return;
    if (self->handler_) self->handler_->on_stream_closed();
    delete self;
  };
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), done);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), done);
}

}  // namespace postern::tls
