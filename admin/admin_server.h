// admin_server.h — the admin HTTPS API listener: the shared HTTP server (http/) with the
// admin-console role's certificate (a reassigned certificate applies to the next connection) and
// bearer-token authentication, checked in constant time as soon as the headers are complete
// (401, no detail, and no body is read).
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "conf/config.h"
#include "http/http_server.h"
#include "tls/context_provider.h"

namespace postern::admin {

using HttpRequest = http::Request;
using HttpResponse = http::Response;
using Responder = http::Responder;
using Handler = http::Handler;

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, tls::ContextProvider& ctx, std::string token, Handler handler,
              HttpLimits limits = {});
  // Throws std::runtime_error naming the address.
  void listen(const std::string& host, uint16_t port);
  void close();
  uint64_t requests() const { return server_->requests(); }
  uint64_t tls_failures() const { return server_->tls_failures(); }
  uint64_t refused() const { return server_->refused(); }

 private:
  std::unique_ptr<http::HttpServer> server_;
};

std::string json_error(const std::string& message);

}  // namespace postern::admin
