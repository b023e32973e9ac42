// admin_server.h — the admin HTTPS listener: the shared HTTP server (http/) with the
// admin-console role's certificate (a reassigned certificate applies to the next connection),
// serving the API (bearer token or dashboard session, see admin/web_auth.h: checked as soon as
// the headers are complete, before any body is read), the dashboard's login, and its pages
// (http::serve_static from the web root, every answer with the console headers).
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "admin/web_auth.h"
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
  // `auth` must outlive the server. `web_root` "" = no pages (404).
  AdminServer(uv_loop_t* loop, tls::ContextProvider& ctx, WebAuth& auth, std::string web_root, Handler handler,
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
