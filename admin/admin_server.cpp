#include "admin/admin_server.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "tls/tls_engine.h"

namespace postern::admin {
namespace {

constexpr size_t kMaxRequest = 1 << 20;

const char* reason(int s) {
  switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
  }
  return "Status";
}

std::string url_decode(const std::string& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      r.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      r.push_back(s[i] == '+' ? ' ' : s[i]);
    }
  }
  return r;
}

}  // namespace

std::string json_error(const std::string& message) { return nlohmann::json{{"error", message}}.dump(); }

class AdminConnection {
 public:
  AdminConnection(AdminServer& srv) : srv_(srv), alive_(std::make_shared<bool>(true)) {
    uv_tcp_init(srv_.loop_, &tcp_);
    tcp_.data = this;
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_url = [](http_parser* p, const char* at, size_t n) {
      static_cast<AdminConnection*>(p->data)->url_.append(at, n);
      return 0;
    };
    settings_.on_header_field = [](http_parser* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConnection*>(p->data);
      if (c->in_value_) {
        c->finish_header();
        c->in_value_ = false;
      }
      c->field_.append(at, n);
      return 0;
    };
    settings_.on_header_value = [](http_parser* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConnection*>(p->data);
      c->in_value_ = true;
      c->value_.append(at, n);
      return 0;
    };
    settings_.on_headers_complete = [](http_parser* p) {
      auto* c = static_cast<AdminConnection*>(p->data);
      if (c->in_value_) c->finish_header();
      c->in_value_ = false;
      return 0;
    };
    settings_.on_body = [](http_parser* p, const char* at, size_t n) {
      auto* c = static_cast<AdminConnection*>(p->data);
      if (c->req_.body.size() + n > kMaxRequest) return 1;
      c->req_.body.append(at, n);
      return 0;
    };
    settings_.on_message_complete = [](http_parser* p) {
      auto* c = static_cast<AdminConnection*>(p->data);
      c->complete_ = true;
      c->keep_alive_ = http_should_keep_alive(p);
      c->req_.method = http_method_str(static_cast<http_method>(p->method));
      http_parser_pause(p, 1);  // one request at a time
      return 0;
    };
  }

