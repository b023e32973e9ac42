// resolver.h — next-hop lookups with c-ares on a libuv loop: MX in preference order, then A/AAAA
// of each exchanger; no MX records means the domain itself (implicit MX); a Null MX (RFC 7505)
// and NXDOMAIN are permanent; SERVFAIL, timeouts and refusals are temporary. Sockets are watched
// with uv_poll and c-ares' timeouts run on a uv_timer, so nothing blocks the loop.
#pragma once

#include <ares.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace postern::dns {

struct Host {
  std::string name;
  int preference = 0;
  std::vector<sockaddr_storage> addrs;
};

struct Answer {
  enum Kind { kOk, kNullMx, kNotFound, kTempFail } kind = kOk;
  std::string error;         // why, for logs and DSNs
  std::vector<Host> hosts;   // preference order, each with its addresses
};

class Resolver {
 public:
  // servers: "ip" or "ip:port" entries; empty = the system's resolv.conf.
  Resolver(uv_loop_t* loop, const std::vector<std::string>& servers);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  void resolve_mx(const std::string& domain, uint16_t port, std::function<void(Answer)> cb);
  void resolve_host(const std::string& host, uint16_t port, std::function<void(Answer)> cb);
  bool ok() const { return channel_ != nullptr; }
  const std::string& init_error() const { return init_error_; }
  // Closes the libuv handles; call before the loop ends.
  void close();

 private:
  struct Poll;
  static void sock_state_cb(void* data, ares_socket_t fd, int readable, int writable);
  void rearm_timer();

  uv_loop_t* loop_;
  ares_channel channel_ = nullptr;
  std::string init_error_;
  uv_timer_t* timer_ = nullptr;
  std::map<ares_socket_t, uv_poll_t*> polls_;
};

std::string addr_to_string(const sockaddr_storage& ss);

}  // namespace postern::dns
