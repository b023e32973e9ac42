// outbound_connection.h — delivers one DeliveryJob on a worker loop: next hop by static route or
// MX (c-ares), then each address in order until one takes the messages; drives
// SmtpClientSession over TCP, with STARTTLS through a TlsEngine whose context comes from the
// outbound role's ContextProvider at the moment of the handshake. Streams bodies from the spool
// with backpressure. Reports a result for every recipient, exactly once.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>

#include "mta/delivery/delivery_job.h"
#include "mta/dns/resolver.h"
#include "tls/tls_engine.h"

namespace postern::mta {
class Worker;
}

namespace postern::delivery {

class OutboundConnection {
 public:
  using Done = std::function<void(JobResult)>;
  static void start(mta::Worker& w, DeliveryJob job, Done done);
  // Drain deadline: drop the connection without reporting (the messages stay queued).
  void abort();
  // A cached (parked) connection to the job's destination takes the next job.
  void take_job(DeliveryJob job, Done done);

 private:
  struct Candidate {
    std::string host;
    sockaddr_storage addr;
    bool no_tls = false;  // retry in plaintext after a failed handshake under "may"
  };
  OutboundConnection(mta::Worker& w, DeliveryJob job, Done done);
  void resolve();
  void on_answer(dns::Answer a);
  void try_next();
  void attempt_failed(const std::string& why);
  void on_connected(int status);
  void on_bytes(const char* data, size_t n);
  void drive();
  bool downgrade(smtp::ClientMessage& m);
  const JobMessage* job_message(const std::string& qid) const;
  void send(std::string_view data);
  void send_raw(std::string data);
  void start_tls();
  void stream_body();
  void session_finished();
  void close_tcp();
  void finish_all(smtp::Outcome o, const std::string& status, const std::string& why);
  void report(bool cached = false);
  void finish();
  void park();
  void arm_timer(std::chrono::milliseconds t);
  void maybe_delete();

  mta::Worker& w_;
  DeliveryJob job_;
  Done done_;
  std::shared_ptr<const Config> cfg_;
  std::vector<Candidate> cands_;
  size_t next_ = 0;
  Candidate cur_{};
  std::string remote_;
  std::string last_error_;
  uv_tcp_t* tcp_ = nullptr;
  uv_timer_t timer_{};
  int handles_ = 0;
  bool has_job_ = true;   // a job is being delivered and not yet answered
  bool finished_ = false;  // no more jobs: closing down
  bool parked_ = false;    // idle in the worker's connection cache
  unsigned jobs_done_ = 0;
  bool tls_failed_ = false;
  std::unique_ptr<smtp::SmtpClientSession> session_;
  std::unique_ptr<tls::TlsEngine> tls_;
  std::vector<smtp::RcptResult> results_;
  // Body streaming.
  int body_fd_ = -1;               // the queue file, or
  std::string body_mem_;           // the message converted to 7-bit MIME
  size_t body_mem_pos_ = 0;
  std::map<std::string, std::string> converted_;  // qid -> 7-bit MIME version (this job)
  uint64_t body_left_ = 0;
  bool body_active_ = false;
  smtp::DotStuffer stuffer_;
  size_t write_pending_ = 0;
  bool close_when_written_ = false;
};

}  // namespace postern::delivery
