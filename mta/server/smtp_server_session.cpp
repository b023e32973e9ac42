// smtp_server_session.cpp — the inbound SMTP state machine. See the header for what is
// security-sensitive. One state enum, one transition function (set_state), one command table.
#include "mta/server/smtp_server_session.h"

#include "base/log.h"
#include "base/text.h"
#include "policy/recipient_map.h"
#include "policy/relay_rules.h"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace postern::smtp {
namespace {

constexpr size_t kBodyFlush = 64 * 1024;
constexpr size_t kMaxLine = 998;  // octets of a message line, CRLF excluded (RFC 5322 2.1.1)

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Printable form of client-supplied text for logs and headers.
std::string printable(std::string_view s, size_t max = 255) {
  std::string r;
  for (unsigned char c : s.substr(0, max)) r.push_back(c >= 32 && c < 127 && c != '(' && c != ')' ? c : '?');
  return r;
}

bool valid_helo_arg(std::string_view s) {
  if (s.empty() || s.size() > 255 || !valid_utf8(s) || has_control(s, true)) return false;
  for (unsigned char c : s)
    if (c == 32) return false;
  return true;
}

bool wsp(char c) { return c == ' ' || c == '\t'; }
bool ftext(unsigned char c) { return c >= 33 && c <= 126 && c != ':'; }  // RFC 5322 field-name

// Where to break a line that is too long without splitting a UTF-8 sequence: back from `k`
// over at most three continuation bytes.
size_t char_boundary(const char* p, size_t k) {
  for (int i = 0; i < 3 && k > 0 && (static_cast<unsigned char>(p[k]) & 0xC0) == 0x80; ++i) --k;
  return k;
}

}  // namespace

const char* state_name(State s) {
  switch (s) {
    case State::kPreGreet: return "pregreet";
    case State::kInit: return "init";
    case State::kReady: return "ready";
    case State::kMail: return "mail";
    case State::kRcpt: return "rcpt";
    case State::kData: return "data";
    case State::kBdatChunk: return "bdat";
    case State::kAwaitScan: return "scan";
    case State::kAwaitCommit: return "commit";
    case State::kClosed: return "closed";
  }
  return "?";
}

SmtpServerSession::SmtpServerSession(std::shared_ptr<const Config> cfg, ClientInfo client,
                                     SessionHooks& hooks, bool tls_available, bool hold_greeting)
    : cfg_(std::move(cfg)), client_(std::move(client)), hooks_(hooks), tls_available_(tls_available),
      state_(hold_greeting ? State::kPreGreet : State::kInit) {}

std::string SmtpServerSession::greeting() const {
  return "220 " + cfg_->hostname + " ESMTP Postern\r\n";
}

void SmtpServerSession::release_greeting() {
  if (state_ != State::kPreGreet) return;
  out_ += greeting();
  set_state(State::kInit);
}

void SmtpServerSession::set_state(State s) {
  if (s == state_) return;
  SPDLOG_TRACE("smtp client={} state {} -> {}", client_.ip, state_name(state_), state_name(s));
  state_ = s;
}

void SmtpServerSession::reply(std::string_view text) {
  out_.append(text);
  out_.append("\r\n");
}

std::string SmtpServerSession::take_output() {
  std::string r;
  r.swap(out_);
  return r;
}

void SmtpServerSession::close_with(std::string_view text) {
  if (tx_.message_open) {
    hooks_.abort_message();
    tx_.message_open = false;
  }
  reply(text);
  set_state(State::kClosed);
  discard_input();
}

void SmtpServerSession::junk(std::string_view text) {
  if (++junk_count_ > cfg_->smtp.max_junk_commands) {
    close_with("421 4.7.0 " + cfg_->hostname + " Error: too many errors");
    return;
  }
  reply(text);
}

bool SmtpServerSession::count_command() {
  if (++commands_since_mail_ > cfg_->smtp.max_commands_before_mail) {
    close_with("421 4.7.0 " + cfg_->hostname + " Error: too many commands without a transaction");
    return false;
  }
  return true;
}

bool SmtpServerSession::wants_input() const {
  return state_ != State::kAwaitCommit && state_ != State::kAwaitScan && state_ != State::kClosed &&
         !starttls_pending_ && !rcpt_wait_;
}

void SmtpServerSession::feed(std::string_view bytes) {
  if (state_ == State::kClosed || starttls_pending_ || bytes.empty()) return;
  if (state_ == State::kPreGreet) {  // like postscreen's pregreet test: a real client waits for 220
    spoke_early_ = true;
    spdlog::info("smtp client={} reject=pregreet input=\"{}\"", client_.ip, esc(bytes, 100));
    reply("554 5.5.1 " + cfg_->hostname + " Error: SMTP protocol synchronization (spoke before the greeting)");
    set_state(State::kClosed);
    return;
  }
  if (in_.empty()) {
    src_ = bytes;  // nothing buffered: work on the caller's bytes without copying them
  } else {
    in_.append(bytes);
    src_ = in_;
  }
  src_pos_ = 0;
  process();
}

// Keeps what was not consumed for the next feed (a partial line, or input held while waiting).
void SmtpServerSession::stash_input() {
  std::string_view rest = src_.substr(src_pos_);
  if (!in_.empty() && src_.data() == in_.data()) in_.erase(0, src_pos_);
  else in_.assign(rest);
  src_ = {};
  src_pos_ = 0;
}

void SmtpServerSession::discard_input() { src_pos_ = src_.size(); }

