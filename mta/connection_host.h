// connection_host.h — what a connection may ask of the event loop that owns it. The worker
// implements it and owns the connections; the connections see only this interface, so the
// dependency runs one way (worker -> connections -> this header).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "mta/runtime.h"
#include "mta/server/smtp_server_session.h"

namespace postern::dns {
class Resolver;
}
namespace postern::delivery {
class OutboundConnection;
struct DeliveryJob;
struct JobResult;
}

namespace postern::mta {

class InboundConnection;

class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  virtual uv_loop_t* loop() = 0;
  virtual Runtime& runtime() = 0;
  virtual unsigned index() const = 0;
  // Thread-safe: runs fn on this loop.
  virtual void post(std::function<void()> fn) = 0;
  virtual bool draining() const = 0;
  // Inbound sessions by id: asynchronous answers find them here, never by a raw pointer.
  virtual uint64_t register_conn(InboundConnection* c) = 0;
  virtual void unregister_conn(uint64_t id) = 0;
  virtual InboundConnection* find_conn(uint64_t id) = 0;
  // Spool commits in flight: the loop stays up until every one has answered.
  virtual void commit_started() = 0;
  virtual void commit_answered() = 0;
  // Outbound connections and the connection cache.
  virtual dns::Resolver& resolver() = 0;
  virtual void outbound_started(delivery::OutboundConnection* c) = 0;
  virtual void outbound_finished(delivery::OutboundConnection* c) = 0;
  virtual void park(const std::string& dest, delivery::OutboundConnection* c) = 0;
  virtual void unpark(delivery::OutboundConnection* c) = 0;
  // A parked connection to job.dest takes the job (job and done are moved then): true.
  virtual bool take_parked(delivery::DeliveryJob& job, std::function<void(delivery::JobResult)>& done) = 0;
  // Recipient verification (delivery/recipient_verifier.h): an answer now, or kPending and
  // InboundConnection `conn_id` gets recipient_checked() later.
  virtual smtp::RcptCheck verify_recipient(const std::string& address, uint64_t conn_id) = 0;
};

}  // namespace postern::mta
