// local_mail.h — mail written by posternd itself (the EUQ sign-in links and digests; the
// license notices): the message is written to the spool like received mail and handed to the
// scheduler once committed, so it takes Postern's own outbound path (routes, TLS policy,
// retries, DSNs). From the null sender (no bounce loops) with Auto-Submitted: auto-generated.
// Runs on the control loop; the spool's commit answer comes from the committer thread and is
// brought back to the loop through a uv_async.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "mta/envelope.h"
#include "mta/queue/scheduler.h"
#include "mta/runtime.h"

namespace postern::admin {

struct LocalMail {
  std::string to;          // one address
  std::string subject;     // one line (CR/LF are replaced by spaces)
  std::string body;        // text, lines separated by "\n" (made CRLF)
  std::string tag;         // Message-ID prefix ("euq", "license")
  std::vector<std::pair<std::string, std::string>> headers;  // extra header fields
};

// The message text (header section and CRLF body) for `m` with queue ID `qid`, at time `t`.
std::string local_mail_text(const LocalMail& m, const std::string& hostname, const std::string& qid, int64_t t);

class LocalMailer {
 public:
  // ok: committed and handed to the scheduler; qid is the queue ID either way ("" when no spool).
  using Done = std::function<void(bool ok, const std::string& qid)>;
  LocalMailer(uv_loop_t* loop, mta::Runtime& rt, mta::Scheduler& sched);
  ~LocalMailer();
  void stop();
  // Writes and commits `m`; false (and no `done`) when it cannot be written to the spool now.
  bool send(const LocalMail& m, Done done, std::string* qid_out = nullptr);

 private:
  struct Shared {
    std::mutex mu;
    std::vector<std::pair<bool, Envelope>> committed;
    uv_async_t* async = nullptr;
  };
  static void on_async(uv_async_t* a);
  void drain();
  mta::Runtime& rt_;
  mta::Scheduler& sched_;
  std::shared_ptr<Shared> sh_;
  std::map<std::string, Done> waiting_;  // queue ID -> done
};

}  // namespace postern::admin
