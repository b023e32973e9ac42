// inbound_connection.h — drives one SmtpServerSession over a libuv TCP stream, with TLS over
// memory BIOs after STARTTLS. Owns the socket, the timers and the spool writer of the message in
// progress. Asynchronous answers (spool commits) find it by id through its Worker, never by a raw
// pointer that may be dead.
#pragma once

#include <uv.h>

#include <chrono>
#include <memory>
#include <string>

#include "mta/server/smtp_server_session.h"
#include "mta/queue/spool.h"
#include "tls/tls_engine.h"

namespace postern::mta {
namespace queue = postern::queue;

class Worker;

class InboundConnection : public smtp::SessionHooks {
 public:
  // Takes the accepted client from `server`. Deletes itself when closed.
  static void accept(Worker& w, uv_stream_t* server);

  void drain();        // SIGTERM: finish up, then 421
  void force_close();  // drain deadline passed
  void commit_finished(bool ok);
  uint64_t id() const { return id_; }

  // SessionHooks
  std::string new_queue_id() override;
  std::string rfc5322_date() override;
  int64_t now_unix() override;
  bool disk_below_floor() override;
  bool begin_message(const Envelope& env) override;
  bool write_body(std::string_view bytes) override;
  void commit_message(const Envelope& env) override;
  void abort_message() override;

 private:
  InboundConnection(Worker& w, std::shared_ptr<const Config> cfg);
  ~InboundConnection() override;
  bool start(uv_stream_t* server);
  void on_bytes(const char* data, size_t n);
  void after_session();
  void send_plain(std::string data);
  void send(std::string_view data);
  void arm_timer();
  void close();
  void maybe_pause_reading();
  void resume_reading();

  static void alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void write_cb(uv_write_t* req, int status);
  static void timer_cb(uv_timer_t* t);
  static void close_cb(uv_handle_t* h);

  Worker& w_;
  std::shared_ptr<const Config> cfg_;
  uint64_t id_ = 0;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  int handles_open_ = 0;
  std::string ip_;
  bool ip_counted_ = false;
  std::unique_ptr<smtp::SmtpServerSession> session_;
  std::unique_ptr<tls::TlsEngine> tls_;
  std::unique_ptr<queue::SpoolWriter> writer_;
  std::chrono::steady_clock::time_point started_;
  size_t write_pending_ = 0;
  bool reading_ = false;
  bool closing_ = false;
  bool close_after_write_ = false;
};

}  // namespace postern::mta
