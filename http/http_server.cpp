// http_server.cpp — see http_server.h.
#include "http/http_server.h"

#include <algorithm>
#include <cctype>
#include <http_parser.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <climits>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "base/log.h"
#include "base/text.h"
#include "tls/tls_stream.h"

namespace postern::http {

const char* reason_phrase(int s) {
  switch (s) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
  }
  return "Status";
}

std::string url_decode(const std::string& s, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      r.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else {
      r.push_back(plus_is_space && s[i] == '+' ? ' ' : s[i]);
    }
  }
  return r;
}

Response json_response(int status, const std::string& json_text) { return {status, "application/json", json_text, {}}; }

Response json_error(int status, const std::string& message) {
  return {status, "application/json", nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), {}};
}

namespace {
std::string lower_name(const std::string& k) {
  std::string low = k;
  for (auto& ch : low) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return low;
}
}  // namespace

std::string cookie_value(const Request& req, const std::string& name) {
  auto it = req.headers.find("cookie");
  if (it == req.headers.end()) return "";
  const std::string& c = it->second;
  std::string want = name + "=";
  size_t pos = 0;
  while (pos < c.size()) {
    size_t end = c.find_first_of(";,", pos);
    if (end == std::string::npos) end = c.size();
    size_t b = c.find_first_not_of(' ', pos);
    if (b != std::string::npos && b < end && c.compare(b, want.size(), want) == 0) {
      std::string v = c.substr(b + want.size(), end - b - want.size());
      while (!v.empty() && v.back() == ' ') v.pop_back();
      return v;
    }
    pos = end + 1;
  }
  return "";
}

Response static_response(const std::string& content_type, std::string body) {
  return {200, content_type, std::move(body), {}};
}

// --- Router ---------------------------------------------------------------------------------

namespace {

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    out.push_back(url_decode(path.substr(i, j - i), false));
    i = j;
  }
  return out;
}

}  // namespace

void Router::add(const std::string& method, const std::string& pattern, Handler h) {
  routes_.push_back({method, split(pattern), std::move(h)});
}

void Router::dispatch(Request& req, Responder respond) const {
  auto segs = split(req.path);
  bool path_known = false;
  for (auto& r : routes_) {
    if (r.segs.size() != segs.size()) continue;
    std::map<std::string, std::string> params;
    bool match = true;
    for (size_t i = 0; i < segs.size() && match; ++i) {
      const auto& p = r.segs[i];
      if (p.size() > 2 && p.front() == '{' && p.back() == '}') params[p.substr(1, p.size() - 2)] = segs[i];
      else match = p == segs[i];
    }
    if (!match) continue;
    path_known = true;
    if (r.method != req.method) continue;
    req.params = std::move(params);
    return r.h(req, std::move(respond));
  }
  respond(path_known ? json_error(405, "method not allowed") : json_error(404, "no such endpoint"));
}

// --- one connection -------------------------------------------------------------------------

class HttpConnection : public tls::StreamHandler {
 public:
  HttpConnection(uv_loop_t* loop, std::shared_ptr<ServerShared> sh) : loop_(loop), sh_(std::move(sh)) {
    ++sh_->connections;
    uv_timer_init(loop_, &timer_);
    timer_.data = this;
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_message_begin = [](http_parser* p) { return self(p)->on_begin(); };
    settings_.on_url = [](http_parser* p, const char* at, size_t n) {
      self(p)->url_.append(at, n);
      return 0;
    };
    settings_.on_header_field = [](http_parser* p, const char* at, size_t n) {
      auto* c = self(p);
      if (c->in_value_) c->finish_header();
      c->in_value_ = false;
      c->field_.append(at, n);
      return 0;
    };
    settings_.on_header_value = [](http_parser* p, const char* at, size_t n) {
      auto* c = self(p);
      c->in_value_ = true;
      c->value_.append(at, n);
      return 0;
    };
    settings_.on_headers_complete = [](http_parser* p) { return self(p)->on_headers(); };
    settings_.on_body = [](http_parser* p, const char* at, size_t n) { return self(p)->on_body(at, n); };
    settings_.on_message_complete = [](http_parser* p) {
      auto* c = self(p);
      c->complete_ = true;
      c->keep_alive_ = http_should_keep_alive(p);
      http_parser_pause(p, 1);  // one request at a time
      return 0;
    };
  }

