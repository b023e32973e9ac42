// smtp_client_session.h — the outbound SMTP protocol core, sans-IO.
//
// Replies from the server go in through feed(); commands come out through take_output(); the
// driver streams message bodies and runs TLS when the session asks. One session is one
// connection and may carry several messages (connection reuse), pipelining MAIL and RCPT when the
// server offers PIPELINING, sending BDAT when it offers CHUNKING, else DATA.
//
// Security-sensitive: replies are hostile input. A reply is bounded in lines and bytes; anything
// malformed is a temporary failure, never unbounded memory. After "220" to STARTTLS any bytes the
// server already sent are discarded (CVE-2021-38371 class) and the pre-TLS EHLO is forgotten.
// Under policy encrypt/verify no MAIL is ever sent before TLS is up.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "mta/envelope.h"

namespace postern::smtp {

struct ClientMessage {
  std::string qid;
  const Envelope* env = nullptr;  // owned by the caller for the session's life
  std::vector<size_t> rcpts;      // indexes into env->rcpts to deliver here
  uint64_t size = 0;              // bytes of the message (as it will be sent)
  bool downgraded = false;        // converted to 7-bit MIME for this server (see set_downgrader)
  // Recipient verification: MAIL and RCPT only, then RSET. A recipient the server accepts is
  // reported kDelivered (it exists), one it refuses kFailed or kDeferred; no body is sent.
  bool probe = false;
};

enum class Outcome { kDelivered, kDeferred, kFailed };

struct RcptResult {
  std::string qid;
  size_t index = 0;
  Outcome outcome = Outcome::kDeferred;
  std::string status;  // enhanced status, e.g. "5.1.1"
  std::string diag;    // the reply text or a reason
  bool maybe_duplicate = false;  // connection lost after the final dot
  bool relayed_without_dsn = false;  // delivered to a server without DSN, NOTIFY had SUCCESS
};

// Dot-stuffing for DATA: doubles a leading "." on every line; finish() ends the data.
class DotStuffer {
 public:
  void stuff(std::string_view in, std::string& out);
  void finish(std::string& out);

 private:
  bool bol_ = true;
  char last_ = '\n';
};

class SmtpClientSession {
 public:
  enum class State {
    kGreeting, kEhlo, kHelo, kStarttls, kTlsHandshake, kMail, kData, kBody, kFinal, kRset, kIdle, kQuit, kDone
  };
  struct Options {
    std::string helo_name;
    TlsLevel tls = TlsLevel::kMay;
    bool tls_possible = true;     // the driver can run TLS at all
    size_t max_reply_lines = 100;
    size_t max_reply_bytes = 16 * 1024;
    bool keep_open = false;       // after the last message: kIdle instead of QUIT (connection cache)
  };

  SmtpClientSession(Options opt, std::vector<ClientMessage> msgs);

  // For a message with 8-bit content and a server without 8BITMIME: the driver converts it to
  // 7-bit MIME, sets size to the converted length and downgraded, and streams the converted
  // bytes as its body; false if it cannot (the recipients then fail with 5.6.3).
  using Downgrader = std::function<bool(ClientMessage&)>;
  void set_downgrader(Downgrader d) { downgrade_ = std::move(d); }

  // Replies from the server. Bounded: more than max_reply_bytes buffered without a complete
  // reply (also while the body is being sent, when replies are not read) ends the connection.
  void feed(std::string_view bytes);
  std::string take_output();
  bool has_output() const { return !out_.empty(); }
  static const char* state_name(State s);

  // The server said 220 to STARTTLS: run the handshake, then call tls_started() or
  // connection_lost("TLS handshake failed: ...").
  bool wants_starttls() const { return state_ == State::kTlsHandshake && !tls_active_; }
  void tls_started();
  bool tls_active() const { return tls_active_; }

  // The command for the body is in the output: stream the current message now (dot-stuffed
  // unless use_bdat()), then call body_sent().
  bool wants_body() const { return state_ == State::kBody && !body_sending_; }
  void body_started() { body_sending_ = true; }
  bool use_bdat() const { return bdat_; }
  const ClientMessage& current() const { return msgs_[cur_]; }
  void body_sent();

  // The connection ended (closed, timed out, TLS failure). Everything not yet answered is
  // deferred with `why`, unless the host failed before any transaction (see host_failed()).
  void connection_lost(const std::string& why);

  bool done() const { return state_ == State::kDone; }
  // Every message answered and the connection kept open (Options::keep_open).
  bool idle() const { return state_ == State::kIdle; }
  // From kIdle: deliver more messages over the same connection (same EHLO, same TLS).
  void reuse(std::vector<ClientMessage> msgs);
  // From kIdle: close politely.
  void quit();
  State state() const { return state_; }
  // The host was unusable before any MAIL was sent: the caller may try the next host with the
  // same messages. host_failure() says why. No results were produced for them.
  bool host_failed() const { return host_failed_; }
  const std::string& host_failure() const { return host_failure_; }
  std::vector<RcptResult> take_results();
  bool peer_has(const std::string& ext) const;

 private:
  struct Reply {
    int code = 0;
    std::string text;  // all lines joined with "; ", first code kept
    std::vector<std::string> lines;
  };
  bool parse_reply(Reply& r, bool& bad);
  void on_reply(const Reply& r);
  void set_state(State s);
  void fail_host(const std::string& why);
  void after_ehlo();
  void start_message();
  void finish_message();
  std::string rcpt_line(const ClientMessage& m, size_t idx) const;
  bool needs_smtputf8(const ClientMessage& m) const;
  void next_message();
  void send(std::string line);
  void result_all_pending(Outcome o, const std::string& status, const std::string& diag);
  static std::string enhanced(const Reply& r);
  void record(size_t msg, size_t rcpt, Outcome o, const std::string& status, const std::string& diag);

  Options opt_;
  Downgrader downgrade_;
  std::vector<ClientMessage> msgs_;
  State state_ = State::kGreeting;
  std::string in_;
  std::string out_;
  std::vector<std::string> ext_;  // EHLO keywords, upper-case
  uint64_t peer_size_limit_ = 0;
  bool tls_active_ = false;
  bool bdat_ = false;
  bool body_sending_ = false;
  bool host_failed_ = false;
  bool any_transaction_ = false;
  std::string host_failure_;
  size_t cur_ = 0;
  // Per message: replies expected for MAIL and each RCPT when pipelining.
  size_t pending_replies_ = 0;
  size_t rcpt_pos_ = 0;               // next RCPT to send (no pipelining)
  bool mail_ok_ = false;
  bool data_pipelined_ = false;       // DATA went with MAIL and RCPT (PIPELINING, no CHUNKING)
  bool no_rcpt_data_ = false;         // ... and no RCPT was accepted
  Reply mail_reply_;
  std::vector<size_t> accepted_;      // rcpt positions accepted by RCPT
  std::vector<bool> answered_;        // per rcpt position: has a final result
  std::vector<RcptResult> results_;
};

}  // namespace postern::smtp
