// http_client.h — the one HTTP client (licensing checks, pattern updates): libcurl's multi
// interface driven by a libuv loop (the control loop), so requests never block it.
//
// Each request has a deadline (connect and whole transfer), a bound on the response body and on
// its headers, and gets exactly one callback, on the loop, with the status, headers and body or
// an error text; never from inside start(), never after cancel() or the client's destruction.
// HTTPS is always verified (chain and host name) against a CA file or the system store; a
// request can pin its own CA file (a vendor's private CA, or a test's).
// Proxy: by default libcurl takes it from the environment, as curl(1) does: http_proxy (lower
// case only, for http://), https_proxy / HTTPS_PROXY, all_proxy / ALL_PROXY, no_proxy / NO_PROXY.
// [http_client] proxy = "URL" sets one explicitly; "direct" uses none even when those are set.
// Security-sensitive: the bounds on what a server may make us buffer, the TLS verification that
// cannot be turned off, the protocol allow-list (http, https; redirects never leave https), and
// header values (CR/LF refused: no request splitting). Proxy credentials are never logged.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "conf/config.h"

namespace postern::http {

class HttpClient {
 public:
  struct Options {
    std::string proxy;    // "" = the environment's; "direct" = none; else a proxy URL
    std::string ca_file;  // "" = the system store
    std::string user_agent = "Postern";
    long max_connections = 16;  // open at once; more requests wait their turn inside libcurl
  };
  static Options options_from(const Config& cfg);

  struct Request {
    std::string method = "GET";  // GET, HEAD, POST, PUT, DELETE
    std::string url;             // http:// or https://
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;  // sent for POST and PUT (and any other method when not empty)
    std::chrono::milliseconds timeout{std::chrono::seconds(30)};  // the whole exchange
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
    size_t max_response_size = 16u << 20;  // body bytes; more is an error
    std::string ca_file;    // pins this CA file for this request ("" = Options::ca_file)
    long max_redirects = 0;  // 0: a redirect is the answer
  };

  struct Response {
    long status = 0;  // the HTTP status; 0 when error is set
    std::vector<std::pair<std::string, std::string>> headers;  // names in lower case, in order
    std::string body;
    std::string error;  // "" when an HTTP answer (any status) came back complete
    // The first header of that name (case-insensitive), or "".
    std::string header(std::string_view name) const;
  };
  using Callback = std::function<void(Response)>;

  // Throws std::runtime_error when libcurl cannot be set up (start-up only).
  HttpClient(uv_loop_t* loop, Options opt);
  // Cancels what is in flight (no callbacks) and closes its handles (freed when the loop runs).
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts a request; `cb` runs later on the loop, exactly once. Returns its id (for cancel).
  uint64_t start(Request req, Callback cb);
  // Drops a request in flight without calling its callback. False if it is not in flight.
  bool cancel(uint64_t id);
  // Options for the requests started from now on (a config reload).
  void set_options(Options opt) { opt_ = std::move(opt); }
  size_t in_flight() const { return transfers_.size(); }

 private:
  struct Transfer;
  struct Socket;
  static int on_socket(void* easy, int fd, int what, void* userp, void* socketp);
  static int on_timer(void* multi, long timeout_ms, void* userp);
  std::string configure(Transfer& t, const Request& req);
  void socket_action(int fd, int flags);
  void check_done();
  void finish(Transfer* t, int code);
  void fail_later(uint64_t id, Callback cb, std::string error);

  uv_loop_t* loop_;
  Options opt_;
  void* multi_ = nullptr;  // CURLM*, kept out of this header
  uv_timer_t* timer_ = nullptr;  // libcurl's timeout
  uv_timer_t* defer_ = nullptr;  // delivers failures found before a transfer could start
  struct Deferred {
    uint64_t id;
    Callback cb;
    std::string error;
  };
  std::vector<Deferred> deferred_;
  std::unordered_map<uint64_t, std::unique_ptr<Transfer>> transfers_;
  std::unordered_set<Socket*> sockets_;
  uint64_t next_id_ = 1;
};

}  // namespace postern::http
