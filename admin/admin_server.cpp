#include "admin/admin_server.h"

#include <openssl/crypto.h>

#include <nlohmann/json.hpp>

namespace postern::admin {

std::string json_error(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

AdminServer::AdminServer(uv_loop_t* loop, tls::ContextProvider& ctx, std::string token, Handler handler,
                         HttpLimits limits) {
  http::ServerOptions o;
  o.name = "admin api";
  o.limits = limits;
  o.context = [&ctx] { return ctx.current(); };
  // Bearer token, compared in constant time; any failure is a bare 401.
  o.auth = [want = "Bearer " + token](const http::Request& r) {
    if (r.method == "GET" && r.path.rfind("/updates/", 0) == 0) return 0;  // the pattern relay: signed bundles, no token
    bool ok = r.authorization.size() == want.size() &&
              CRYPTO_memcmp(r.authorization.data(), want.data(), want.size()) == 0;
    return ok ? 0 : 401;
  };
  o.handler = std::move(handler);
  server_ = std::make_unique<http::HttpServer>(loop, std::move(o));
}

void AdminServer::listen(const std::string& host, uint16_t port) { server_->listen(host, port); }

void AdminServer::close() { server_->close(); }

}  // namespace postern::admin
