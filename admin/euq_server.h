// euq_server.h — the end-user quarantine (EUQ) console's HTTPS listener ([euq] listen, default
// 127.0.0.1:8447, "" = off): the shared HTTP server (http/) with the EUQ role's certificate, so
// a certificate assigned to the EUQ role applies to its next connection. Its requests go to the
// EUQ console (admin/euq_console.h), which answers GET /health through euq_route().
// Security-sensitive: it is reachable without a token.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "conf/config.h"
#include "http/http_server.h"
#include "tls/context_provider.h"

namespace postern::admin {

class EuqServer {
 public:
  EuqServer(uv_loop_t* loop, tls::ContextProvider& ctx, http::Handler handler, HttpLimits limits = {});
  // Throws std::runtime_error naming the address.
  void listen(const std::string& host, uint16_t port);
  void close();
  uint64_t requests() const { return server_->requests(); }
  uint64_t tls_failures() const { return server_->tls_failures(); }

 private:
  std::unique_ptr<http::HttpServer> server_;
};

// The listener of `cfg.euq_listen` (null when it is ""), listening. Throws std::runtime_error.
std::unique_ptr<EuqServer> start_euq_server(uv_loop_t* loop, tls::ContextProvider& ctx, const Config& cfg,
                                            http::Handler handler);

// The EUQ routes, alone (for tests): GET /health, 405 for another method on it, 404 elsewhere.
http::Response euq_route(const http::Request& req, const std::function<std::string()>& health);

}  // namespace postern::admin
