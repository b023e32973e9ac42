// envelope.h — what the SMTP server learned about one message: sender, recipients, ESMTP
// parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT) and where it came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace postern {

enum class BodyType { k7Bit, k8BitMime };

struct Recipient {
  std::string address;  // local@domain (domain lowercased)
  std::string notify;   // "" (not given), "NEVER", or comma list of SUCCESS,FAILURE,DELAY
  std::string orcpt;    // "rfc822;xtext" as given, or ""
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
};

}  // namespace postern
