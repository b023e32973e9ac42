// http_server.h — the one HTTP/1.1 server, on the one transport (TlsStream, TLS always), for the
// admin API now and the dashboard, EUQ console, license server and update relay later.
//
// Limits, all from HttpLimits: connections at once (past it a new connection is closed at
// once), request line + headers size (431), body size (413, from Content-Length before any of
// it is read, and while it arrives), a request deadline that bytes do not extend (from a
// request's first byte to its end: no slowloris), an idle deadline between requests, a write
// deadline. Authentication is a per-listener hook run as soon as the headers are complete,
// before any body is read: a refused request never makes the server buffer its body.
// Security-sensitive: request parsing (http-parser) and the limits above meet anyone who can
// connect.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "tls/acceptor.h"
#include "tls/context_provider.h"

namespace postern::http {

struct Request {
  std::string method;
  std::string path;  // the path as sent (percent-encoded), without the query
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lower-cased; a repeated header joined with ", "
  std::map<std::string, std::string> params;   // filled by Router from "{name}" segments
  std::string authorization;
  std::string body;
  std::string peer_ip;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

using Responder = std::function<void(Response)>;
using Handler = std::function<void(const Request&, Responder)>;
// Runs when the headers are complete. 0: go on; otherwise the status to answer (and close).
using Authenticator = std::function<int(const Request&)>;

Response json_response(int status, const std::string& json_text);
Response json_error(int status, const std::string& message);  // {"error": message}
Response static_response(const std::string& content_type, std::string body);
const char* reason_phrase(int status);
std::string url_decode(const std::string& s, bool plus_is_space);
// The value of cookie `name` in the request's Cookie header ("a=b; name=V; c=d"; a repeated
// header is joined with ", "), surrounding spaces trimmed; "" when there is none.
std::string cookie_value(const Request& req, const std::string& name);

// Method + path patterns ("/api/v1/queue/{id}/hold") to handlers; 404 for no path, 405 for a
// path without that method.
class Router {
 public:
  void add(const std::string& method, const std::string& pattern, Handler h);
  void dispatch(Request& req, Responder respond) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segs;
    Handler h;
  };
  std::vector<Route> routes_;
};

struct ServerOptions {
  std::string name = "https";  // for logs
  HttpLimits limits;
  std::function<std::shared_ptr<const tls::ContextSet>()> context;  // the role's current set
  bool plain = false;  // plain HTTP, no TLS (the license server on a trusted path; never the admin API)
  Authenticator auth;
  Handler handler;
};

// What the server and its connections share: connections may outlive the server object.
struct ServerShared {
  ServerOptions opt;
  uint64_t requests = 0, tls_failures = 0, refused = 0;
  uint32_t connections = 0;
};

class HttpServer {
 public:
  HttpServer(uv_loop_t* loop, ServerOptions opt);
  ~HttpServer();
  // Throws std::runtime_error naming the address.
  void listen(const std::string& host, uint16_t port);
  void close();
  uint64_t requests() const { return sh_->requests; }
  uint64_t tls_failures() const { return sh_->tls_failures; }
  uint64_t refused() const { return sh_->refused; }
  uint32_t connections() const { return sh_->connections; }

 private:
  uv_loop_t* loop_;
  std::shared_ptr<ServerShared> sh_;
  std::unique_ptr<tls::Acceptor> acceptor_;
};

}  // namespace postern::http
