// smtp_server_session.cpp — the inbound SMTP state machine. See the header for what is
// security-sensitive. One state enum, one transition function (set_state), one command table.
#include "mta/server/smtp_server_session.h"

#include "base/text.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace postern::smtp {
namespace {

constexpr size_t kBodyFlush = 64 * 1024;

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
  if (s.empty() || s.size() > 255) return false;
  for (unsigned char c : s)
    if (c <= 32 || c == 127) return false;
  return true;
}

}  // namespace

const char* state_name(State s) {
  switch (s) {
    case State::kInit: return "init";
    case State::kReady: return "ready";
    case State::kMail: return "mail";
    case State::kRcpt: return "rcpt";
    case State::kData: return "data";
    case State::kBdatChunk: return "bdat";
    case State::kAwaitCommit: return "commit";
    case State::kClosed: return "closed";
  }
  return "?";
}

SmtpServerSession::SmtpServerSession(std::shared_ptr<const Config> cfg, ClientInfo client,
                                     SessionHooks& hooks, bool tls_available)
    : cfg_(std::move(cfg)), client_(std::move(client)), hooks_(hooks), tls_available_(tls_available) {}

std::string SmtpServerSession::greeting() const {
  return "220 " + cfg_->hostname + " ESMTP Postern\r\n";
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
  if (message_open_) {
    hooks_.abort_message();
    message_open_ = false;
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
  return state_ != State::kAwaitCommit && state_ != State::kClosed && !starttls_pending_;
}

void SmtpServerSession::feed(std::string_view bytes) {
  if (state_ == State::kClosed || starttls_pending_) return;
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
  while (state_ != State::kClosed && state_ != State::kAwaitCommit && !starttls_pending_ &&
         src_pos_ < src_.size()) {
    std::string_view avail = src_.substr(src_pos_);
    if (state_ == State::kData) {
      src_pos_ += consume_data(avail);
      if (data_end_) end_of_message();
    } else if (state_ == State::kBdatChunk) {
      src_pos_ += consume_chunk(avail);
      if (chunk_left_ == 0) end_of_message();
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

void SmtpServerSession::reset_transaction() {
  if (message_open_) {
    hooks_.abort_message();
    message_open_ = false;
  }
  env_ = Envelope{};
  bdat_used_ = bdat_last_ = bdat_discard_ = false;
  bdat_error_.clear();
  chunk_left_ = body_size_ = 0;
  too_big_ = bare_eol_ = write_failed_ = data_end_ = false;
  body_buf_.clear();
  bol_ = true;
  pending_cr_ = false;
  dot_state_ = 0;
  if (state_ == State::kMail || state_ == State::kRcpt || state_ == State::kData ||
      state_ == State::kBdatChunk || state_ == State::kAwaitCommit)
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
      if (!p.has_value || p.value.size() > 100 || !valid_xtext(p.value))
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
  env_ = std::move(env);
  commands_since_mail_ = 0;
  set_state(State::kMail);
  spdlog::info("queue_id={} client={} from=<{}> size={} body={}{}", env_.queue_id, client_.ip,
               printable(env_.mail_from), env_.declared_size,
               env_.body == BodyType::k8BitMime ? "8BITMIME" : "7BIT", env_.smtputf8 ? " smtputf8" : "");
  reply("250 2.1.0 Ok");
}

bool SmtpServerSession::relay_allowed(const Mailbox& box, bool postmaster) const {
  if (postmaster) return true;
  for (auto& net : cfg_->relay.networks)
    if (network_contains(net, client_.addr, client_.family)) return true;
  // Sender-specified routing (source routes, %-hack, bang paths, quoted "a@b") is never relayed
  // for untrusted clients, even to our own domains: a downstream might honour it.
  if (box.source_route) return false;
  if (box.local.find_first_of("%!@") != std::string::npos) return false;
  for (auto& d : cfg_->relay.domains) {
    if (d == box.domain) return true;
    if (!d.empty() && d[0] == '.' && box.domain.size() > d.size() &&
        box.domain.compare(box.domain.size() - d.size(), d.size(), d) == 0)
      return true;
  }
  return false;
}

void SmtpServerSession::cmd_rcpt(std::string_view arg) {
  if (state_ != State::kMail && state_ != State::kRcpt) return junk("503 5.5.1 Error: need MAIL command");
  if (bdat_used_) return junk("503 5.5.1 Error: RCPT after BDAT");
  PathParse pp = parse_path_arg(arg, "TO", env_.smtputf8);
  if (pp.error == PathError::kNonAscii) return junk("553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
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
      if (semi == std::string::npos || semi == 0 || p.value.size() > 500 ||
          !valid_xtext(std::string_view(p.value).substr(semi + 1)))
        return junk("501 5.5.4 Error: bad ORCPT parameter");
      r.orcpt = p.value;
    } else {
      return junk("555 5.5.4 Error: unsupported parameter " + printable(p.key, 32));
    }
  }
  if (env_.rcpts.size() >= cfg_->smtp.max_recipients) return reply("452 4.5.3 Error: too many recipients");
  if (!relay_allowed(pp.box, pp.postmaster)) {
    spdlog::info("queue_id={} client={} reject=relay to=<{}>", env_.queue_id, client_.ip, printable(pp.box.str()));
    return junk("554 5.7.1 <" + printable(pp.box.str()) + ">: Relay access denied");
  }
  if (pp.postmaster) {
    const std::string dom = cfg_->relay.domains.empty() ? cfg_->hostname : cfg_->relay.domains.front();
    r.address = "postmaster@" + (dom.size() > 1 && dom[0] == '.' ? dom.substr(1) : dom);
  } else {
    r.address = pp.box.str();
  }
  env_.rcpts.push_back(std::move(r));
  set_state(State::kRcpt);
  reply("250 2.1.5 Ok");
}

bool SmtpServerSession::start_body() {
  env_.received_at = hooks_.now_unix();
  if (!hooks_.begin_message(env_)) return false;
  message_open_ = true;
  body_buf_ = received_header();
  body_size_ = 0;
  return true;
}

void SmtpServerSession::cmd_data(std::string_view arg) {
  if (!arg.empty()) return junk("501 5.5.4 Syntax: DATA");
  if (bdat_used_) return junk("503 5.5.1 Error: DATA after BDAT");
  if (state_ == State::kMail) return junk("554 5.5.1 Error: no valid recipients");
  if (state_ != State::kRcpt) return junk("503 5.5.1 Error: need RCPT command");
  if (!start_body()) return reply("451 4.3.0 Error: queue file write error");
  bol_ = true;
  pending_cr_ = false;
  dot_state_ = 0;
  data_end_ = false;
  set_state(State::kData);
  reply("354 End data with <CR><LF>.<CR><LF>");
}

void SmtpServerSession::cmd_bdat(std::string_view arg) {
  size_t sp = arg.find(' ');
  std::string_view size_s = arg.substr(0, sp);
  std::string_view rest = sp == std::string_view::npos ? std::string_view() : arg.substr(sp + 1);
  uint64_t size = 0;
  bool last = false;
  if (!parse_u64(size_s, size) || (!rest.empty() && upper(rest) != "LAST")) {
    // The chunk length is unknown, so its bytes cannot be skipped: stop here.
    return close_with("501 5.5.4 Syntax: BDAT size [LAST]; closing connection");
  }
  last = !rest.empty();
  chunk_left_ = size;
  bdat_error_.clear();
  bdat_discard_ = false;
  if (state_ == State::kMail) bdat_error_ = "554 5.5.1 Error: no valid recipients";
  else if (state_ != State::kRcpt) bdat_error_ = "503 5.5.1 Error: need RCPT command";
  else if (!esmtp_) bdat_error_ = "503 5.5.1 Error: BDAT needs EHLO";
  if (bdat_error_.empty() && !bdat_used_) {
    if (!start_body()) bdat_error_ = "451 4.3.0 Error: queue file write error";
    else pending_cr_ = false;
  }
  if (!bdat_error_.empty()) {
    bdat_discard_ = true;
    ++junk_count_;
  } else {
    bdat_used_ = true;
    bdat_last_ = last;
  }
  bdat_prev_ = state_;
  set_state(State::kBdatChunk);
  if (chunk_left_ == 0) end_of_message();
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

void SmtpServerSession::body_bytes(const char* p, size_t n) {
  body_size_ += n;
  if (too_big_ || write_failed_ || (bare_eol_ && cfg_->smtp.bare_lf == BareLfPolicy::kReject)) return;
  if (body_size_ > cfg_->smtp.max_message_size) {
    too_big_ = true;
    body_buf_.clear();
    return;
  }
  body_buf_.append(p, n);
  if (body_buf_.size() >= kBodyFlush) flush_body();
}

void SmtpServerSession::flush_body() {
  if (body_buf_.empty() || write_failed_) return;
  if (!hooks_.write_body(body_buf_)) write_failed_ = true;
  env_.message_size += body_buf_.size();
  if (!env_.eight_bit) env_.eight_bit = has_8bit(body_buf_);
  body_buf_.clear();
}

// Content bytes (no dot handling): enforces the CRLF discipline. A bare CR or LF is either
// refused at the end of the message or turned into CRLF, by policy.
void SmtpServerSession::content_char_run(const char* p, size_t n) {
  // Fast path: one ordinary line ending in CR LF (what consume_data hands over almost always).
  if (!pending_cr_ && n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n' &&
      std::memchr(p, '\r', n - 2) == nullptr && std::memchr(p, '\n', n - 2) == nullptr) {
    body_bytes(p, n);
    return;
  }
  const bool normalize = cfg_->smtp.bare_lf == BareLfPolicy::kNormalize;
  size_t run = 0;  // start of the pending run of ordinary bytes
  for (size_t i = 0; i < n; ++i) {
    char c = p[i];
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        body_bytes("\r\n", 2);
        run = i + 1;
        continue;
      }
      bare_eol_ = true;  // bare CR
      if (normalize) body_bytes("\r\n", 2);
    }
    if (c == '\r' || c == '\n') {
      body_bytes(p + run, i - run);
      run = i + 1;
      if (c == '\r') {
        pending_cr_ = true;
      } else {
        bare_eol_ = true;  // bare LF
        if (normalize) body_bytes("\r\n", 2);
      }
    }
  }
  body_bytes(p + run, n - run);
}

// DATA: undo dot-stuffing and find the end, which is only CR LF "." CR LF as received.
size_t SmtpServerSession::consume_data(std::string_view in) {
  size_t i = 0;
  while (i < in.size()) {
    char c = in[i];
    if (dot_state_ == 1) {  // "." at the start of a line
      if (c == '\r') {
        dot_state_ = 2;
        ++i;
        continue;
      }
      dot_state_ = 0;  // a stuffed dot: dropped; c is ordinary content
    } else if (dot_state_ == 2) {  // "." CR at the start of a line
      if (c == '\n') {
        data_end_ = true;
        return i + 1;
      }
      dot_state_ = 0;
      content_char_run("\r", 1);  // the CR after the dot was a bare CR
      continue;
    }
    if (bol_ && c == '.' && !pending_cr_) {
      bol_ = false;
      dot_state_ = 1;
      ++i;
      continue;
    }
    // Take a run up to and including the next line break.
    const void* lf = std::memchr(in.data() + i, '\n', in.size() - i);
    size_t j = lf ? static_cast<size_t>(static_cast<const char*>(lf) - in.data()) : in.size();
    bool had_cr_before = pending_cr_;
    size_t end = j < in.size() ? j + 1 : j;
    content_char_run(in.data() + i, end - i);
    if (j < in.size()) {
      // A line starts after CR LF only; a bare LF never starts a line that could end the data.
      bool crlf = (j > i && in[j - 1] == '\r') || (j == i && had_cr_before);
      bol_ = crlf;
    } else {
      bol_ = false;
    }
    i = end;
  }
  return i;
}

size_t SmtpServerSession::consume_chunk(std::string_view in) {
  size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_left_, in.size()));
  if (!bdat_discard_) content_char_run(in.data(), n);
  chunk_left_ -= n;
  return n;
}

