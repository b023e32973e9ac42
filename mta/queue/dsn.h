// dsn.h — delivery status notifications (RFC 3464 multipart/report) made by Postern for
// recipients that failed (Action: failed), are still being retried after queue.delay_warning
// (Action: delayed), or asked for NOTIFY=SUCCESS and were delivered to a next hop that does not
// offer DSN, so the notice of success ends here (Action: relayed, RFC 3461 4.2), sent to the
// original sender from the null sender. Never for a message from the null sender, never for a
// DSN Postern made, never against NOTIFY.
#pragma once

#include <string>
#include <vector>

#include "mta/envelope.h"

namespace postern::queue {

enum class DsnKind { kFailed, kDelayed, kRelayed };

// Which of `rcpts` want this kind of notice: NOTIFY empty (RFC 3461 leaves the default to the
// MTA; like Postfix, Postern sends failure and delay notices) or naming FAILURE / DELAY; a
// relayed notice only when NOTIFY names SUCCESS.
std::vector<size_t> wants_dsn(const Envelope& env, const std::vector<size_t>& rcpts, DsnKind kind);
bool may_bounce(const Envelope& env);

struct Dsn {
  Envelope env;      // queue_id left for the caller; from <>, to the original sender
  std::string text;  // the whole message
};

// original: the stored message (Received: first). now: the clock's unix time (the Date: field
// and the notice's own arrival time). boundary: unique token. retry_until (delayed only): when
// Postern gives up, for the Will-Retry-Until field. Delay and relayed notices carry the
// original's headers only (RFC 3461 4.3: RET concerns failure notices); a failure notice the
// whole message unless RET=HDRS.
Dsn make_dsn(DsnKind kind, const Envelope& orig, const std::vector<size_t>& rcpts, const std::string& original,
             const std::string& hostname, int64_t now, const std::string& boundary, int64_t retry_until = 0);

}  // namespace postern::queue
