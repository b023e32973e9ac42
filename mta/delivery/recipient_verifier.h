// recipient_verifier.h — recipient verification at RCPT (relay.verify_recipients), one per
// worker loop. Asks the next hop of the recipient's domain (the same route or MX, TLS policy and
// connection cache as delivery) with MAIL FROM:<relay.verify_sender>, RCPT TO:<address>, RSET:
//   2xx      -> the address exists: 250 to our client, kept verify_positive_ttl;
//   5xx      -> it does not: 550 5.1.1 with the next hop's words, kept verify_negative_ttl;
//   anything else (4xx, MAIL refused, no connection, no answer within relay.verify_timeout)
//            -> relay.verify_unreachable: 450 4.1.1 ("defer", the default) or accept; not kept.
// Answers are cached in the runtime's policy::VerifyCache, shared by the workers. Several
// sessions asking about one address while it is being asked share one probe. A probe that
// outlives verify_timeout goes on and its answer is cached for the next RCPT. At most
// kMaxProbes probes per worker at a time; past that, the unreachable answer.
// Security-sensitive: this is how mail from outside makes Postern connect downstream; it is
// bounded (probes in flight, cache entries) and never used for foreign domains.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mta/delivery/delivery_job.h"
#include "mta/server/smtp_server_session.h"

namespace postern::mta {
class ConnectionHost;
}

namespace postern::delivery {

class RecipientVerifier {
 public:
  static constexpr size_t kMaxProbes = 64;
  explicit RecipientVerifier(mta::ConnectionHost& w) : w_(w) {}
  ~RecipientVerifier();
  RecipientVerifier(const RecipientVerifier&) = delete;
  RecipientVerifier& operator=(const RecipientVerifier&) = delete;

  // A cached answer now, or kPending: conn_id's InboundConnection gets recipient_checked()
  // on this loop later (if it still exists).
  smtp::RcptCheck check(const std::string& address, uint64_t conn_id);
  // Worker drain: every waiting session gets the unreachable answer, the timers close.
  void close();
  size_t probes() const { return probes_.size(); }

 private:
  struct Probe {
    std::string address;
    std::vector<uint64_t> waiters;
    uv_timer_t* timer = nullptr;  // verify_timeout; null once it fired or closed
  };
  void start_probe(const std::string& address);
  void finished(const std::string& address, const JobResult& r);
  void timed_out(const std::string& address);
  void answer(Probe& p, const smtp::RcptCheck& c);
  smtp::RcptCheck unreachable(const std::string& why) const;
  void close_timer(Probe& p);

  mta::ConnectionHost& w_;
  std::unordered_map<std::string, std::unique_ptr<Probe>> probes_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  bool closed_ = false;
};

}  // namespace postern::delivery
