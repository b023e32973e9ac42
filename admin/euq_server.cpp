// euq_server.cpp — see euq_server.h.
#include "admin/euq_server.h"

#include <spdlog/spdlog.h>

#include <stdexcept>

namespace postern::admin {

http::Response euq_route(const http::Request& req, const std::function<std::string()>& health) {
  if (req.path != "/health") return http::json_error(404, "no such page");
  if (req.method != "GET") return http::json_error(405, "method not allowed");
  return http::json_response(200, health());
}

EuqServer::EuqServer(uv_loop_t* loop, tls::ContextProvider& ctx, http::Handler handler, HttpLimits limits) {
  http::ServerOptions o;
  o.name = "euq console";
  o.limits = limits;
  o.context = [&ctx] { return ctx.current(); };
  // No token: the console signs recipients in itself (admin/euq_console.h).
  o.handler = std::move(handler);
  server_ = std::make_unique<http::HttpServer>(loop, std::move(o));
}

void EuqServer::listen(const std::string& host, uint16_t port) { server_->listen(host, port); }

void EuqServer::close() { server_->close(); }

std::unique_ptr<EuqServer> start_euq_server(uv_loop_t* loop, tls::ContextProvider& ctx, const Config& cfg,
                                            http::Handler handler) {
  if (cfg.euq_listen.empty()) {
    spdlog::info("euq console: off ([euq] listen is \"\")");
    return nullptr;
  }
  ListenAddr a;
  if (!parse_listen(cfg.euq_listen, a)) throw std::runtime_error("euq.listen: bad address '" + cfg.euq_listen + "'");
  auto s = std::make_unique<EuqServer>(loop, ctx, std::move(handler), cfg.admin);
  s->listen(a.host, a.port);
  spdlog::info("euq console: https://{}:{}/", a.host, a.port);
  return s;
}

}  // namespace postern::admin