void SmtpServerSession::process() {
  if (processing_) return;  // a hook answered synchronously; the running loop continues
  processing_ = true;
  while (state_ != State::kClosed && state_ != State::kAwaitCommit && state_ != State::kAwaitScan &&
         !starttls_pending_ && !rcpt_wait_ &&
         src_pos_ < src_.size()) {
    std::string_view avail = src_.substr(src_pos_);
    if (state_ == State::kData) {
      src_pos_ += consume_data(avail);
      if (tx_.data_end) end_of_message();
    } else if (state_ == State::kBdatChunk) {
      src_pos_ += consume_chunk(avail);
      if (tx_.chunk_left == 0) end_of_message();
    } else if (!process_command_line()) {
      break;  // need more bytes
    }
  }
  stash_input();
  processing_ = false;
}

// Takes one command line from the input. false when no complete line is buffered yet.
bool SmtpServerSession::process_command_line() {
  std::string_view avail = src_.substr(src_pos_);
  const void* lfp = std::memchr(avail.data(), '\n', avail.size());
  size_t lf = lfp ? static_cast<size_t>(static_cast<const char*>(lfp) - avail.data()) : std::string_view::npos;
  const size_t max = cfg_->smtp.max_line_length;
  if (lf == std::string_view::npos) {
    if (avail.size() > max) {  // drop the excess now, keep memory bounded; answer at end of line
      discarding_long_line_ = true;
      discard_input();
    }
    return false;
  }
  std::string_view line = avail.substr(0, lf);
  src_pos_ += lf + 1;
  if (discarding_long_line_ || line.size() > max) {
    discarding_long_line_ = false;
    junk("500 5.5.2 Error: line too long");
    return true;
  }
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // No control character reaches a handler: a CR or NUL inside a line would travel on into
  // the downstream MAIL/RCPT lines and the DSN header fields. (HT is whitespace: allowed.)
  for (unsigned char c : line) {
    if ((c < 0x20 && c != '\t') || c == 0x7F) {
      junk("500 5.5.2 Error: control character in command");
      return true;
    }
  }
  dispatch(line);
  return true;
}

void SmtpServerSession::dispatch(std::string_view line) {
  static constexpr CommandSpec kTable[] = {
      {Verb::kEhlo, &SmtpServerSession::cmd_ehlo},   {Verb::kHelo, &SmtpServerSession::cmd_helo},
      {Verb::kMail, &SmtpServerSession::cmd_mail},   {Verb::kRcpt, &SmtpServerSession::cmd_rcpt},
      {Verb::kData, &SmtpServerSession::cmd_data},   {Verb::kBdat, &SmtpServerSession::cmd_bdat},
      {Verb::kRset, &SmtpServerSession::cmd_rset},   {Verb::kNoop, &SmtpServerSession::cmd_noop},
      {Verb::kQuit, &SmtpServerSession::cmd_quit},   {Verb::kVrfy, &SmtpServerSession::cmd_vrfy},
      {Verb::kHelp, &SmtpServerSession::cmd_help},   {Verb::kStarttls, &SmtpServerSession::cmd_starttls},
      {Verb::kExpn, &SmtpServerSession::cmd_expn},
  };
  CommandLine cl = parse_command(line);
  if (pipelining_violation(cl)) {
    return close_with("554 5.5.0 " + cfg_->hostname + " Error: SMTP protocol synchronization");
  }
  if (draining_ && cl.verb != Verb::kQuit && state_ != State::kMail && state_ != State::kRcpt) {
    close_with("421 4.3.2 " + cfg_->hostname + " Service shutting down, closing transmission channel");
    return;
  }
  for (auto& spec : kTable) {
    if (spec.verb == cl.verb) {
      (this->*spec.handler)(cl.arg);
      return;
    }
  }
  junk("500 5.5.2 Error: command not recognized");
}

// RFC 2920 3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP are the last command of a group;
// RFC 3207 4.2 adds STARTTLS; without EHLO there is no PIPELINING and every command waits for its
// reply (Postfix's smtpd does the same, also for HELO). Input already waiting behind such a
// command was sent before its reply. true: refuse (smtp.forbid_unauth_pipelining).
bool SmtpServerSession::pipelining_violation(const CommandLine& cl) {
  if (src_pos_ >= src_.size() || cl.verb == Verb::kUnknown) return false;
  bool last = !esmtp_;
  switch (cl.verb) {
    case Verb::kEhlo: case Verb::kHelo: case Verb::kData: case Verb::kStarttls: case Verb::kNoop:
    case Verb::kVrfy: case Verb::kExpn: case Verb::kQuit:
      last = true;
      break;
    default:
      break;
  }
  if (!last) return false;
  if (!improper_pipelining_) {
    improper_pipelining_ = true;
    std::string_view next = src_.substr(src_pos_, 100);
    spdlog::info("smtp client={} improper command pipelining after {}: \"{}\"", client_.ip,
                 verb_name(cl.verb), esc(next, 100));
  }
  return cfg_->smtp.forbid_unauth_pipelining;
}

void SmtpServerSession::reset_transaction() {
  if (tx_.message_open) {
    hooks_.abort_message();
    tx_.message_open = false;
  }
  std::string buf = std::move(tx_.body_buf);  // keeps its capacity for the next message
  buf.clear();
  tx_ = Transaction{};
  tx_.body_buf = std::move(buf);
  if (state_ == State::kMail || state_ == State::kRcpt || state_ == State::kData ||
      state_ == State::kBdatChunk || state_ == State::kAwaitCommit || state_ == State::kAwaitScan)
    set_state(State::kReady);
}

