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
  kInit,          // greeted, no HELO/EHLO yet
  kReady,         // HELO/EHLO done, no transaction
  kMail,          // MAIL accepted
  kRcpt,          // at least one RCPT accepted
  kData,          // after 354, reading the body
  kBdatChunk,     // reading the bytes of a BDAT chunk
  kAwaitCommit,   // body complete, waiting for the queue to make it durable
  kClosed,        // QUIT or 421 sent: the driver closes after flushing output
};
const char* state_name(State s);

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
  // Drop what begin_message() started (RSET, error, lost connection).
  virtual void abort_message() = 0;
};

struct ClientInfo {
  std::string ip;
  unsigned char addr[16] = {};
  int family = 0;
};

class SmtpServerSession {
 public:
  SmtpServerSession(std::shared_ptr<const Config> cfg, ClientInfo client, SessionHooks& hooks,
                    bool tls_available);

  std::string greeting() const;
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
  void timeout();             // idle or data timeout: 421 4.4.2, close
  void session_expired();     // max session duration: 421 4.4.2, close
  void shutting_down();       // SIGTERM drain: 421 now if idle, else after the transaction
  void connection_lost();     // the peer went away: drop any unfinished message

  State state() const { return state_; }
  bool closed() const { return state_ == State::kClosed; }
  bool in_body() const { return state_ == State::kData || state_ == State::kBdatChunk; }
  bool awaiting_commit() const { return state_ == State::kAwaitCommit; }
  // false while the session will not consume more input (awaiting commit/STARTTLS, closing):
  // the driver stops reading once buffered input passes a bound.
  bool wants_input() const;
  size_t buffered_input() const { return in_.size(); }
  const Envelope& envelope() const { return env_; }
  uint64_t messages_accepted() const { return accepted_; }

 private:
  using Handler = void (SmtpServerSession::*)(std::string_view arg);
  struct CommandSpec {
    Verb verb;
    Handler handler;
  };

  void process();
  void stash_input();
  void discard_input();
  bool process_command_line();
  void dispatch(std::string_view line);
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
  void cmd_data(std::string_view arg);
  void cmd_bdat(std::string_view arg);
  void cmd_rset(std::string_view arg);
  void cmd_noop(std::string_view arg);
  void cmd_quit(std::string_view arg);
  void cmd_vrfy(std::string_view arg);
  void cmd_help(std::string_view arg);
  void cmd_starttls(std::string_view arg);
  void cmd_expn(std::string_view arg);

  bool relay_allowed(const Mailbox& box, bool postmaster) const;
  bool start_body();
  void body_bytes(const char* p, size_t n);  // content after unstuffing
  void flush_body();
  size_t consume_data(std::string_view in);  // returns bytes consumed; sets data_end_
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
  bool discarding_long_line_ = false;
  bool starttls_pending_ = false;
  bool tls_active_ = false;
  bool esmtp_ = false;
  bool draining_ = false;
  std::string helo_;
  std::string tls_desc_;
  uint32_t junk_count_ = 0;
  uint32_t commands_since_mail_ = 0;
  uint64_t accepted_ = 0;

  // Transaction.
  Envelope env_;
  bool message_open_ = false;  // begin_message() succeeded, abort_message() owed on failure
  bool bdat_used_ = false;
  bool bdat_last_ = false;
  bool bdat_discard_ = false;
  State bdat_prev_ = State::kInit;  // where a refused BDAT chunk returns to
  bool processing_ = false;    // chunk read only to be thrown away
  std::string bdat_error_;       // reply owed after a discarded chunk
  uint64_t chunk_left_ = 0;
  uint64_t body_size_ = 0;
  bool too_big_ = false;
  bool bare_eol_ = false;
  bool write_failed_ = false;
  std::string body_buf_;
  // DATA byte state (kept across feeds).
  bool bol_ = true;
  bool pending_cr_ = false;
  int dot_state_ = 0;  // 1: "." at line start, 2: ".\r" at line start
  bool data_end_ = false;
};

}  // namespace postern::smtp
