// smtp_client_session.cpp — the outbound SMTP state machine. See the header for the security
// notes. One state enum, one transition function, replies handled per state in on_reply().
#include "mta/client/smtp_client_session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace postern::smtp {
namespace {

bool is_8bit_body(const Envelope& e) { return e.body == BodyType::k8BitMime; }


}  // namespace

const char* SmtpClientSession::state_name(State s) {
  using S = SmtpClientSession::State;
  switch (s) {
    case S::kGreeting: return "greeting";
    case S::kEhlo: return "ehlo";
    case S::kHelo: return "helo";
    case S::kStarttls: return "starttls";
    case S::kTlsHandshake: return "tls-handshake";
    case S::kMail: return "mail/rcpt";
    case S::kData: return "data";
    case S::kBody: return "body";
    case S::kFinal: return "end-of-data";
    case S::kRset: return "rset";
    case S::kIdle: return "idle";
    case S::kQuit: return "quit";
    case S::kDone: return "done";
  }
  return "?";
}

void DotStuffer::stuff(std::string_view in, std::string& out) {
  if (in.empty()) return;
  out.reserve(out.size() + in.size() + 64);
  size_t pos = 0;
  while (pos < in.size()) {
    if (bol_ && in[pos] == '.') out.push_back('.');  // the original dot follows
    const void* lf = std::memchr(in.data() + pos, '\n', in.size() - pos);
    size_t end = lf ? static_cast<size_t>(static_cast<const char*>(lf) - in.data()) + 1 : in.size();
    out.append(in.data() + pos, end - pos);
    bol_ = lf != nullptr;
    pos = end;
  }
  last_ = in.back();
}

void DotStuffer::finish(std::string& out) {
  out.append(last_ == '\n' ? ".\r\n" : "\r\n.\r\n");
}

SmtpClientSession::SmtpClientSession(Options opt, std::vector<ClientMessage> msgs)
    : opt_(std::move(opt)), msgs_(std::move(msgs)) {}

void SmtpClientSession::set_state(State s) {
  SPDLOG_TRACE("smtp-client state {} -> {}", state_name(state_), state_name(s));
  state_ = s;
}

std::string SmtpClientSession::take_output() {
  std::string r;
  r.swap(out_);
  return r;
}

void SmtpClientSession::send(std::string line) {
  out_ += line;
  out_ += "\r\n";
}

bool SmtpClientSession::peer_has(const std::string& ext) const {
  return std::find(ext_.begin(), ext_.end(), ext) != ext_.end();
}

std::vector<RcptResult> SmtpClientSession::take_results() {
  std::vector<RcptResult> r;
  r.swap(results_);
  return r;
}

std::string SmtpClientSession::enhanced(const Reply& r) {
  // "250 2.1.5 Ok" -> "2.1.5"; else derived from the reply code.
  const std::string& t = r.text;
  if (t.size() > 9 && std::isdigit(static_cast<unsigned char>(t[4])) && t[5] == '.') {
    size_t end = t.find(' ', 4);
    std::string s = t.substr(4, end == std::string::npos ? std::string::npos : end - 4);
    if (s.size() >= 5 && s[0] == t[0]) return s;
  }
  return std::string(1, static_cast<char>('0' + r.code / 100)) + ".0.0";
}

