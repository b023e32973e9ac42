// tls_stream.h — the one transport. A byte stream over a libuv TCP handle, plain or TLS
// (TlsEngine: OpenSSL over memory BIOs), used by every connection Postern has: inbound SMTP,
// outbound SMTP, the admin API and every later listener.
//
// What it guarantees, so that no protocol driver has to:
// - Bounded memory in both directions. Input is handed to the handler one read at a time (at
//   most `read_chunk` bytes of ciphertext, decrypted at once); the handler says when it wants no
//   more (set_reading(false)) and reading stops. Output is one queue of owned buffers, one
//   uv_write each, freed in its callback; above `write_high_water` reading stops (a peer that
//   never reads cannot make us produce more replies) and writable() turns false; above
//   `max_write_queue` the stream fails.
// - Deadlines that bytes do not extend: queued output that makes no progress for
//   `write_timeout` ends the stream; once close() starts, it is done within `close_timeout`
//   (pending output and TLS close_notify get that long, then the socket is closed anyway).
// - One place for the STARTTLS switch: bytes written before start_tls() go out in plaintext,
//   every byte read after it goes to TLS.
// The stream deletes itself after its handles are closed, calling on_stream_closed() last (unless
// the handler detached). Callbacks never run after that. Security-sensitive: everything here
// meets hostile peers; every buffer has a bound.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "tls/tls_engine.h"

namespace postern::tls {

struct StreamLimits {
  size_t read_chunk = 64 * 1024;             // bytes read per callback
  size_t write_high_water = 256 * 1024;      // above it: reading stops, writable() is false
  size_t max_write_queue = 4 * 1024 * 1024;  // above it: the stream fails
  std::chrono::milliseconds write_timeout{std::chrono::minutes(2)};  // no write progress: fail
  std::chrono::milliseconds close_timeout{std::chrono::seconds(10)};  // graceful close, at most
};

// Why a stream ended, as the handler learns it in on_stream_end().
enum class StreamEnd { kEof, kReadError, kWriteError, kWriteTimeout, kWriteQueueFull, kTlsError, kTlsClosed };
const char* stream_end_name(StreamEnd e);

class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // connect(): 0, or a libuv error code (the stream is then closing).
  virtual void on_stream_connected(int status) { (void)status; }
  // Plaintext from the peer.
  virtual void on_stream_data(std::string_view bytes) = 0;
  // The TLS handshake completed.
  virtual void on_stream_tls_ready() {}
  // The write queue fell below half the high-water mark after having been above it.
  virtual void on_stream_writable() {}
  // The peer went away, an error or a deadline: the stream is closing (no more data).
  virtual void on_stream_end(StreamEnd why, const std::string& detail) = 0;
  // The handle is closed; the stream is deleted right after this returns.
  virtual void on_stream_closed() {}
};

class TlsStream {
 public:
  // The handler must outlive the stream or call detach() before it goes.
  static TlsStream* create(uv_loop_t* loop, StreamHandler* handler, StreamLimits limits = {});

  // Takes an accepted (or socketpair) descriptor. On failure the stream is closing and the
  // descriptor closed; returns the libuv error.
  int open(int fd);
  // Connects to addr; the handler hears on_stream_connected().
  int connect(const sockaddr* addr);

  // Plaintext to the peer (encrypted once TLS is up; held until the handshake completes if TLS
  // was started and is not up yet). false when the stream is closing or failed.
  bool write(std::string_view bytes);
  // Starts TLS on this connection: a server waits for the ClientHello, a client sends it.
  // `configure` runs on the new SSL before the handshake (verification, SNI, session).
  bool start_tls(std::shared_ptr<const ContextSet> ctx, bool server, const std::string& sni = "",
                 const std::function<void(SSL*)>& configure = nullptr);
  // Application-level read backpressure.
  void set_reading(bool want);
  // Graceful: TLS close_notify, pending output flushed, then closed; at most close_timeout.
  void close();
  // Now: pending output is dropped.
  void abort();
  // No more callbacks to the handler (it is going away); the stream finishes closing alone.
  void detach() { handler_ = nullptr; }

  bool closing() const { return closing_; }
  bool writable() const { return queued_ < limits_.write_high_water; }
  size_t write_queued() const { return queued_; }
  bool tls_started() const { return engine_ != nullptr; }
  bool tls_ready() const { return engine_ && engine_->handshake_done(); }
  TlsEngine* engine() { return engine_.get(); }
  const std::string& peer_ip() const { return peer_ip_; }
  // Peer address as family + 16 bytes (IPv4-mapped IPv6 turned into IPv4); false if unknown.
  bool peer_addr(int& family, unsigned char out[16]) const;
  uv_tcp_t* tcp() { return &tcp_; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }

 private:
  TlsStream(uv_loop_t* loop, StreamHandler* handler, StreamLimits limits);
  ~TlsStream();
  void on_read(ssize_t n, const uv_buf_t* buf);
  void on_ciphertext(const char* data, size_t n);
  void flush_tls();
  bool queue_raw(std::string data);
  void on_write_done(size_t n, int status);
  void update_reading();
  void arm_deadline();
  void fail(StreamEnd why, const std::string& detail);
  void finish_close();
  void learn_peer();

  uv_loop_t* loop_;
  StreamHandler* handler_;
  StreamLimits limits_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  int handles_ = 0;
  std::unique_ptr<TlsEngine> engine_;
  std::string held_;  // plaintext written while the handshake runs
  size_t queued_ = 0;
  bool was_full_ = false;
  bool want_read_ = true;
  bool reading_ = false;
  bool opened_ = false;
  bool closing_ = false;  // close() or a failure: no more input, finishing output
  bool ended_ = false;    // the handler has been told on_stream_end (or closed it)
  bool handles_closed_ = false;
  std::chrono::steady_clock::time_point close_started_{};
  std::string peer_ip_;
  int peer_family_ = 0;
  unsigned char peer_bytes_[16] = {};
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

}  // namespace postern::tls
