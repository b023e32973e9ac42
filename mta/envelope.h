// envelope.h — what the SMTP server learned about one message: sender, recipients, ESMTP
// parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT) and where it came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace postern {

enum class BodyType { k7Bit, k8BitMime };

enum class RcptState { kPending = 0, kDelivered = 1, kFailed = 2 };

struct Recipient {
  std::string address;  // local@domain (domain lowercased)
  std::string notify;   // "" (not given), "NEVER", or comma list of SUCCESS,FAILURE,DELAY
  std::string orcpt;    // "rfc822;xtext" as given, or ""
  // Delivery state, kept in the .env file as it changes.
  RcptState state = RcptState::kPending;
  std::string status;   // enhanced status of the last attempt, e.g. "4.4.1"
  std::string diag;     // last reply or reason, e.g. "451 4.3.0 try later" or "connect: refused"
  std::string remote;   // "host[ip]:port" the last reply came from
  // A notice is owed and not yet safely queued: failed -> its failure DSN; delivered -> its
  // "relayed" DSN (NOTIFY=SUCCESS, delivered to a next hop without DSN).
  bool dsn_owed = false;
  std::string domain() const {
    auto at = address.rfind('@');
    return at == std::string::npos ? std::string() : address.substr(at + 1);
  }
};

struct Envelope {
  std::string queue_id;
  std::string mail_from;  // "" = null sender
  uint64_t declared_size = 0;
  BodyType body = BodyType::k7Bit;
  bool smtputf8 = false;
  std::string ret;    // "", "FULL", "HDRS"
  std::string envid;  // xtext as given
  std::vector<Recipient> rcpts;
  std::string helo;
  std::string client_ip;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384" or ""
  int64_t received_at = 0;  // unix seconds
  uint64_t message_size = 0;  // bytes stored, Received: header included
  // The content holds bytes >= 0x80, whatever BODY= said (many clients declare 8BITMIME for
  // ASCII, a few send 8-bit without it): decides BODY=8BITMIME and 7-bit conversion outbound.
  bool eight_bit = false;
  // The scanning gate (policy/scan_gate.h): the X-Postern-Scan header line(s), CRLF-terminated,
  // sent in front of the stored message on delivery ("" = none); and, for a message the gate
  // quarantined, the signature it hit (the spool keeps it in quarantine/, not active/).
  std::string scan_header;
  std::string quarantined;
  int64_t released_at = 0;  // unix seconds: released from quarantine into the active queue
  // scan.on_virus = "tag": `subject_edit` goes in at byte `subject_at` of the stored message on
  // delivery (and in what a DSN returns): the Subject tag, or a Subject field (policy/scan_gate.h).
  int64_t subject_at = -1;
  std::string subject_edit;
  // Queue state.
  uint32_t attempts = 0;
  int64_t next_attempt = 0;  // unix seconds; 0 = now
  bool held = false;
  bool is_bounce = false;    // a DSN made by Postern: never bounced itself
  bool delay_warned = false;
};

}  // namespace postern