void SmtpServerSession::end_of_message() {
  if (state_ == State::kBdatChunk) {
    if (bdat_discard_) {
      bdat_discard_ = false;
      set_state(bdat_prev_);
      if (junk_count_ > cfg_->smtp.max_junk_commands)
        return close_with("421 4.7.0 " + cfg_->hostname + " Error: too many errors");
      return reply(bdat_error_);
    }
    if (!bdat_last_) {
      set_state(State::kRcpt);
      return reply("250 2.0.0 Ok: " + std::to_string(body_size_) + " octets received");
    }
  }
  if (pending_cr_) {  // message ended on a CR that no LF followed (BDAT only)
    pending_cr_ = false;
    bare_eol_ = true;
    if (cfg_->smtp.bare_lf == BareLfPolicy::kNormalize) body_bytes("\r\n", 2);
  }
  flush_body();
  const char* why = nullptr;
  std::string code;
  if (too_big_) {
    why = "size";
    code = "552 5.3.4 Error: message size exceeds fixed limit";
  } else if (bare_eol_ && cfg_->smtp.bare_lf == BareLfPolicy::kReject) {
    why = "bare_lf";
    code = "550 5.5.2 Error: bare CR or LF in message (use CRLF line endings)";
  } else if (write_failed_) {
    why = "write";
    code = "451 4.3.0 Error: queue file write error";
  }
  if (why) {
    spdlog::info("queue_id={} client={} reject={} size={}", env_.queue_id, client_.ip, why, body_size_);
    reset_transaction();
    return reply(code);
  }
  set_state(State::kAwaitCommit);
  hooks_.commit_message(env_);
}

