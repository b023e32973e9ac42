// dsn.cpp — see dsn.h. Pure: the caller gives the time. Peer-supplied text (diagnostics,
// remote names) is folded to one line before it goes into a header field.
#include "mta/queue/dsn.h"

#include <cctype>
#include <ctime>

#include "base/text.h"
#include "base/time_format.h"
#include "mta/server/smtp_syntax.h"

namespace postern::queue {
namespace {

std::string arrival_date(int64_t t) { return rfc5322_date(static_cast<std::time_t>(t), true); }

// ORCPT and ENVID arrive xtext-encoded (RFC 3461); the DSN shows them decoded (RFC 3464 2.2.1, 2.3.1).
std::string unxtext(const std::string& s) {
  std::string r;
  return smtp::xtext_decode(s, r) ? r : s;
}

// Diagnostic text for a header field: one line, no control characters.
std::string clean(const std::string& s) {
  std::string r;
  for (unsigned char c : s) r.push_back(c < 32 || c == 127 ? ' ' : static_cast<char>(c));
  return r;
}

}  // namespace

bool may_bounce(const Envelope& env) { return !env.mail_from.empty() && !env.is_bounce; }

std::vector<size_t> wants_dsn(const Envelope& env, const std::vector<size_t>& rcpts, DsnKind kind) {
  std::vector<size_t> r;
  if (!may_bounce(env)) return r;
  const char* word = kind == DsnKind::kFailed ? "FAILURE" : kind == DsnKind::kDelayed ? "DELAY" : "SUCCESS";
  for (size_t i : rcpts) {
    const std::string& n = env.rcpts[i].notify;
    if ((n.empty() && kind != DsnKind::kRelayed) || n.find(word) != std::string::npos) r.push_back(i);
  }
  return r;
}

Dsn make_dsn(DsnKind kind, const Envelope& orig, const std::vector<size_t>& rcpts, const std::string& original,
             const std::string& hostname, int64_t now, const std::string& boundary, int64_t retry_until) {
  const bool delayed = kind == DsnKind::kDelayed;
  const bool relayed = kind == DsnKind::kRelayed;
  Dsn d;
  d.env.mail_from = "";
  d.env.is_bounce = true;
  d.env.rcpts.push_back({orig.mail_from, "", ""});
  d.env.smtputf8 = orig.smtputf8;
  d.env.body = orig.body;
  d.env.helo = hostname;
  d.env.client_ip = "127.0.0.1";
  d.env.received_at = now;

  std::string& m = d.text;
  m += "Date: " + rfc5322_date(static_cast<std::time_t>(now)) + "\r\n";
  m += "From: Mail Delivery System <MAILER-DAEMON@" + hostname + ">\r\n";
  m += "To: <" + orig.mail_from + ">\r\n";
  m += std::string("Subject: ") +
       (delayed   ? "Delayed Mail (still being retried)"
        : relayed ? "Successful Mail Delivery Report"
                  : "Undelivered Mail Returned to Sender") +
       "\r\n";
  m += "Auto-Submitted: auto-replied\r\n";
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + boundary + "\"\r\n";
  m += "\r\nThis is a MIME-encapsulated message.\r\n\r\n";
  m += "--" + boundary + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
  m += "This is the mail system at host " + hostname + ".\r\n\r\n";
  if (delayed) {
    m += "This is a warning only; you do not need to send your message again.\r\n\r\n";
    m += "Your message could not be delivered yet to one or more recipients. Delivery will\r\n";
    m += "be retried until " + arrival_date(retry_until) + "; its headers are attached below.\r\n\r\n";
  } else if (relayed) {
    m += "Your message was delivered to the next mail server for the recipients listed\r\n";
    m += "below. That server does not offer delivery status notifications, so this is the\r\n";
    m += "last notice you will get from this system about them; you may still hear of\r\n";
    m += "errors from servers further on. Its headers are attached below.\r\n\r\n";
  } else {
    m += "I'm sorry to have to inform you that your message could not\r\n";
    m += "be delivered to one or more recipients. It's attached below.\r\n\r\n";
  }
  for (size_t i : rcpts) {
    const Recipient& r = orig.rcpts[i];
    const char* none = delayed ? "delivery delayed" : relayed ? "relayed" : "delivery failed";
    m += "<" + r.address + ">: " + (relayed && !r.remote.empty() ? "relayed to " + clean(r.remote) + ": " : "") +
         clean(r.diag.empty() ? none : r.diag) + "\r\n";
  }
  m += "\r\n--" + boundary + "\r\nContent-Type: message/delivery-status\r\n\r\n";
  m += "Reporting-MTA: dns; " + hostname + "\r\n";
  m += "X-Postern-Queue-ID: " + orig.queue_id + "\r\n";
  if (!orig.envid.empty()) m += "Original-Envelope-Id: " + clean(unxtext(orig.envid)) + "\r\n";
  m += "Arrival-Date: " + arrival_date(orig.received_at) + "\r\n";
  for (size_t i : rcpts) {
    const Recipient& r = orig.rcpts[i];
    m += "\r\nFinal-Recipient: rfc822; " + r.address + "\r\n";
    if (!r.orcpt.empty()) {
      auto semi = r.orcpt.find(';');
      m += "Original-Recipient: " + r.orcpt.substr(0, semi) + "; " + clean(unxtext(r.orcpt.substr(semi + 1))) + "\r\n";
    }
    std::string status = r.status;
    if (delayed && (status.empty() || status[0] != '4')) status = "4.0.0";  // e.g. no answer at all
    if (relayed && (status.empty() || status[0] != '2')) status = "2.0.0";
    if (!delayed && status.empty()) status = "5.0.0";
    m += std::string("Action: ") + (delayed ? "delayed" : relayed ? "relayed" : "failed") + "\r\n";
    m += "Status: " + status + "\r\n";
    if (!r.remote.empty()) m += "Remote-MTA: dns; " + clean(r.remote) + "\r\n";
    if (!r.diag.empty()) {
      bool smtp = r.diag.size() > 3 && std::isdigit(static_cast<unsigned char>(r.diag[0]));
      m += "Diagnostic-Code: " + std::string(smtp ? "smtp; " : "X-Postern; ") + clean(r.diag) + "\r\n";
    }
    if (delayed && retry_until > 0) m += "Will-Retry-Until: " + arrival_date(retry_until) + "\r\n";
  }
  bool headers_only = delayed || relayed || orig.ret == "HDRS";
  m += "\r\n--" + boundary + "\r\nContent-Type: " +
       std::string(headers_only ? "text/rfc822-headers" : "message/rfc822") + "\r\n";
  if (orig.body == BodyType::k8BitMime || orig.smtputf8 || orig.eight_bit) m += "Content-Transfer-Encoding: 8bit\r\n";
  m += "\r\n";
  if (headers_only) {
    auto end = original.find("\r\n\r\n");
    m += original.substr(0, end == std::string::npos ? original.size() : end + 2);
  } else {
    m += original;
  }
  if (m.size() < 2 || m.compare(m.size() - 2, 2, "\r\n") != 0) m += "\r\n";
  m += "\r\n--" + boundary + "--\r\n";
  d.env.eight_bit = has_8bit(m);
  if (d.env.eight_bit) d.env.body = BodyType::k8BitMime;
  return d;
}

}  // namespace postern::queue
