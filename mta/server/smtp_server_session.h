// smtp_server_session.h — the inbound SMTP protocol core, sans-IO.
//
// Bytes from the client go in through feed(); replies come out through take_output(); what the
// connection must do next (start TLS, close, wait for the queue) is read from the session's flags.
// It knows nothing of sockets, TLS or clocks: the driver owns those and calls back in.
//
// Security-sensitive: everything here parses hostile input. End of DATA is recognised only as
// CRLF "." CRLF on the wire; bare CR / bare LF never end a message (no SMTP smuggling). After
// STARTTLS every byte already buffered is discarded and the session returns to before EHLO.
// Memory is bounded: command lines by max_line_length, message bodies stream out through the hooks.
// Command lines with control characters are refused; addresses are printable and, under
// SMTPUTF8, well-formed UTF-8 (smtp_syntax.h). The header section is bounded (max_header_size),
// Received: fields are counted (max_hops: mail loops), lines over 998 octets are folded or
// refused (long_lines), and a command pipelined where RFC 2920 forbids it ends the session.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "mta/envelope.h"
#include "mta/server/smtp_syntax.h"

namespace postern::smtp {

enum class State {
  kPreGreet,      // connected, greeting held back (smtp.greet_pause): any input now is refused
  kInit,          // greeted, no HELO/EHLO yet
  kReady,         // HELO/EHLO done, no transaction
  kMail,          // MAIL accepted
  kRcpt,          // at least one RCPT accepted
  kData,          // after 354, reading the body
  kBdatChunk,     // reading the bytes of a BDAT chunk
  kAwaitScan,     // body complete and written, waiting for the scanning gate's verdict
  kAwaitCommit,   // body complete, waiting for the queue to make it durable
  kClosed,        // QUIT or 421 sent: the driver closes after flushing output
};
const char* state_name(State s);

// What recipient verification (relay.verify_recipients) says of one recipient: now, or later
// (kPending: the driver calls SmtpServerSession::recipient_checked() with the answer).
enum class RcptVerdict { kAccept, kReject, kDefer, kPending };
struct RcptCheck {
  RcptVerdict verdict = RcptVerdict::kAccept;
  std::string detail;  // for the reply: what the next hop said, or why it could not be asked
};

// The driver side of a session: the queue, the clock and the disk check. Called synchronously.
class SessionHooks {
 public:
  virtual ~SessionHooks() = default;
  virtual std::string new_queue_id() = 0;
  virtual std::string rfc5322_date() = 0;
  virtual int64_t now_unix() = 0;
  virtual bool disk_below_floor() = 0;
  // Opens spool storage for a new message. false: temporary failure.
  virtual bool begin_message(const Envelope& env) = 0;
  // Appends body bytes. false: storage failed (the session keeps reading, then answers 451).
  virtual bool write_body(std::string_view bytes) = 0;
  // Body complete and valid: make it durable, then call SmtpServerSession::commit_done().
  virtual void commit_message(const Envelope& env) = 0;
  // Body complete and written, before commit_message(): true = the driver scans it and calls
  // SmtpServerSession::scan_done() (now or later); false = no gate, commit at once.
  virtual bool scan_message(const Envelope& env) {
    (void)env;
    return false;
  }
  // Drop what begin_message() started (RSET, error, lost connection).
  virtual void abort_message() = 0;
  // RCPT of a recipient at relay.domains from a client outside relay.networks, with
  // relay.verify_recipients on, after the relay rules and the recipient map accepted it.
  virtual RcptCheck check_recipient(const std::string& address) {
    (void)address;
    return {};
  }
};

struct ClientInfo {
  std::string ip;
  unsigned char addr[16] = {};
  int family = 0;
};

// The scanning gate's answer (policy/scan_gate.h decides it, the driver hands it over).
struct ScanOutcome {
  bool commit = true;       // true: commit (250); false: refuse with `reply`, the file discarded
  bool quarantine = false;  // commit into the spool's quarantine area (signature in `signature`)
  std::string signature;
  std::string header;       // X-Postern-Scan line(s) for the envelope ("" = none)
  std::string reply;        // !commit: "554 5.7.1 ..." or "451 4.7.1 ..."
  int64_t subject_at = -1;  // scan.on_virus = "tag": the Subject edit for the envelope
  std::string subject_edit;
};

// Why a message will be refused at its end; the first fault stops storing its bytes.
enum class BodyFault { kNone, kTooBig, kBareEol, kHeaderTooBig, kTooManyHops, kLongLine, kWriteFailed };

class SmtpServerSession {
 public:
  // hold_greeting: start in kPreGreet (smtp.greet_pause); the driver calls release_greeting()
  // when the pause is over. Without it the driver sends greeting() itself at once.
  SmtpServerSession(std::shared_ptr<const Config> cfg, ClientInfo client, SessionHooks& hooks,
                    bool tls_available, bool hold_greeting = false);

