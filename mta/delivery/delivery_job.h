// delivery_job.h — what the scheduler hands a worker to deliver over one connection (one next
// hop, several messages), and what comes back: a result for every recipient it was given.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "mta/client/smtp_client_session.h"
#include "mta/envelope.h"

namespace postern::delivery {

struct JobMessage {
  std::string qid;
  std::shared_ptr<const Envelope> env;  // a snapshot: the scheduler owns the live one
  std::vector<size_t> rcpts;
  std::string path;  // the .msg file
  uint64_t size = 0;
  bool probe = false;  // recipient verification: MAIL and RCPT only (smtp::ClientMessage::probe)
};

// The next hop for a recipient domain, as delivery and recipient verification choose it: the
// domain's static route, else the "*" route, else the domain's MX; the outbound TLS level; and
// the key under which connections to it are counted and cached.
struct NextHopChoice {
  std::string key;
  bool has_route = false;
  NextHop route;
  TlsLevel tls = TlsLevel::kMay;
};
NextHopChoice choose_next_hop(const Config& cfg, const std::string& domain);

struct DeliveryJob {
  uint64_t id = 0;
  std::string dest;    // scheduler's destination key
  std::string domain;  // recipient domain: MX lookup, SNI, policy
  bool has_route = false;
  NextHop route;
  TlsLevel tls = TlsLevel::kMay;
  std::vector<JobMessage> msgs;
  // Per-message results, as soon as they are known (thread-safe, cheap; call it on the worker
  // loop whenever smtp::SmtpClientSession::take_results() gave something, with the remote that
  // answered). The scheduler writes the recipients' states to the message's envelope, or
  // retires the message, at once, so a crash before the job ends re-sends nothing the next hop
  // accepted. Results given here may be given again in the JobResult: repeats are ignored.
  // Empty when the scheduler does not want them (tests).
  std::function<void(std::vector<smtp::RcptResult> results, const std::string& remote)> record;
};

struct JobResult {
  uint64_t id = 0;
  std::string dest;
  std::vector<std::string> qids;  // every message the job carried, answered or not
  std::vector<smtp::RcptResult> results;
  std::string remote;  // host[addr]:port that answered last, or ""
  int cached_on = -1;  // the worker whose connection cache now holds this connection
};

}  // namespace postern::delivery
