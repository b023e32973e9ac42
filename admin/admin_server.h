// admin_server.h — the admin HTTPS server on the control loop: TLS from the admin-console role's
// ContextProvider (a reassigned certificate applies to the next connection), HTTP/1.1 parsed by
// http-parser, bearer-token auth checked in constant time before any handler runs (401, no
// detail), one request at a time per connection, bounded request size.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "tls/context_provider.h"

namespace postern::admin {

struct HttpRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;
  std::string authorization;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

using Responder = std::function<void(HttpResponse)>;
using Handler = std::function<void(const HttpRequest&, Responder)>;

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, tls::ContextProvider& ctx, std::string token, Handler handler);
  ~AdminServer();
  // Throws std::runtime_error naming the address.
  void listen(const std::string& host, uint16_t port);
  void close();
  uint64_t requests() const { return requests_; }
  uint64_t tls_failures() const { return tls_failures_; }

 private:
  friend class AdminConnection;
  uv_loop_t* loop_;
  tls::ContextProvider& ctx_;
  std::string token_;
  Handler handler_;
  uv_tcp_t* listener_ = nullptr;
  uint64_t requests_ = 0;
  uint64_t tls_failures_ = 0;
};

std::string json_error(const std::string& message);

}  // namespace postern::admin
