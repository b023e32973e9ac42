#include "admin/admin_server.h"

#include <nlohmann/json.hpp>

#include "http/static_files.h"

namespace postern::admin {

std::string json_error(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

AdminServer::AdminServer(uv_loop_t* loop, tls::ContextProvider& ctx, WebAuth& auth, std::string web_root,
                         Handler handler, HttpLimits limits) {
  http::ServerOptions o;
  o.name = "admin api";
  o.limits = limits;
  o.context = [&ctx] { return ctx.current(); };
  // Bearer token (constant time), or the dashboard's session cookie (+ CSRF for changes); the
  // pages, the login and the pattern relay are open. Any failure is a bare status.
  o.auth = [&auth](const http::Request& r) { return auth.check(r); };
  o.handler = [&auth, root = std::move(web_root), handler = std::move(handler)](const http::Request& r,
                                                                                 http::Responder respond) {
    if (r.path.rfind("/updates/", 0) == 0 || !r.authorization.empty()) return handler(r, std::move(respond));
    auto console = [respond](http::Response x) {
      http::add_console_headers(x);
      respond(std::move(x));
    };
    if (r.path == "/login") {
      if (r.method != "POST") return console(http::json_error(405, "method not allowed"));
      return console(auth.login(r));
    }
    if (r.path == "/logout") {
      if (r.method != "POST") return console(http::json_error(405, "method not allowed"));
      return console(auth.logout(r));
    }
    if (r.path == "/api/v1/session") {
      if (r.method != "GET") return console(http::json_error(405, "method not allowed"));
      return console(auth.session(r));
    }
    bool api = r.path.rfind("/api/", 0) == 0 || r.path == "/api" || r.path == "/metrics";
    if (!api) return console(http::serve_static(root, r));
    handler(r, console);
  };
  server_ = std::make_unique<http::HttpServer>(loop, std::move(o));
}

void AdminServer::listen(const std::string& host, uint16_t port) { server_->listen(host, port); }

void AdminServer::close() { server_->close(); }

}  // namespace postern::admin