  bool accept(uv_stream_t* server) {
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) return false;
    auto ctx = srv_.ctx_.current();
    if (!ctx) return false;
    tls_ = std::make_unique<tls::TlsEngine>(ctx, true);
    uv_timer_init(srv_.loop_, &timer_);
    timer_.data = this;
    timer_open_ = true;
    arm();
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_),
                  [](uv_handle_t*, size_t, uv_buf_t* b) {
                    static char buf[64 * 1024];  // the control loop is single-threaded
                    *b = uv_buf_init(buf, sizeof buf);
                  },
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
                    auto* c = static_cast<AdminConnection*>(s->data);
                    if (n == 0) return;
                    if (n < 0) return c->close();
                    c->on_bytes(b->base, static_cast<size_t>(n));
                  });
    return true;
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    *alive_ = false;
    auto done = [](uv_handle_t* h) {
      auto* c = static_cast<AdminConnection*>(h->data);
      if (--c->handles_ == 0) delete c;
    };
    handles_ = timer_open_ ? 2 : 1;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), done);
    if (timer_open_) uv_close(reinterpret_cast<uv_handle_t*>(&timer_), done);
  }

 private:
  void arm() {
    uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<AdminConnection*>(t->data)->close(); }, 30000, 0);
  }

  void finish_header() {
    std::string f = field_;
    for (auto& ch : f) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (f == "authorization") req_.authorization = value_;
    field_.clear();
    value_.clear();
  }

  void on_bytes(const char* data, size_t n) {
    arm();
    tls_->put_ciphertext(data, n);
    std::string plain;
    bool was = tls_->handshake_done();
    auto st = tls_->pump(plain);
    flush_tls();
    if (st == tls::TlsEngine::Status::kError) {
      if (!was) ++srv_.tls_failures_;
      return close();
    }
    if (st == tls::TlsEngine::Status::kClosed) return close();
    pending_.append(plain);
    if (pending_.size() > kMaxRequest) return respond_and_close(413, "request too large");
    parse();
  }

  void parse() {
    while (!busy_ && !pending_.empty() && !closed_) {
      size_t used = http_parser_execute(&parser_, &settings_, pending_.data(), pending_.size());
      enum http_errno err = HTTP_PARSER_ERRNO(&parser_);
      if (err != HPE_OK && err != HPE_PAUSED) return respond_and_close(400, http_errno_description(err));
      pending_.erase(0, used);
      if (!complete_) return;
      dispatch();
    }
  }

  void dispatch() {
    busy_ = true;
    complete_ = false;
    ++srv_.requests_;
    http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url_.data(), url_.size(), 0, &u) == 0 && (u.field_set & (1 << UF_PATH))) {
      req_.path = url_.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
      if (u.field_set & (1 << UF_QUERY)) {
        std::string q = url_.substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
        size_t pos = 0;
        while (pos <= q.size()) {
          size_t amp = q.find('&', pos);
          std::string kv = q.substr(pos, amp - pos);
          size_t eq = kv.find('=');
          if (!kv.empty()) req_.query[url_decode(kv.substr(0, eq))] = eq == std::string::npos ? "" : url_decode(kv.substr(eq + 1));
          if (amp == std::string::npos) break;
          pos = amp + 1;
        }
      }
    } else {
      req_.path = url_;
    }
    // Bearer token, compared in constant time; any failure is a bare 401.
    const std::string want = "Bearer " + srv_.token_;
    bool ok = req_.authorization.size() == want.size() &&
              CRYPTO_memcmp(req_.authorization.data(), want.data(), want.size()) == 0;
    std::string method = req_.method, path = req_.path;
    if (!ok) {
      spdlog::warn("admin api: 401 {} {}", method, path);
      return send({401, "application/json", json_error("unauthorized")});
    }
    auto alive = alive_;
    srv_.handler_(req_, [this, alive, method, path](HttpResponse r) {
      if (!*alive) return;
      spdlog::info("admin api: {} {} {}", r.status, method, path);
      send(std::move(r));
    });
  }

  void send(HttpResponse r) {
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\nContent-Type: " +
                       r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) +
                       "\r\nCache-Control: no-store\r\nConnection: " + (keep_alive_ ? "keep-alive" : "close") + "\r\n\r\n";
    write_plain(head + r.body);
    req_ = HttpRequest{};
    url_.clear();
    busy_ = false;
    if (!keep_alive_) {
      close_after_write_ = true;
      return;
    }
    http_parser_pause(&parser_, 0);
    parse();
  }

  void respond_and_close(int status, const std::string& msg) {
    keep_alive_ = false;
    send({status, "application/json", json_error(msg)});
  }

  void write_plain(const std::string& data) {
    std::string cipher;
    if (tls_->seal(data, cipher) != tls::TlsEngine::Status::kOk) return close();
    write_raw(std::move(cipher));
  }

  void flush_tls() {
    std::string out;
    tls_->take_ciphertext(out);
    write_raw(std::move(out));
  }

  void write_raw(std::string out) {
    if (out.empty() || closed_) return;
    struct Req {
      uv_write_t w;
      std::string data;
    };
    auto* rq = new Req{{}, std::move(out)};
    rq->w.data = this;
    uv_buf_t b = uv_buf_init(rq->data.data(), static_cast<unsigned>(rq->data.size()));
    ++writes_;
    if (uv_write(&rq->w, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, [](uv_write_t* w, int) {
          auto* c = static_cast<AdminConnection*>(w->data);
          delete reinterpret_cast<Req*>(w);
          if (--c->writes_ == 0 && c->close_after_write_) c->close();
        }) != 0) {
      delete rq;
      --writes_;
      close();
    }
  }

  AdminServer& srv_;
  std::shared_ptr<bool> alive_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  bool timer_open_ = false;
  int handles_ = 0;
  int writes_ = 0;
  bool closed_ = false;
  bool close_after_write_ = false;
  std::unique_ptr<tls::TlsEngine> tls_;
  http_parser parser_{};
  http_parser_settings settings_{};
  std::string pending_, url_, field_, value_;
  bool in_value_ = false, complete_ = false, keep_alive_ = true, busy_ = false;
  HttpRequest req_;
};

AdminServer::AdminServer(uv_loop_t* loop, tls::ContextProvider& ctx, std::string token, Handler handler)
    : loop_(loop), ctx_(ctx), token_(std::move(token)), handler_(std::move(handler)) {}

AdminServer::~AdminServer() = default;

void AdminServer::listen(const std::string& host, uint16_t port) {
  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
  listener_->data = this;
  sockaddr_storage ss{};
  int r = host.find(':') != std::string::npos ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss))
                                              : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss));
  if (r == 0) r = uv_tcp_bind(listener_, reinterpret_cast<sockaddr*>(&ss), 0);
  if (r == 0)
    r = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 128, [](uv_stream_t* s, int status) {
      if (status < 0) return;
      auto* srv = static_cast<AdminServer*>(s->data);
      auto* c = new AdminConnection(*srv);
      if (!c->accept(s)) c->close();
    });
  if (r != 0) throw std::runtime_error("admin API cannot listen on " + host + ":" + std::to_string(port) + ": " + uv_strerror(r));
}

void AdminServer::close() {
  if (!listener_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(listener_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  listener_ = nullptr;
}

}  // namespace postern::admin
