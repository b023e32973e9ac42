// outbound_connection.h — delivers DeliveryJobs on a worker loop: next hop by static route or MX
// (c-ares), then each address in order until one takes the messages; drives SmtpClientSession
// over a TlsStream (the one transport), with STARTTLS under the outbound role's context at the
// moment of the handshake. Streams bodies from the spool with backpressure. Reports a result for
// every recipient, exactly once.
//
// Deadlines: outbound.connect_timeout to connect, outbound.command_timeout for each reply,
// outbound.data_timeout for each block of the body to make progress (a large message over a
// slow link takes as long as it needs), outbound.final_reply_timeout for the reply to the end
// of the message (RFC 5321 4.5.3.2).
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>

#include "mta/delivery/delivery_job.h"
#include "mta/dns/resolver.h"
#include "tls/tls_stream.h"

namespace postern::mta {
class ConnectionHost;
}

namespace postern::delivery {

class OutboundConnection : public tls::StreamHandler {
 public:
  using Done = std::function<void(JobResult)>;
  static void start(mta::ConnectionHost& w, DeliveryJob job, Done done);
  // Drain deadline: drop the connection without reporting (the messages stay queued).
  void abort();
  // A cached (parked) connection to the job's destination takes the next job.
  void take_job(DeliveryJob job, Done done);

  // StreamHandler
  void on_stream_connected(int status) override;
  void on_stream_data(std::string_view bytes) override;
  void on_stream_tls_ready() override;
  void on_stream_writable() override;
  void on_stream_end(tls::StreamEnd why, const std::string& detail) override;
  void on_stream_closed() override;

 private:
  struct Candidate {
    std::string host;
    sockaddr_storage addr;
    bool no_tls = false;  // retry in plaintext after a failed handshake under "may"
  };
  OutboundConnection(mta::ConnectionHost& w, DeliveryJob job, Done done);
  ~OutboundConnection() override;
  void resolve();
  void on_answer(dns::Answer a);
  void try_next();
  void attempt_failed(const std::string& why);
  void drive();
  void drive_once();
  void arm_for_state();
  bool downgrade(smtp::ClientMessage& m);
  const JobMessage* job_message(const std::string& qid) const;
  void start_tls();
  std::string tls_session_key(uint64_t generation) const;
  void begin_body();
  void stream_body();
  void session_finished();
  void drop_stream(bool graceful);
  void close_body();
  void finish_all(smtp::Outcome o, const std::string& status, const std::string& why);
  void report(bool cached = false);
  void finish();
  void park();
  void arm_timer(std::chrono::milliseconds t);
  void maybe_delete();

  mta::ConnectionHost& w_;
  DeliveryJob job_;
  Done done_;
  std::shared_ptr<const Config> cfg_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for DNS answers after abort()
  std::vector<Candidate> cands_;
  size_t next_ = 0;
  Candidate cur_{};
  std::string remote_;
  std::string last_error_;
  tls::TlsStream* stream_ = nullptr;
  uv_timer_t timer_{};
  bool timer_open_ = true;
  bool has_job_ = true;    // a job is being delivered and not yet answered
  bool finished_ = false;  // no more jobs: closing down
  bool parked_ = false;    // idle in the worker's connection cache
  bool resolving_ = false;
  bool driving_ = false, redrive_ = false;
  unsigned jobs_done_ = 0;
  bool tls_failed_ = false;
  std::unique_ptr<smtp::SmtpClientSession> session_;
  std::vector<smtp::RcptResult> results_;
  // Body streaming.
  int body_fd_ = -1;               // the queue file, or
  std::string body_mem_;           // the message converted to 7-bit MIME
  size_t body_mem_pos_ = 0;
  std::map<std::string, std::string> converted_;  // qid -> 7-bit MIME version (this job)
  uint64_t body_left_ = 0;
  int64_t edit_left_ = -1;          // file bytes to send before edit_text_ (the Subject tag); -1: none
  std::string edit_text_;
  bool body_active_ = false;
  smtp::DotStuffer stuffer_;
};

}  // namespace postern::delivery
