// inbound_connection.h — drives one SmtpServerSession over a TlsStream (the one transport), with
// TLS after STARTTLS. Owns the session's deadlines and the spool writer of the message in
// progress. Asynchronous answers (spool commits) find it by id through its ConnectionHost (the worker), never by a
// raw pointer that may be dead.
//
// Deadlines: a command line must be complete within smtp.idle_timeout of the previous reply
// (bytes of a half line do not extend it: no slowloris), message content may pause at most
// smtp.data_timeout between reads, the whole session lasts at most smtp.max_session_duration;
// the stream adds smtp.write_timeout (a client that does not read its replies) and
// smtp.close_timeout (a session that is closing is gone by then). A message waiting for its scan
// verdict has scan.timeout + ScanWait::kMargin (on the injected clock); then scan.failure_action.
#pragma once

#include <uv.h>

#include <chrono>
#include <memory>
#include <string>

#include "mta/queue/spool.h"
#include "policy/scan_gate.h"
#include "mta/server/scan_wait.h"
#include "mta/server/smtp_server_session.h"
#include "tls/tls_stream.h"

namespace postern::mta {
namespace queue = postern::queue;

class ConnectionHost;

class InboundConnection : public smtp::SessionHooks, public tls::StreamHandler {
 public:
  // Takes an accepted client socket. Deletes itself when closed.
  static void accept(ConnectionHost& w, int fd);

  void drain();        // SIGTERM: finish up, then 421
  void force_close();  // drain deadline passed
  void commit_finished(bool ok);
  // The scan thread's answer (posted to this loop): the gate decides, the session goes on.
  // ticket: the ScanWait ticket of the scan (a verdict for another, or a late one, is refused);
  // subject: where the Subject tag goes (on_virus = "tag", infected only).
  void scan_finished(uint64_t ticket, const std::string& qid, const scan::ScanResult& r,
                     const policy::ScanFacts& facts, const policy::SubjectEdit& subject);
  uint64_t id() const { return id_; }

  // SessionHooks
  std::string new_queue_id() override;
  std::string rfc5322_date() override;
  int64_t now_unix() override;
  bool disk_below_floor() override;
  bool begin_message(const Envelope& env) override;
  bool write_body(std::string_view bytes) override;
  bool scan_message(const Envelope& env) override;
  void commit_message(const Envelope& env) override;
  void abort_message() override;
  smtp::RcptCheck check_recipient(const std::string& address) override;
  // Recipient verification's later answer (delivery/recipient_verifier.h).
  void recipient_checked(const smtp::RcptCheck& c);

  // StreamHandler
  void on_stream_data(std::string_view bytes) override;
  void on_stream_tls_ready() override;
  void on_stream_end(tls::StreamEnd why, const std::string& detail) override;
  void on_stream_closed() override;

 private:
  InboundConnection(ConnectionHost& w, std::shared_ptr<const Config> cfg);
  ~InboundConnection() override;
  void start(int fd);
  bool admit(bool exempt_per_ip);
  void after_session(bool progressed);
  void arm_timer();
  void end_session();
  void refuse(const std::string& reply);
  void gate_answer(const policy::GateDecision& d, const scan::ScanResult* r);
  policy::ScanFacts scan_facts(const scan::Engine* engine, bool stale) const;
  void scan_tick();  // the timer while a scan is in flight: its deadline, on the injected clock

  static void timer_cb(uv_timer_t* t);

  ConnectionHost& w_;
  std::shared_ptr<const Config> cfg_;
  uint64_t id_ = 0;
  tls::TlsStream* stream_ = nullptr;
  uv_timer_t timer_{};
  bool timer_closed_ = false;
  std::string ip_;
  bool ip_counted_ = false;
  bool session_counted_ = false;
  std::unique_ptr<smtp::SmtpServerSession> session_;
  std::unique_ptr<queue::SpoolWriter> writer_;
  std::chrono::steady_clock::time_point started_;
  bool was_in_body_ = false;
  ScanWait scan_wait_;            // the scan in flight: deadline and ticket
  policy::ScanFacts wait_facts_;  // ... and what its header would say about the engine
};

}  // namespace postern::mta
