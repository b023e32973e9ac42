// dsn.h — delivery status notifications (RFC 3464 multipart/report) made by Postern for
// recipients that failed, sent to the original sender from the null sender. Never for a message
// from the null sender, never for a DSN Postern made, never against NOTIFY.
#pragma once

#include <string>
#include <vector>

#include "mta/server/envelope.h"

namespace postern::queue {

// Which of `failed` want a failure notice (NOTIFY empty or containing FAILURE).
std::vector<size_t> wants_failure_dsn(const Envelope& env, const std::vector<size_t>& failed);
bool may_bounce(const Envelope& env);

struct Dsn {
  Envelope env;      // queue_id left for the caller; from <>, to the original sender
  std::string text;  // the whole message
};

// original: the stored message (Received: first). date: RFC 5322 date. boundary: unique token.
Dsn make_failure_dsn(const Envelope& orig, const std::vector<size_t>& rcpts, const std::string& original,
                     const std::string& hostname, const std::string& date, const std::string& boundary);

}  // namespace postern::queue