  void start(int fd) {
    const auto& lim = sh_->opt.limits;
    tls::StreamLimits sl;
    sl.write_timeout = lim.write_timeout;
    sl.close_timeout = std::chrono::seconds(5);
    sl.max_write_queue = 64u << 20;  // responses are built whole; their size is the handler's
    stream_ = tls::TlsStream::create(loop_, this, sl);
    if (stream_->open(fd) != 0) return;
    auto ctx = sh_->opt.context ? sh_->opt.context() : nullptr;
    if (sh_->opt.plain) return arm(lim.idle_timeout);
    if (!ctx || !stream_->start_tls(ctx, true)) return stream_->abort();
    arm(lim.idle_timeout);  // the handshake and the first request's first byte
  }

  // StreamHandler
  void on_stream_data(std::string_view bytes) override {
    if (!started_request_) {
      started_request_ = true;
      arm(sh_->opt.limits.request_timeout);  // from the first byte: bytes never extend it
    }
    if (pending_.size() + bytes.size() > sh_->opt.limits.max_header_size + sh_->opt.limits.max_body_size + 65536)
      return refuse(413, "request too large");
    pending_.append(bytes);
    parse();
  }
  void on_stream_end(tls::StreamEnd why, const std::string&) override {
    if (why == tls::StreamEnd::kTlsError && !stream_->tls_ready()) ++sh_->tls_failures;
  }
  void on_stream_closed() override {
    stream_ = nullptr;
    *alive_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
      delete static_cast<HttpConnection*>(h->data);
    });
  }

  ~HttpConnection() override { --sh_->connections; }

 private:
  static HttpConnection* self(http_parser* p) { return static_cast<HttpConnection*>(p->data); }

  void arm(std::chrono::milliseconds t) {
    uv_timer_start(&timer_, [](uv_timer_t* tm) {
      auto* c = static_cast<HttpConnection*>(tm->data);
      if (c->stream_ && !c->busy_) c->stream_->abort();  // deadline: no answer owed
    }, static_cast<uint64_t>(std::max<int64_t>(1, t.count())), 0);
  }

  int on_begin() {
    req_ = Request{};
    req_.peer_ip = stream_ ? stream_->peer_ip() : "";
    url_.clear();
    header_bytes_ = 0;
    return 0;
  }

  void finish_header() {
    std::string f = ascii_lower(field_);
    auto& slot = req_.headers[f];
    slot = slot.empty() ? value_ : slot + ", " + value_;
    if (f == "authorization") req_.authorization = value_;
    field_.clear();
    value_.clear();
  }

  int on_headers() {
    if (in_value_) finish_header();
    in_value_ = false;
    req_.method = http_method_str(static_cast<http_method>(parser_.method));
    parse_url();
    headers_done_ = true;
    if (parser_.content_length != ULLONG_MAX && parser_.content_length > sh_->opt.limits.max_body_size) {
      owed_ = 413;
      http_parser_pause(&parser_, 1);
      return 0;
    }
    if (sh_->opt.auth) {
      if (int st = sh_->opt.auth(req_); st != 0) {  // before any of the body is read
        owed_ = st;
        http_parser_pause(&parser_, 1);
      }
    }
    return 0;
  }

  int on_body(const char* at, size_t n) {
    if (req_.body.size() + n > sh_->opt.limits.max_body_size) {
      owed_ = 413;
      http_parser_pause(&parser_, 1);
      return 0;
    }
    req_.body.append(at, n);
    return 0;
  }

  void parse_url() {
    http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url_.data(), url_.size(), 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
      req_.path = url_;
      return;
    }
    // As sent: an encoded "/" (%2F) must not become a separator. Router decodes each segment.
    req_.path = url_.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    if (!(u.field_set & (1 << UF_QUERY))) return;
    std::string q = url_.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    size_t pos = 0;
    while (pos <= q.size()) {
      size_t amp = q.find('&', pos);
      std::string kv = q.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
      size_t eq = kv.find('=');
      if (!kv.empty())
        req_.query[url_decode(kv.substr(0, eq), true)] = eq == std::string::npos ? "" : url_decode(kv.substr(eq + 1), true);
      if (amp == std::string::npos) break;
      pos = amp + 1;
    }
  }

  void parse() {
    while (!busy_ && !pending_.empty() && stream_ && !stream_->closing()) {
      size_t used = http_parser_execute(&parser_, &settings_, pending_.data(), pending_.size());
      auto err = HTTP_PARSER_ERRNO(&parser_);
      if (!headers_done_) {
        header_bytes_ += used;
        if (header_bytes_ > sh_->opt.limits.max_header_size) return refuse(431, "request headers too large");
      }
      if (err != HPE_OK && err != HPE_PAUSED) return refuse(400, http_errno_description(err));
      pending_.erase(0, used);
      if (owed_) {
        int st = owed_;
        owed_ = 0;
        if (st == 401) spdlog::warn("{}: 401 {} {} client={}", sh_->opt.name, req_.method, esc(req_.path), req_.peer_ip);
        return refuse(st, st == 413 ? "request body too large" : st == 401 ? "unauthorized" : reason_phrase(st));
      }
      if (!complete_) return;
      dispatch();
    }
  }

  void dispatch() {
    busy_ = true;
    complete_ = false;
    headers_done_ = false;
    uv_timer_stop(&timer_);
    stream_->set_reading(false);  // one request at a time: the next one waits in the kernel
    ++sh_->requests;
    std::string method = req_.method, path = req_.path;
    auto alive = alive_;
    sh_->opt.handler(req_, [this, alive, method, path](Response r) {
      if (!*alive) return;
      spdlog::info("{}: {} {} {}", sh_->opt.name, r.status, method, esc(path));
      send(std::move(r));
      busy_ = false;
      if (!keep_alive_) return stream_->close();
      stream_->set_reading(true);
      started_request_ = false;
      arm(sh_->opt.limits.idle_timeout);
      http_parser_pause(&parser_, 0);
      parse();
    });
  }

  void send(const Response& r) {
    if (!stream_) return;
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) +
                       "\r\nContent-Type: " + r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) +
                       "\r\nConnection: " + (keep_alive_ ? "keep-alive" : "close") + "\r\n";
    // Each header once (a second one is a finding for any scanner, and browsers take the first):
    // the response's own first, then the defaults it did not set.
    std::vector<std::string> seen;
    auto once = [&](const std::string& k, const std::string& v) {
      std::string low = lower_name(k);
      if (std::find(seen.begin(), seen.end(), low) != seen.end()) return;
      seen.push_back(low);
      head += k + ": " + v + "\r\n";
    };
    for (auto& [k, v] : r.headers) once(k, v);
    once("Cache-Control", "no-store");
    once("X-Content-Type-Options", "nosniff");
    once("Strict-Transport-Security", "max-age=31536000");
    head += "\r\n";
    stream_->write(head + r.body);
  }

  // An answer to a request that is not read further: the connection closes after it.
  void refuse(int status, const std::string& msg) {
    keep_alive_ = false;
    busy_ = true;
    send(json_error(status, msg));
    if (stream_) stream_->close();
  }

  uv_loop_t* loop_;
  std::shared_ptr<ServerShared> sh_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  tls::TlsStream* stream_ = nullptr;
  uv_timer_t timer_{};
  http_parser parser_{};
  http_parser_settings settings_{};
  std::string pending_, url_, field_, value_;
  size_t header_bytes_ = 0;
  bool in_value_ = false, headers_done_ = false, complete_ = false, keep_alive_ = true, busy_ = false;
  bool started_request_ = false;
  int owed_ = 0;
  Request req_;
};

// --- the server -----------------------------------------------------------------------------

HttpServer::HttpServer(uv_loop_t* loop, ServerOptions opt)
    : loop_(loop), sh_(std::make_shared<ServerShared>()) {
  sh_->opt = std::move(opt);
}

HttpServer::~HttpServer() { close(); }

void HttpServer::listen(const std::string& host, uint16_t port) {
  auto sh = sh_;
  uv_loop_t* loop = loop_;
  acceptor_ = std::make_unique<tls::Acceptor>(loop_, sh_->opt.name, [sh, loop](int fd) {
    if (sh->connections >= sh->opt.limits.max_connections) {
      ++sh->refused;
      ::close(fd);  // before TLS there is no way to say why; the cap keeps descriptors for SMTP
      return;
    }
    auto* c = new HttpConnection(loop, sh);
    c->start(fd);
  });
  acceptor_->listen(host, port, false, 128);
}

void HttpServer::close() {
  if (!acceptor_) return;
  auto* raw = acceptor_.release();
  raw->close([raw] { delete raw; });
}

}  // namespace postern::http