// Takes one complete reply from in_. bad: the server sent something no SMTP server sends.
bool SmtpClientSession::parse_reply(Reply& r, bool& bad) {
  bad = false;
  size_t pos = 0, lines = 0;
  r = Reply{};
  for (;;) {
    size_t lf = in_.find('\n', pos);
    if (lf == std::string::npos) {
      if (in_.size() > opt_.max_reply_bytes) bad = true;
      return false;
    }
    std::string line = in_.substr(pos, lf - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    pos = lf + 1;
    if (++lines > opt_.max_reply_lines || pos > opt_.max_reply_bytes) {
      bad = true;
      return false;
    }
    if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
        !std::isdigit(static_cast<unsigned char>(line[1])) ||
        !std::isdigit(static_cast<unsigned char>(line[2])) || line[0] < '2' || line[0] > '5' ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      bad = true;
      return false;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (r.code == 0) r.code = code;
    else if (code != r.code) {
      bad = true;
      return false;
    }
    r.lines.push_back(line.size() > 4 ? line.substr(4) : "");
    if (r.text.empty()) r.text = line;
    else r.text += "; " + r.lines.back();
    if (line.size() == 3 || line[3] == ' ') break;
  }
  in_.erase(0, pos);
  return true;
}

void SmtpClientSession::feed(std::string_view bytes) {
  if (state_ == State::kDone || state_ == State::kTlsHandshake) return;
  in_.append(bytes);
  if (state_ == State::kBody && in_.size() > opt_.max_reply_bytes) {  // a flood while we send the body
    in_.clear();
    connection_lost("server sent more than " + std::to_string(opt_.max_reply_bytes) +
                    " bytes while the message was being sent");
    return;
  }
  while (state_ != State::kDone && state_ != State::kTlsHandshake && state_ != State::kBody) {
    Reply r;
    bool bad = false;
    if (!parse_reply(r, bad)) {
      if (bad) {
        in_.clear();
        connection_lost("malformed or oversized reply from server in state " +
                        std::string(state_name(state_)));
        send("QUIT");
      }
      return;
    }
    on_reply(r);
  }
}

void SmtpClientSession::fail_host(const std::string& why) {
  host_failed_ = true;
  host_failure_ = why;
  send("QUIT");
  set_state(State::kDone);
}

void SmtpClientSession::on_reply(const Reply& r) {
  const bool ok = r.code / 100 == 2;
  switch (state_) {
    case State::kGreeting:
      if (!ok) return fail_host("greeting: " + r.text);
      send("EHLO " + opt_.helo_name);
      return set_state(State::kEhlo);
    case State::kEhlo:
      if (!ok) {
        send("HELO " + opt_.helo_name);
        return set_state(State::kHelo);
      }
      ext_.clear();
      for (size_t i = 1; i < r.lines.size(); ++i) {
        std::string kw = r.lines[i].substr(0, r.lines[i].find(' '));
        std::transform(kw.begin(), kw.end(), kw.begin(), [](unsigned char c) { return std::toupper(c); });
        ext_.push_back(kw);
        if (kw == "SIZE" && r.lines[i].size() > 5) peer_size_limit_ = std::strtoull(r.lines[i].c_str() + 5, nullptr, 10);
      }
      return after_ehlo();
    case State::kHelo:
      if (!ok) return fail_host("HELO: " + r.text);
      ext_.clear();
      return after_ehlo();
    case State::kStarttls:
      if (r.code == 220) {
        // CVE-2021-38371 class: whatever followed the 220 was sent before TLS: discard it.
        in_.clear();
        ext_.clear();
        peer_size_limit_ = 0;
        return set_state(State::kTlsHandshake);
      }
      if (opt_.tls >= TlsLevel::kEncrypt) return fail_host("STARTTLS refused: " + r.text);
      return start_message();
    case State::kMail: {
      const ClientMessage& m = msgs_[cur_];
      if (pending_replies_ == m.rcpts.size() + 1) {  // the MAIL reply
        mail_ok_ = ok;
        mail_reply_ = r;
        --pending_replies_;
        // A refused probe sender says nothing of the recipients: deferred, never failed.
        if (!ok && !peer_has("PIPELINING")) {
          for (size_t k = 0; k < m.rcpts.size(); ++k)
            record(cur_, k, r.code / 100 == 5 && !m.probe ? Outcome::kFailed : Outcome::kDeferred, enhanced(r), r.text);
          return finish_message();
        }
        if (ok && !peer_has("PIPELINING")) send(rcpt_line(m, m.rcpts[rcpt_pos_++]));
        return;
      }
      size_t k = m.rcpts.size() + 1 - pending_replies_ - 1;  // which RCPT this answers
      --pending_replies_;
      if (!mail_ok_) {
        record(cur_, k, mail_reply_.code / 100 == 5 && !m.probe ? Outcome::kFailed : Outcome::kDeferred,
               enhanced(mail_reply_), mail_reply_.text);
      } else if (ok && m.probe) {
        record(cur_, k, Outcome::kDelivered, enhanced(r), r.text);
      } else if (ok) {
        accepted_.push_back(k);
      } else {
        record(cur_, k, r.code / 100 == 5 ? Outcome::kFailed : Outcome::kDeferred, enhanced(r), r.text);
      }
      if (pending_replies_ > 0) {
        if (!peer_has("PIPELINING") && mail_ok_) send(rcpt_line(m, m.rcpts[rcpt_pos_++]));
        return;
      }
      if (m.probe) return finish_message();  // asked, answered: RSET
      if (data_pipelined_) {  // its reply is next: 354 (send the body, or "." if none was accepted) or not
        no_rcpt_data_ = accepted_.empty();
        return set_state(State::kData);
      }
      if (accepted_.empty()) return finish_message();
      if (bdat_) {
        send("BDAT " + std::to_string(m.size) + " LAST");
        body_sending_ = false;
        return set_state(State::kBody);
      }
      send("DATA");
      return set_state(State::kData);
    }
    case State::kData:
      if (r.code == 354 && data_pipelined_ && no_rcpt_data_) {
        // Every RCPT was refused and the server still said 354: end an empty message.
        send(".");
        return set_state(State::kFinal);
      }
      if (r.code == 354) {
        body_sending_ = false;
        return set_state(State::kBody);
      }
      for (size_t k : accepted_)
        record(cur_, k, r.code / 100 == 5 ? Outcome::kFailed : Outcome::kDeferred, enhanced(r), r.text);
      return finish_message();
    case State::kFinal:
      for (size_t k : accepted_)
        record(cur_, k, ok ? Outcome::kDelivered : r.code / 100 == 5 ? Outcome::kFailed : Outcome::kDeferred,
               enhanced(r), r.text);
      accepted_.clear();
      return next_message();
    case State::kRset:
      return next_message();
    case State::kQuit:
    case State::kIdle:  // e.g. "421 idle timeout" from the server: this connection is over
      return set_state(State::kDone);
    default:
      return;
  }
}

void SmtpClientSession::after_ehlo() {
  bdat_ = peer_has("CHUNKING");
  if (!tls_active_ && opt_.tls != TlsLevel::kNone) {
    if (opt_.tls_possible && peer_has("STARTTLS")) {
      send("STARTTLS");
      return set_state(State::kStarttls);
    }
    if (opt_.tls >= TlsLevel::kEncrypt)
      return fail_host(peer_has("STARTTLS") ? "TLS required but not available here"
                                            : "TLS required but the server does not offer STARTTLS");
  }
  start_message();
}

void SmtpClientSession::tls_started() {
  tls_active_ = true;
  send("EHLO " + opt_.helo_name);
  set_state(State::kEhlo);
}

// RFC 6531 3.4: SMTPUTF8 is needed only if the envelope or the message holds non-ASCII; an
// all-ASCII message may go to a server without the extension. 8-bit content could be UTF-8
// header fields, which such a server must not get: then it is needed.
bool SmtpClientSession::needs_smtputf8(const ClientMessage& m) const {
  auto ascii = [](const std::string& a) {
    return std::all_of(a.begin(), a.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  };
  if (m.env->eight_bit || !ascii(m.env->mail_from)) return true;
  for (size_t idx : m.rcpts)
    if (idx < m.env->rcpts.size() && !ascii(m.env->rcpts[idx].address)) return true;
  return false;
}

void SmtpClientSession::record(size_t msg, size_t rcpt, Outcome o, const std::string& status,
                               const std::string& diag) {
  RcptResult res;
  res.qid = msgs_[msg].qid;
  res.index = msgs_[msg].rcpts[rcpt];
  res.outcome = o;
  // RFC 3461 4.2: delivered to a server without DSN, a NOTIFY=SUCCESS recipient is owed a
  // "relayed" notice by us.
  if (o == Outcome::kDelivered && !peer_has("DSN") && res.index < msgs_[msg].env->rcpts.size()) {
    const std::string& n = msgs_[msg].env->rcpts[res.index].notify;
    res.relayed_without_dsn = n.find("SUCCESS") != std::string::npos;
  }
  res.status = status;
  res.diag = diag;
  results_.push_back(std::move(res));
  if (msg == cur_ && rcpt < answered_.size()) answered_[rcpt] = true;
}

void SmtpClientSession::start_message() {
  while (cur_ < msgs_.size()) {
    ClientMessage& m = msgs_[cur_];
    answered_.assign(m.rcpts.size(), false);
    accepted_.clear();
    std::string why, status;
    if (m.env->smtputf8 && !peer_has("SMTPUTF8") && needs_smtputf8(m)) {
      status = "5.6.7";
      why = "the server does not support SMTPUTF8";
    } else if (m.env->eight_bit && !peer_has("8BITMIME") && !m.downgraded && !(downgrade_ && downgrade_(m))) {
      status = "5.6.3";
      why = "8-bit message, the server does not support 8BITMIME, and it cannot be converted to 7-bit MIME";
    } else if (peer_size_limit_ > 0 && m.size > peer_size_limit_) {
      status = "5.3.4";
      why = "message size " + std::to_string(m.size) + " exceeds the server's limit " + std::to_string(peer_size_limit_);
    }
    if (!why.empty()) {
      for (size_t k = 0; k < m.rcpts.size(); ++k) record(cur_, k, Outcome::kFailed, status, why);
      ++cur_;
      continue;
    }
    any_transaction_ = true;
    std::string mail = "MAIL FROM:<" + m.env->mail_from + ">";
    if (!m.probe) {  // a probe asks only: no size, body type or DSN parameters
      if (peer_has("SIZE")) mail += " SIZE=" + std::to_string(m.size);
      // Declared 8BITMIME, or 8-bit content sent without the declaration: say so when the server
      // can take it. A message that is 7-bit after all (or was converted) goes without BODY=.
      if (peer_has("8BITMIME") && !m.downgraded && (is_8bit_body(*m.env) || m.env->eight_bit)) mail += " BODY=8BITMIME";
      if (m.env->smtputf8 && peer_has("SMTPUTF8")) mail += " SMTPUTF8";
      if (peer_has("DSN")) {
        if (!m.env->ret.empty()) mail += " RET=" + m.env->ret;
        if (!m.env->envid.empty()) mail += " ENVID=" + m.env->envid;
      }
    }
    send(mail);
    pending_replies_ = m.rcpts.size() + 1;
    rcpt_pos_ = 0;
    data_pipelined_ = false;
    if (peer_has("PIPELINING")) {
      for (size_t idx : m.rcpts) send(rcpt_line(m, idx));
      rcpt_pos_ = m.rcpts.size();
      // RFC 2920: DATA may close the group, saving a round trip; BDAT waits for the RCPT replies.
      if (!bdat_ && !m.probe) {
        send("DATA");
        data_pipelined_ = true;
      }
    }
    return set_state(State::kMail);
  }
  if (opt_.keep_open) return set_state(State::kIdle);
  send("QUIT");
  set_state(State::kQuit);
}

void SmtpClientSession::reuse(std::vector<ClientMessage> msgs) {
  if (state_ != State::kIdle) return;
  msgs_ = std::move(msgs);
  cur_ = 0;
  accepted_.clear();
  results_.clear();
  start_message();
}

void SmtpClientSession::quit() {
  if (state_ != State::kIdle) return;
  send("QUIT");
  set_state(State::kQuit);
}

std::string SmtpClientSession::rcpt_line(const ClientMessage& m, size_t idx) const {
  const Recipient& rc = m.env->rcpts[idx];
  std::string line = "RCPT TO:<" + rc.address + ">";
  if (peer_has("DSN") && !m.probe) {
    if (!rc.notify.empty()) line += " NOTIFY=" + rc.notify;
    if (!rc.orcpt.empty()) line += " ORCPT=" + rc.orcpt;
  }
  return line;
}

void SmtpClientSession::finish_message() {
  send("RSET");
  set_state(State::kRset);
}

void SmtpClientSession::next_message() {
  ++cur_;
  start_message();
}

void SmtpClientSession::body_sent() {
  if (state_ != State::kBody) return;  // the connection was lost meanwhile
  body_sending_ = false;
  set_state(State::kFinal);
  feed("");  // a reply may already be buffered
}

void SmtpClientSession::result_all_pending(Outcome o, const std::string& status, const std::string& diag) {
  for (size_t mi = cur_; mi < msgs_.size(); ++mi) {
    const ClientMessage& m = msgs_[mi];
    for (size_t k = 0; k < m.rcpts.size(); ++k) {
      if (mi == cur_ && k < answered_.size() && answered_[k]) continue;
      record(mi, k, o, status, diag);
      if (mi == cur_ && state_ == State::kFinal &&
          std::find(accepted_.begin(), accepted_.end(), k) != accepted_.end())
        results_.back().maybe_duplicate = true;
    }
  }
}

void SmtpClientSession::connection_lost(const std::string& why) {
  if (state_ == State::kDone) return;
  if (state_ == State::kQuit || state_ == State::kIdle) return set_state(State::kDone);
  if (!any_transaction_) {
    fail_host(why);
    return;
  }
  result_all_pending(Outcome::kDeferred, "4.4.2", why);
  cur_ = msgs_.size();
  set_state(State::kDone);
}

}  // namespace postern::smtp