void SmtpServerSession::commit_done(bool ok) {
  if (state_ != State::kAwaitCommit) return;
  message_open_ = false;  // the queue owns the file now, whatever the outcome
  if (ok) {
    ++accepted_;
    reply("250 2.0.0 Ok: queued as " + env_.queue_id);
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
  std::string proto = env_.smtputf8 ? "UTF8SMTP" : (esmtp_ ? "ESMTP" : "SMTP");
  if (tls_active_) proto += "S";
  std::string h = "Received: from " + printable(helo_, 128) + " ([" + client_.ip + "])\r\n\tby " +
                  cfg_->hostname + " (Postern) with " + proto + " id " + env_.queue_id;
  if (tls_active_) h += "\r\n\t(using " + tls_desc_ + ")";
  if (env_.rcpts.size() == 1) h += "\r\n\tfor <" + printable(env_.rcpts[0].address) + ">";
  h += "; " + hooks_.rfc5322_date() + "\r\n";
  return h;
}

void SmtpServerSession::timeout() {
  if (state_ == State::kClosed || state_ == State::kAwaitCommit) return;
  close_with("421 4.4.2 " + cfg_->hostname + " Error: timeout exceeded");
}

void SmtpServerSession::session_expired() {
  if (state_ == State::kClosed || state_ == State::kAwaitCommit) return;
  close_with("421 4.4.2 " + cfg_->hostname + " Error: session duration limit exceeded");
}

void SmtpServerSession::shutting_down() {
  draining_ = true;
  if (state_ == State::kInit || state_ == State::kReady)
    close_with("421 4.3.2 " + cfg_->hostname + " Service shutting down, closing transmission channel");
}

void SmtpServerSession::connection_lost() {
  if (state_ == State::kAwaitCommit) return;  // the queue finishes it; the client may retry
  if (message_open_) {
    hooks_.abort_message();
    message_open_ = false;
  }
  set_state(State::kClosed);
}

}  // namespace postern::smtp