  std::string greeting() const;
  // Greet-pause API: while greeting_held(), the driver keeps reading; input that arrives is
  // answered "554 5.5.1" and the session closes (spoke_before_greeting()). release_greeting()
  // puts the 220 greeting in the output (take_output()) and moves to kInit; it does nothing
  // once the session is closed.
  bool greeting_held() const { return state_ == State::kPreGreet; }
  void release_greeting();
  bool spoke_before_greeting() const { return spoke_early_; }
  // Improper pipelining (RFC 2920 3.1, RFC 3207 4.2): a command that must be the last of its
  // group (EHLO, HELO, DATA, STARTTLS, NOOP, VRFY, EXPN, QUIT; every command without EHLO)
  // arrived with more input behind it. With smtp.forbid_unauth_pipelining it is answered
  // "554 5.5.0" and the session closes. Set once per session, whatever the setting.
  bool improper_pipelining() const { return improper_pipelining_; }

  // Feeds bytes read from the client and processes as much as possible.
  void feed(std::string_view bytes);
  // Replies to send, in order. Clears the buffer.
  std::string take_output();
  bool has_output() const { return !out_.empty(); }

  // STARTTLS accepted: send the pending output in plaintext, then start the TLS handshake.
  bool starttls_requested() const { return starttls_pending_; }
  // The handshake finished: record what to put in Received:, then keep feeding plaintext.
  void tls_established(std::string version, std::string cipher, int bits);
  bool tls_active() const { return tls_active_; }

  void commit_done(bool ok);  // the queue's answer to commit_message()
  void scan_done(ScanOutcome o);  // the gate's answer to scan_message(); ignored unless awaiting it
  // The answer to a check_recipient() that said kPending (never kPending itself). Ignored
  // unless the session is waiting for it; the input behind the RCPT is processed then.
  void recipient_checked(RcptCheck c);
  bool awaiting_recipient_check() const { return rcpt_wait_; }
  void timeout();             // idle or data timeout: 421 4.4.2, close
  void session_expired();     // max session duration: 421 4.4.2, close
  void shutting_down();       // SIGTERM drain: 421 now if idle, else after the transaction
  void connection_lost();     // the peer went away: drop any unfinished message

  State state() const { return state_; }
  bool closed() const { return state_ == State::kClosed; }
  bool in_body() const { return state_ == State::kData || state_ == State::kBdatChunk; }
  // Waiting for the queue or the gate: no timeout applies, the answer comes within bounds.
  bool awaiting_commit() const { return state_ == State::kAwaitCommit || state_ == State::kAwaitScan; }
  bool awaiting_scan() const { return state_ == State::kAwaitScan; }
  // false while the session will not consume more input (awaiting commit/STARTTLS, closing):
  // the driver stops reading once buffered input passes a bound.
  bool wants_input() const;
  size_t buffered_input() const { return in_.size(); }
  const Envelope& envelope() const { return tx_.env; }
  uint64_t messages_accepted() const { return accepted_; }

 private:
  using Handler = void (SmtpServerSession::*)(std::string_view arg);
  struct CommandSpec {
    Verb verb;
    Handler handler;
  };
  // How the current line of the message sits in the header section (RFC 5322 2.2).
  enum class LineKind : uint8_t { kStart, kName, kNameWsp, kField, kContinuation, kBody };