void SmtpServerSession::cmd_ehlo(std::string_view arg) {
  if (!valid_helo_arg(arg)) return junk("501 5.5.4 Syntax: EHLO hostname");
  if (!count_command()) return;
  reset_transaction();
  helo_ = std::string(arg);
  esmtp_ = true;
  set_state(State::kReady);
  std::string r = "250-" + cfg_->hostname + " greets " + printable(arg, 64) + " [" + client_.ip + "]\r\n";
  r += "250-PIPELINING\r\n250-SIZE " + std::to_string(cfg_->smtp.max_message_size) + "\r\n";
  if (tls_available_ && !tls_active_) r += "250-STARTTLS\r\n";
  r += "250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN";
  reply(r);
}

void SmtpServerSession::cmd_helo(std::string_view arg) {
  if (!valid_helo_arg(arg)) return junk("501 5.5.4 Syntax: HELO hostname");
  if (!count_command()) return;
  reset_transaction();
  helo_ = std::string(arg);
  esmtp_ = false;
  set_state(State::kReady);
  reply("250 " + cfg_->hostname);
}

void SmtpServerSession::cmd_mail(std::string_view arg) {
  if (state_ == State::kInit) return junk("503 5.5.1 Error: send HELO/EHLO first");
  if (state_ != State::kReady) return junk("503 5.5.1 Error: nested MAIL command");
  // SMTPUTF8 decides whether the path itself may hold UTF-8: look for it first.
  bool utf8 = false;
  {
    PathParse probe = parse_path_arg(arg, "FROM", true);
    for (auto& p : probe.params)
      if (p.key == "SMTPUTF8") utf8 = esmtp_;
  }
  PathParse pp = parse_path_arg(arg, "FROM", utf8);
  if (pp.error == PathError::kNonAscii) return junk("553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
  if (pp.error == PathError::kBadUtf8) return junk("501 5.1.7 Error: sender address is not valid UTF-8");
  if (pp.error != PathError::kOk || pp.postmaster)
    return junk("501 5.1.7 Error: bad sender address syntax");
  if (!pp.params_ok) return junk("501 5.5.4 Error: bad or repeated parameter");
  if (!pp.params.empty() && !esmtp_) return junk("555 5.5.4 Error: parameters need EHLO");
  Envelope env;
  for (auto& p : pp.params) {
    if (p.key == "SIZE") {
      if (!p.has_value || !parse_u64(p.value, env.declared_size))
        return junk("501 5.5.4 Error: bad SIZE parameter");
      if (env.declared_size > cfg_->smtp.max_message_size)
        return reply("552 5.3.4 Error: message size exceeds fixed limit");
    } else if (p.key == "BODY") {
      std::string v = upper(p.value);
      if (v == "7BIT") env.body = BodyType::k7Bit;
      else if (v == "8BITMIME") env.body = BodyType::k8BitMime;
      else return junk("555 5.5.4 Error: unsupported BODY type");
    } else if (p.key == "SMTPUTF8") {
      if (p.has_value) return junk("501 5.5.4 Error: SMTPUTF8 takes no value");
      env.smtputf8 = true;
    } else if (p.key == "RET") {
      std::string v = upper(p.value);
      if (v != "FULL" && v != "HDRS") return junk("501 5.5.4 Error: bad RET parameter");
      env.ret = v;
    } else if (p.key == "ENVID") {
      std::string decoded;  // the DSN shows it decoded: it must be printable ASCII (RFC 3461 4.4)
      if (!p.has_value || p.value.size() > 100 || !xtext_decode(p.value, decoded) || has_control(decoded) ||
          has_8bit(decoded))
        return junk("501 5.5.4 Error: bad ENVID parameter");
      env.envid = p.value;
    } else {
      return junk("555 5.5.4 Error: unsupported parameter " + printable(p.key, 32));
    }
  }
  if (hooks_.disk_below_floor()) return reply("452 4.3.1 Error: insufficient system storage");
  env.mail_from = pp.null_path ? std::string() : pp.box.str();
  env.queue_id = hooks_.new_queue_id();
  env.helo = helo_;
  env.client_ip = client_.ip;
  env.tls = tls_desc_;
  tx_.env = std::move(env);
  commands_since_mail_ = 0;
  set_state(State::kMail);
  spdlog::info("queue_id={} client={} from=<{}> size={} body={}{}", tx_.env.queue_id, client_.ip,
               esc(tx_.env.mail_from), tx_.env.declared_size,
               tx_.env.body == BodyType::k8BitMime ? "8BITMIME" : "7BIT", tx_.env.smtputf8 ? " smtputf8" : "");
  reply("250 2.1.0 Ok");
}

void SmtpServerSession::cmd_rcpt(std::string_view arg) {
  if (state_ != State::kMail && state_ != State::kRcpt) return junk("503 5.5.1 Error: need MAIL command");
  if (tx_.bdat_used) return junk("503 5.5.1 Error: RCPT after BDAT");
  PathParse pp = parse_path_arg(arg, "TO", tx_.env.smtputf8);
  if (pp.error == PathError::kNonAscii) return junk("553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
  if (pp.error == PathError::kBadUtf8) return junk("501 5.1.3 Error: recipient address is not valid UTF-8");
  if (pp.error != PathError::kOk || pp.null_path) return junk("501 5.1.3 Error: bad recipient address syntax");
  if (!pp.params_ok) return junk("501 5.5.4 Error: bad or repeated parameter");
  Recipient r;
  for (auto& p : pp.params) {
    if (p.key == "NOTIFY" && esmtp_) {
      std::string v = upper(p.value);
      if (v != "NEVER") {
        size_t start = 0;
        while (start <= v.size()) {
          size_t comma = v.find(',', start);
          std::string item = v.substr(start, comma - start);
          if (item != "SUCCESS" && item != "FAILURE" && item != "DELAY")
            return junk("501 5.5.4 Error: bad NOTIFY parameter");
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
      }
      r.notify = v;
    } else if (p.key == "ORCPT" && esmtp_) {
      size_t semi = p.value.find(';');
      std::string decoded;  // the DSN's Original-Recipient shows it decoded: printable ASCII only
      if (semi == std::string::npos || semi == 0 || p.value.size() > 500 ||
          !xtext_decode(std::string_view(p.value).substr(semi + 1), decoded) || decoded.empty() ||
          has_control(decoded) || has_8bit(decoded) || has_control(p.value.substr(0, semi)))
        return junk("501 5.5.4 Error: bad ORCPT parameter");
      r.orcpt = p.value;
    } else {
      return junk("555 5.5.4 Error: unsupported parameter " + printable(p.key, 32));
    }
  }
  if (tx_.env.rcpts.size() >= cfg_->smtp.max_recipients) return reply("452 4.5.3 Error: too many recipients");
  policy::RcptAddress ra{pp.box.local, pp.box.domain, pp.box.source_route, pp.postmaster};
  policy::RelayVerdict verdict = policy::relay_decision(cfg_->relay, {client_.addr, client_.family}, ra);
  if (!policy::accepted(verdict)) {
    spdlog::info("queue_id={} client={} reject=relay reason={} to=<{}>", tx_.env.queue_id, client_.ip,
                 policy::verdict_name(verdict), esc(pp.box.str()));
    return junk("554 5.7.1 <" + printable(pp.box.str()) + ">: Relay access denied");
  }
  if (!pp.postmaster &&
      policy::recipient_lookup(cfg_->relay, pp.box.local, pp.box.domain) == policy::RecipientVerdict::kUnknown) {
    spdlog::info("queue_id={} client={} reject=unknown_recipient to=<{}>", tx_.env.queue_id, client_.ip,
                 esc(pp.box.str()));
    return junk("550 5.1.1 <" + printable(pp.box.str()) + ">: Recipient address rejected: User unknown");
  }
  if (pp.postmaster) {
    const std::string dom = cfg_->relay.domains.empty() ? cfg_->hostname : cfg_->relay.domains.front();
    r.address = "postmaster@" + (dom.size() > 1 && dom[0] == '.' ? dom.substr(1) : dom);
  } else {
    r.address = pp.box.str();
  }
  RcptCheck c;
  if (cfg_->relay.verify_recipients && verdict == policy::RelayVerdict::kLocalDomain && !pp.postmaster) {
    c = hooks_.check_recipient(r.address);
    if (c.verdict == RcptVerdict::kPending) {  // the answer comes through recipient_checked()
      rcpt_wait_ = true;
      rcpt_pending_ = std::move(r);
      return;
    }
  }
  finish_rcpt(std::move(r), c);
}

// Recipient verification's answer: the next hop knows the address, refused it, or could not be
// asked (450: the client tries again later; relay.verify_unreachable = "accept" says kAccept).
void SmtpServerSession::finish_rcpt(Recipient r, const RcptCheck& c) {
  const std::string detail = printable(c.detail, 300);
  if (c.verdict == RcptVerdict::kReject) {
    spdlog::info("queue_id={} client={} reject=unverified_recipient to=<{}> ({})", tx_.env.queue_id, client_.ip,
                 esc(r.address), esc(c.detail));
    return junk("550 5.1.1 <" + printable(r.address) + ">: Recipient address rejected: undeliverable address: " +
                detail);
  }
  if (c.verdict == RcptVerdict::kDefer) {
    spdlog::info("queue_id={} client={} defer=unverified_recipient to=<{}> ({})", tx_.env.queue_id, client_.ip,
                 esc(r.address), esc(c.detail));
    return reply("450 4.1.1 <" + printable(r.address) + ">: Recipient address rejected: unverified address: " +
                 detail);
  }
  tx_.env.rcpts.push_back(std::move(r));
  set_state(State::kRcpt);
  reply("250 2.1.5 Ok");
}

void SmtpServerSession::recipient_checked(RcptCheck c) {
  if (!rcpt_wait_ || state_ == State::kClosed) return;
  rcpt_wait_ = false;
  if (c.verdict == RcptVerdict::kPending) c = {RcptVerdict::kDefer, "verification gave no answer"};
  finish_rcpt(std::move(rcpt_pending_), c);
  if (processing_) return;
  src_ = in_;
  src_pos_ = 0;
  process();
}

bool SmtpServerSession::start_body() {
  tx_.env.received_at = hooks_.now_unix();
  if (!hooks_.begin_message(tx_.env)) return false;
  tx_.message_open = true;
  tx_.body_buf = received_header();
  tx_.body_size = 0;
  return true;
}

void SmtpServerSession::cmd_data(std::string_view arg) {
  if (!arg.empty()) return junk("501 5.5.4 Syntax: DATA");
  if (tx_.bdat_used) return junk("503 5.5.1 Error: DATA after BDAT");
  if (state_ == State::kMail) return junk("554 5.5.1 Error: no valid recipients");
  if (state_ != State::kRcpt) return junk("503 5.5.1 Error: need RCPT command");
  if (!start_body()) return reply("451 4.3.0 Error: queue file write error");
  tx_.bol = true;
  tx_.pending_cr = false;
  tx_.dot_state = 0;
  tx_.data_end = false;
  set_state(State::kData);
  reply("354 End data with <CR><LF>.<CR><LF>");
}

void SmtpServerSession::cmd_bdat(std::string_view arg) {
  size_t sp = arg.find(' ');
  std::string_view size_s = arg.substr(0, sp);
  std::string_view rest = sp == std::string_view::npos ? std::string_view() : arg.substr(sp + 1);
  uint64_t size = 0;
  if (!parse_u64(size_s, size) || (!rest.empty() && upper(rest) != "LAST")) {
    // The chunk length is unknown, so its bytes cannot be skipped: stop here.
    return close_with("501 5.5.4 Syntax: BDAT size [LAST]; closing connection");
  }
  const bool last = !rest.empty();
  tx_.chunk_left = size;
  tx_.bdat_error.clear();
  tx_.bdat_discard = false;
  if (state_ == State::kMail) tx_.bdat_error = "554 5.5.1 Error: no valid recipients";
  else if (state_ != State::kRcpt) tx_.bdat_error = "503 5.5.1 Error: need RCPT command";
  else if (!esmtp_) tx_.bdat_error = "503 5.5.1 Error: BDAT needs EHLO";
  if (tx_.bdat_error.empty() && !tx_.bdat_used && !start_body())
    tx_.bdat_error = "451 4.3.0 Error: queue file write error";
  if (!tx_.bdat_error.empty()) {
    tx_.bdat_discard = true;
    ++junk_count_;
  } else {
    tx_.bdat_used = true;
    tx_.bdat_last = last;
  }
  tx_.bdat_prev = state_;
  set_state(State::kBdatChunk);
  if (tx_.chunk_left == 0) end_of_message();
}

void SmtpServerSession::cmd_rset(std::string_view arg) {
  if (!arg.empty()) return junk("501 5.5.4 Syntax: RSET");
  if (!count_command()) return;
  reset_transaction();
  reply("250 2.0.0 Ok");
}

void SmtpServerSession::cmd_noop(std::string_view) {
  if (!count_command()) return;
  reply("250 2.0.0 Ok");
}

void SmtpServerSession::cmd_quit(std::string_view) {
  close_with("221 2.0.0 Bye");
}

void SmtpServerSession::cmd_vrfy(std::string_view arg) {
  if (arg.empty()) return junk("501 5.5.4 Syntax: VRFY address");
  if (!count_command()) return;
  reply("252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

void SmtpServerSession::cmd_expn(std::string_view) {
  if (!count_command()) return;
  reply("502 5.5.1 Error: EXPN not available");
}

void SmtpServerSession::cmd_help(std::string_view) {
  if (!count_command()) return;
  reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP" +
        std::string(tls_available_ && !tls_active_ ? " STARTTLS" : ""));
}

void SmtpServerSession::cmd_starttls(std::string_view arg) {
  if (!arg.empty()) return junk("501 5.5.4 Syntax: STARTTLS");
  if (tls_active_) return junk("554 5.5.1 Error: TLS already active");
  if (!tls_available_) return junk("454 4.7.0 TLS not available");
  if (state_ == State::kMail || state_ == State::kRcpt)
    return junk("503 5.5.1 Error: MAIL transaction in progress");
  reply("220 2.0.0 Ready to start TLS");
  // CVE-2011-0411 class: nothing the client sent before the handshake may be read as a command.
  discard_input();
  helo_.clear();
  esmtp_ = false;
  reset_transaction();
  set_state(State::kInit);
  starttls_pending_ = true;
}

void SmtpServerSession::tls_established(std::string version, std::string cipher, int bits) {
  starttls_pending_ = false;
  tls_active_ = true;
  tls_desc_ = version + " with cipher " + cipher + " (" + std::to_string(bits) + "/" +
              std::to_string(bits) + " bits)";
  in_.clear();  // (already empty: STARTTLS discarded it and feed() ignored plaintext since)
}

// --- message bodies -------------------------------------------------------------------------
//
// Content flows: consume_data (DATA: dot-unstuffing, the end) or consume_chunk (BDAT) ->
// content_char_run (the CRLF discipline: bare CR / LF refused or normalised) -> body_bytes (size)
// -> content_piece (the header section: its size, Received: count; long lines) -> store ->
// body_buf -> write_body. Each piece that reaches body_bytes is [octets without CR or LF] and
// optionally a final CRLF.

void SmtpServerSession::set_fault(BodyFault f) {
  if (tx_.fault != BodyFault::kNone) return;  // the first reason stands
  tx_.fault = f;
  tx_.body_buf.clear();
  tx_.line_buf.clear();
}

bool SmtpServerSession::rejecting() const { return tx_.fault != BodyFault::kNone; }

void SmtpServerSession::body_bytes(const char* p, size_t n) {
  tx_.body_size += n;
  if (rejecting()) return;
  if (tx_.body_size > cfg_->smtp.max_message_size) return set_fault(BodyFault::kTooBig);
  content_piece(p, n);
}

void SmtpServerSession::content_piece(const char* p, size_t n) {
  const bool eol = n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n';
  const size_t text = eol ? n - 2 : n;
  if (tx_.in_header) {
    tx_.header_bytes += n;
    if (tx_.header_bytes > cfg_->smtp.max_header_size) return set_fault(BodyFault::kHeaderTooBig);
    classify_line(p, text, eol);
    if (rejecting()) return;
  }
  if (tx_.in_header && tx_.drop_field) {  // a sender's X-Postern-Scan: (forged): never stored
    tx_.line_buf.clear();
    tx_.line_len = 0;
  } else if (tx_.in_header && tx_.kind != LineKind::kBody && cfg_->smtp.long_lines == LongLinePolicy::kFold) {
    header_line_piece(p, text, eol);
  } else if (tx_.in_header && !eol && (tx_.kind == LineKind::kName || tx_.kind == LineKind::kNameWsp)) {
    tx_.line_buf.append(p, text);  // the field name is not complete yet: held until it is (<= kMaxLine)
  } else {
    if (!tx_.line_buf.empty()) {  // held as a possible header line; it is not one
      std::string held;
      held.swap(tx_.line_buf);
      tx_.line_len = 0;
      body_line_piece(held.data(), held.size(), false);
    }
    body_line_piece(p, text, eol);
  }
  if (eol) {
    tx_.kind = LineKind::kStart;
    tx_.name_len = 0;
    tx_.head_pos = 0;
  }
}

// Decides, from its first octets, what the current line is: a header field ("Name:"), a
// continuation (leading WSP), or not a header line, which ends the header section like the
// empty line does (Postfix's cleanup does the same). Counts Received: fields (mail loops).
void SmtpServerSession::classify_line(const char* p, size_t text, bool eol) {
  for (size_t i = 0; i < text; ++i) {
    const unsigned char c = p[i];
    if (++tx_.head_pos > kMaxLine && tx_.kind != LineKind::kField && tx_.kind != LineKind::kContinuation) {
      tx_.kind = LineKind::kBody;  // no field name is that long
      break;
    }
    switch (tx_.kind) {
      case LineKind::kStart:
        if (!wsp(c)) tx_.drop_field = false;  // a new field (or the body): a dropped one has ended
        if (wsp(c)) tx_.kind = LineKind::kContinuation;
        else if (ftext(c)) tx_.kind = LineKind::kName;
        else tx_.kind = LineKind::kBody;
        if (tx_.kind == LineKind::kName) tx_.name[tx_.name_len++] = static_cast<char>(std::tolower(c));
        break;
      case LineKind::kName:
        if (c == ':') field_name_done();
        else if (wsp(c)) tx_.kind = LineKind::kNameWsp;  // obs-field: WSP before the colon
        else if (!ftext(c)) tx_.kind = LineKind::kBody;
        else if (tx_.name_len < sizeof tx_.name) tx_.name[tx_.name_len++] = static_cast<char>(std::tolower(c));
        break;
      case LineKind::kNameWsp:
        if (c == ':') field_name_done();
        else if (!wsp(c)) tx_.kind = LineKind::kBody;
        break;
      default:
        return;  // decided
    }
    if (tx_.kind == LineKind::kBody) break;
  }
  if (eol && tx_.kind != LineKind::kField && tx_.kind != LineKind::kContinuation) {
    tx_.kind = LineKind::kBody;  // an empty line, or no colon before the end of the line
  }
  if (tx_.kind == LineKind::kBody) {
    tx_.in_header = false;
    tx_.drop_field = false;
  }
}

void SmtpServerSession::field_name_done() {
  tx_.kind = LineKind::kField;
  // The gate's own header: whatever a sender put there is removed (scan.enabled), so the one
  // Postern adds on delivery is the only one.
  if (cfg_->scan.enabled && std::string_view(tx_.name, tx_.name_len) == "x-postern-scan") tx_.drop_field = true;
  if (std::string_view(tx_.name, tx_.name_len) != "received") return;
  if (++tx_.hops >= cfg_->smtp.max_hops) set_fault(BodyFault::kTooManyHops);
}

void SmtpServerSession::store(const char* p, size_t n) {
  tx_.body_buf.append(p, n);
  if (tx_.body_buf.size() >= kBodyFlush) flush_body();
}

// A header line, held until its end so that an over-long one can be folded where it has white
// space: CRLF inserted before a WSP is folding white space (RFC 5322 2.2.3), which unfolding
// removes again, so the field means exactly what it meant. With no WSP to use: CRLF SP.
void SmtpServerSession::header_line_piece(const char* p, size_t text, bool eol) {
  while (text > 0) {
    size_t take = std::min(text, kMaxLine + 1 - tx_.line_buf.size());
    tx_.line_buf.append(p, take);
    p += take;
    text -= take;
    if (tx_.line_buf.size() > kMaxLine) fold_header_line();
  }
  if (!eol) return;
  store(tx_.line_buf.data(), tx_.line_buf.size());
  store("\r\n", 2);
  tx_.line_buf.clear();
}

void SmtpServerSession::fold_header_line() {
  std::string& b = tx_.line_buf;
  size_t at = 0;  // the last WSP within the limit with something other than WSP before it
  bool seen_text = false;
  for (size_t i = 0; i <= kMaxLine && i < b.size(); ++i) {
    if (wsp(b[i])) {
      if (seen_text && i > 0) at = i;
    } else {
      seen_text = true;
    }
  }
  ++tx_.folded;
  if (at > 0) {
    store(b.data(), at);
    store("\r\n", 2);
    b.erase(0, at);  // the WSP starts the continuation line
    return;
  }
  size_t k = char_boundary(b.data(), kMaxLine);
  if (k == 0) k = kMaxLine;
  store(b.data(), k);
  store("\r\n ", 3);
  b.erase(0, k);
  b.insert(b.begin(), ' ');
}

// A body line (or a header line when not folding): streamed. Over 998 octets it is broken with
// CRLF SP (smtp.long_lines = "fold", what Postfix's smtp_line_length_limit does on the way
// out), refused ("reject") or kept ("accept").
void SmtpServerSession::body_line_piece(const char* p, size_t text, bool eol) {
  const LongLinePolicy policy = cfg_->smtp.long_lines;
  if (eol && (tx_.line_len + text <= kMaxLine || policy == LongLinePolicy::kAccept)) {
    store(p, text + 2);  // the usual case: a whole line, its CRLF right behind it
    tx_.line_len = 0;
    return;
  }
  while (policy != LongLinePolicy::kAccept && tx_.line_len + text > kMaxLine) {
    if (policy == LongLinePolicy::kReject) return set_fault(BodyFault::kLongLine);
    size_t k = kMaxLine - tx_.line_len;
    if (k > 0 && k < text) k = char_boundary(p, k);
    store(p, k);
    store("\r\n ", 3);
    ++tx_.folded;
    p += k;
    text -= k;
    tx_.line_len = 1;
  }
  store(p, text);
  tx_.line_len += static_cast<uint32_t>(std::min<size_t>(text, UINT32_MAX - tx_.line_len));
  if (eol) {
    store("\r\n", 2);
    tx_.line_len = 0;
  }
}

void SmtpServerSession::flush_body() {
  if (tx_.body_buf.empty() || rejecting()) return;
  if (!hooks_.write_body(tx_.body_buf)) set_fault(BodyFault::kWriteFailed);
  tx_.env.message_size += tx_.body_buf.size();
  if (!tx_.env.eight_bit) tx_.env.eight_bit = has_8bit(tx_.body_buf);
  tx_.body_buf.clear();
}

// Content bytes (no dot handling): enforces the CRLF discipline. A bare CR or LF is either
// refused at the end of the message or turned into CRLF, by policy.
void SmtpServerSession::content_char_run(const char* p, size_t n) {
  // Fast path: one ordinary line ending in CR LF (what consume_data hands over almost always).
  if (!tx_.pending_cr && n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n' &&
      std::memchr(p, '\r', n - 2) == nullptr && std::memchr(p, '\n', n - 2) == nullptr) {
    body_bytes(p, n);
    return;
  }
  const bool normalize = cfg_->smtp.bare_lf == BareLfPolicy::kNormalize;
  auto bare = [&] {
    tx_.bare_eol = true;
    if (normalize) body_bytes("\r\n", 2);
    else set_fault(BodyFault::kBareEol);
  };
  size_t run = 0;  // start of the pending run of ordinary bytes
  for (size_t i = 0; i < n; ++i) {
    char c = p[i];
    if (tx_.pending_cr) {
      tx_.pending_cr = false;
      if (c == '\n') {
        body_bytes("\r\n", 2);
        run = i + 1;
        continue;
      }
      bare();  // bare CR
    }
    if (c == '\r' || c == '\n') {
      body_bytes(p + run, i - run);
      run = i + 1;
      if (c == '\r') tx_.pending_cr = true;
      else bare();  // bare LF
    }
  }
  body_bytes(p + run, n - run);
}

// DATA: undo dot-stuffing and find the end, which is only CR LF "." CR LF as received.
size_t SmtpServerSession::consume_data(std::string_view in) {
  size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    if (tx_.dot_state == 1) {  // "." at the start of a line
      if (c == '\r') {
        tx_.dot_state = 2;
        ++i;
        continue;
      }
      tx_.dot_state = 0;  // a stuffed dot: dropped; c is ordinary content
    } else if (tx_.dot_state == 2) {  // "." CR at the start of a line
      if (c == '\n') {
        tx_.data_end = true;
        return i + 1;
      }
      tx_.dot_state = 0;
      content_char_run("\r", 1);  // the CR after the dot was a bare CR
      continue;
    }
    if (tx_.bol && c == '.' && !tx_.pending_cr) {
      tx_.bol = false;
      tx_.dot_state = 1;
      ++i;
      continue;
    }
    // Take a run up to and including the next line break.
    const void* lf = std::memchr(in.data() + i, '\n', in.size() - i);
    size_t j = lf ? static_cast<size_t>(static_cast<const char*>(lf) - in.data()) : in.size();
    bool had_cr_before = tx_.pending_cr;
    size_t end = j < in.size() ? j + 1 : j;
    content_char_run(in.data() + i, end - i);
    if (j < in.size()) {
      // A line starts after CR LF only; a bare LF never starts a line that could end the data.
      bool crlf = (j > i && in[j - 1] == '\r') || (j == i && had_cr_before);
      tx_.bol = crlf;
    } else {
      tx_.bol = false;
    }
    i = end;
  }
  return i;
}

size_t SmtpServerSession::consume_chunk(std::string_view in) {
  size_t n = static_cast<size_t>(std::min<uint64_t>(tx_.chunk_left, in.size()));
  if (!tx_.bdat_discard) content_char_run(in.data(), n);
  tx_.chunk_left -= n;
  return n;
}

namespace {

const char* fault_reply(BodyFault f) {
  switch (f) {
    case BodyFault::kTooBig: return "552 5.3.4 Error: message size exceeds fixed limit";
    case BodyFault::kBareEol: return "550 5.5.2 Error: bare CR or LF in message (use CRLF line endings)";
    case BodyFault::kHeaderTooBig: return "552 5.3.4 Error: message header size exceeds limit";
    case BodyFault::kTooManyHops: return "554 5.4.6 Error: too many hops (Received: headers), mail loop?";
    case BodyFault::kLongLine: return "550 5.6.0 Error: message has lines over 998 octets (RFC 5322 2.1.1)";
    case BodyFault::kWriteFailed: return "451 4.3.0 Error: queue file write error";
    case BodyFault::kNone: break;
  }
  return "";
}

const char* fault_name(BodyFault f) {
  switch (f) {
    case BodyFault::kTooBig: return "size";
    case BodyFault::kBareEol: return "bare_lf";
    case BodyFault::kHeaderTooBig: return "header_size";
    case BodyFault::kTooManyHops: return "hops";
    case BodyFault::kLongLine: return "long_line";
    case BodyFault::kWriteFailed: return "write";
    case BodyFault::kNone: break;
  }
  return "";
}

}  // namespace

void SmtpServerSession::end_of_message() {
  if (state_ == State::kBdatChunk) {
    if (tx_.bdat_discard) {
      tx_.bdat_discard = false;
      set_state(tx_.bdat_prev);
      if (junk_count_ > cfg_->smtp.max_junk_commands)
        return close_with("421 4.7.0 " + cfg_->hostname + " Error: too many errors");
      return reply(tx_.bdat_error);
    }
    if (!tx_.bdat_last) {
      set_state(State::kRcpt);
      return reply("250 2.0.0 Ok: " + std::to_string(tx_.body_size) + " octets received");
    }
  }
  if (tx_.pending_cr) {  // message ended on a CR that no LF followed (BDAT only)
    tx_.pending_cr = false;
    tx_.bare_eol = true;
    if (cfg_->smtp.bare_lf == BareLfPolicy::kNormalize) body_bytes("\r\n", 2);
    else set_fault(BodyFault::kBareEol);
  }
  if (!rejecting() && !tx_.line_buf.empty()) {  // a last header line without CRLF (BDAT only)
    store(tx_.line_buf.data(), tx_.line_buf.size());
    tx_.line_buf.clear();
  }
  flush_body();
  if (rejecting()) {
    spdlog::info("queue_id={} client={} reject={} size={} header_size={} hops={}", tx_.env.queue_id, client_.ip,
                 fault_name(tx_.fault), tx_.body_size, tx_.header_bytes, tx_.hops);
    std::string code = fault_reply(tx_.fault);
    reset_transaction();
    return reply(code);
  }
  if (tx_.folded > 0)
    spdlog::info("queue_id={} client={} long_lines=folded breaks={}", tx_.env.queue_id, client_.ip, tx_.folded);
  set_state(State::kAwaitScan);
  if (hooks_.scan_message(tx_.env)) return;  // scan_done() follows (perhaps already has)
  set_state(State::kAwaitCommit);
  hooks_.commit_message(tx_.env);
}

void SmtpServerSession::scan_done(ScanOutcome o) {
  if (state_ != State::kAwaitScan) return;
  if (o.commit) {
    tx_.env.scan_header = std::move(o.header);
    tx_.env.subject_at = o.subject_edit.empty() ? -1 : o.subject_at;
    tx_.env.subject_edit = std::move(o.subject_edit);
    if (o.quarantine) tx_.env.quarantined = o.signature.empty() ? "unknown" : o.signature;
    set_state(State::kAwaitCommit);
    hooks_.commit_message(tx_.env);
    return;
  }
  spdlog::info("queue_id={} client={} refused by the scanning gate: {}", tx_.env.queue_id, client_.ip, esc(o.reply));
  reset_transaction();  // the written file is discarded: nothing is queued
  set_state(State::kReady);
  reply(o.reply);
  if (processing_) return;
  src_ = in_;
  src_pos_ = 0;
  process();
}

void SmtpServerSession::commit_done(bool ok) {
  if (state_ != State::kAwaitCommit) return;
  tx_.message_open = false;  // the queue owns the file now, whatever the outcome
  if (ok) {
    ++accepted_;
    junk_count_ = 0;  // the limit is on errors without delivering mail (Postfix's smtpd_hard_error_limit)
    reply("250 2.0.0 Ok: queued as " + tx_.env.queue_id);
  } else {
    reply("451 4.3.0 Error: queue file write error");
  }
  reset_transaction();
  set_state(State::kReady);
  if (processing_) return;  // answered synchronously from inside process(): it continues
  src_ = in_;
  src_pos_ = 0;
  process();
}

std::string SmtpServerSession::received_header() const {
  std::string proto = tx_.env.smtputf8 ? "UTF8SMTP" : (esmtp_ ? "ESMTP" : "SMTP");
  if (tls_active_) proto += "S";
  // RFC 5321 4.1.3 address literal: [192.0.2.1], [IPv6:2001:db8::1].
  const std::string literal = (client_.family == AF_INET6 ? "[IPv6:" : "[") + client_.ip + "]";
  std::string h = "Received: from " + printable(helo_, 128) + " (" + literal + ")\r\n\tby " +
                  cfg_->hostname + " (Postern) with " + proto + " id " + tx_.env.queue_id;
  if (tls_active_) h += "\r\n\t(using " + tls_desc_ + ")";
  if (tx_.env.rcpts.size() == 1) h += "\r\n\tfor <" + printable(tx_.env.rcpts[0].address) + ">";
  h += "; " + hooks_.rfc5322_date() + "\r\n";
  return h;
}

void SmtpServerSession::timeout() {
  if (state_ == State::kClosed || awaiting_commit()) return;
  close_with("421 4.4.2 " + cfg_->hostname + " Error: timeout exceeded");
}

void SmtpServerSession::session_expired() {
  if (state_ == State::kClosed || awaiting_commit()) return;
  close_with("421 4.4.2 " + cfg_->hostname + " Error: session duration limit exceeded");
}

void SmtpServerSession::shutting_down() {
  draining_ = true;
  if (state_ == State::kPreGreet || state_ == State::kInit || state_ == State::kReady)
    close_with("421 4.3.2 " + cfg_->hostname + " Service shutting down, closing transmission channel");
}

void SmtpServerSession::connection_lost() {
  if (state_ == State::kAwaitCommit) return;  // the queue finishes it; the client may retry
  // kAwaitScan: the client left before any verdict: the message is dropped (it never got a 250)
  // and the driver ignores the scan's late answer.
  if (tx_.message_open) {
    hooks_.abort_message();
    tx_.message_open = false;
  }
  set_state(State::kClosed);
}

}  // namespace postern::smtp