  // One mail transaction, MAIL to the end of the message; reset as a whole (OpenSMTPD's smtp_tx).
  struct Transaction {
    Envelope env;
    bool message_open = false;  // begin_message() succeeded, abort_message() owed on failure
    // BDAT
    bool bdat_used = false;
    bool bdat_last = false;
    bool bdat_discard = false;        // chunk read only to be thrown away
    State bdat_prev = State::kInit;   // where a refused BDAT chunk returns to
    std::string bdat_error;           // reply owed after a discarded chunk
    uint64_t chunk_left = 0;
    // The body as received.
    uint64_t body_size = 0;  // content bytes after unstuffing, against max_message_size
    BodyFault fault = BodyFault::kNone;
    bool bare_eol = false;
    std::string body_buf;    // stored bytes not yet handed to write_body()
    // DATA byte state (kept across feeds).
    bool bol = true;
    bool pending_cr = false;
    int dot_state = 0;  // 1: "." at line start, 2: ".\r" at line start
    bool data_end = false;
    // Lines and the header section.
    bool in_header = true;
    LineKind kind = LineKind::kStart;
    uint8_t name_len = 0;
    uint32_t head_pos = 0;    // octets of the current line looked at by classify_line
    char name[16] = {};       // the start of the current field name, lowercased
    uint64_t header_bytes = 0;
    uint32_t hops = 0;        // Received: fields in the header section
    uint32_t line_len = 0;    // octets of the current stored line, CRLF excluded
    uint32_t folded = 0;      // line breaks inserted (smtp.long_lines = "fold")
    std::string line_buf;     // the current header line while it may still be folded (<= 999)
    bool drop_field = false;  // the current header field is a sender's X-Postern-Scan: not stored
  };

  void process();
  void stash_input();
  void discard_input();
  bool process_command_line();
  void dispatch(std::string_view line);
  bool pipelining_violation(const CommandLine& cl);
  void set_state(State s);
  void reply(std::string_view text);
  void junk(std::string_view text);  // an error reply that counts towards the junk limit
  bool count_command();
  void reset_transaction();
  void close_with(std::string_view text);

  void cmd_ehlo(std::string_view arg);
  void cmd_helo(std::string_view arg);
  void cmd_mail(std::string_view arg);
  void cmd_rcpt(std::string_view arg);
  void finish_rcpt(Recipient r, const RcptCheck& c);
  void cmd_data(std::string_view arg);
  void cmd_bdat(std::string_view arg);
  void cmd_rset(std::string_view arg);
  void cmd_noop(std::string_view arg);
  void cmd_quit(std::string_view arg);
  void cmd_vrfy(std::string_view arg);
  void cmd_help(std::string_view arg);
  void cmd_starttls(std::string_view arg);
  void cmd_expn(std::string_view arg);

  bool start_body();
  void body_bytes(const char* p, size_t n);  // content after unstuffing: [text][CRLF]
  void content_piece(const char* p, size_t n);
  void classify_line(const char* p, size_t text, bool eol);
  void field_name_done();
  void header_line_piece(const char* p, size_t text, bool eol);
  void fold_header_line();
  void body_line_piece(const char* p, size_t text, bool eol);
  void store(const char* p, size_t n);
  void set_fault(BodyFault f);
  bool rejecting() const;
  void flush_body();
  size_t consume_data(std::string_view in);  // returns bytes consumed; sets data_end
  size_t consume_chunk(std::string_view in);
  void content_char_run(const char* p, size_t n);
  void end_of_message();
  std::string received_header() const;

  std::shared_ptr<const Config> cfg_;
  ClientInfo client_;
  SessionHooks& hooks_;
  bool tls_available_;

  State state_ = State::kInit;
  std::string in_;          // unconsumed input kept between feeds (bounded by the driver)
  std::string_view src_;    // the input being processed: in_ or the bytes given to feed()
  size_t src_pos_ = 0;
  std::string out_;
  bool processing_ = false;  // inside process(): a hook answering synchronously must not re-enter
  bool discarding_long_line_ = false;
  bool starttls_pending_ = false;
  bool tls_active_ = false;
  bool esmtp_ = false;
  bool draining_ = false;
  bool spoke_early_ = false;
  bool improper_pipelining_ = false;
  bool rcpt_wait_ = false;   // a RCPT waits for recipient verification: input is held
  Recipient rcpt_pending_;   // ... this one
  std::string helo_;
  std::string tls_desc_;
  uint32_t junk_count_ = 0;
  uint32_t commands_since_mail_ = 0;
  uint64_t accepted_ = 0;
  Transaction tx_;
};

}  // namespace postern::smtp
