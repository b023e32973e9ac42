// http_client.cpp — see http_client.h. libcurl's multi "socket" API on libuv: libcurl says which
// sockets to watch (CURLMOPT_SOCKETFUNCTION -> uv_poll_t) and when to call back
// (CURLMOPT_TIMERFUNCTION -> uv_timer_t); the loop tells libcurl what happened
// (curl_multi_socket_action) and finished transfers are collected after every call.
// Security-sensitive: the body and header bounds in the write callbacks, the verification and
// protocol options set on every transfer, the header check (no CR/LF).
#include "http/http_client.h"

#include "base/text.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <mutex>
#include <stdexcept>

namespace postern::http {
namespace {

constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr size_t kMaxHeaderLines = 200;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

bool token_char(unsigned char c) { return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos; }

// A request line or header that could smuggle a second request is refused before it is sent.
std::string check_request(const HttpClient::Request& r) {
  static const char* methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE"};
  if (std::find(std::begin(methods), std::end(methods), r.method) == std::end(methods))
    return "unsupported method '" + r.method + "'";
  if (r.url.empty()) return "no URL";
  if (r.url.find_first_of("\r\n \t") != std::string::npos) return "bad URL: it contains white space";
  for (auto& [name, value] : r.headers) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](unsigned char c) { return token_char(c); }))
      return "bad header name '" + name + "'";
    if (value.find_first_of("\r\n") != std::string::npos || value.find('\0') != std::string::npos)
      return "bad value for header " + name + ": CR, LF and NUL are not allowed";
  }
  return "";
}

void global_init() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) throw std::runtime_error(std::string("libcurl: ") + curl_easy_strerror(rc));
}

}  // namespace

struct HttpClient::Transfer {
  ~Transfer() {
    if (headers) curl_slist_free_all(headers);
    if (easy) curl_easy_cleanup(easy);
  }
  uint64_t id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  Callback cb;
  Response resp;
  size_t max_body = 0;
  size_t header_bytes = 0;
  bool body_too_large = false;
  bool headers_too_large = false;
  std::chrono::milliseconds timeout{0};
  char errbuf[CURL_ERROR_SIZE] = {};
};

struct HttpClient::Socket {
  uv_poll_t poll{};
  curl_socket_t fd = CURL_SOCKET_BAD;
  HttpClient* owner = nullptr;
};

std::string HttpClient::Response::header(std::string_view name) const {
  std::string want = ascii_lower(name);
  for (auto& [k, v] : headers)
    if (k == want) return v;
  return "";
}

HttpClient::Options HttpClient::options_from(const Config& cfg) {
  Options o;
  o.proxy = cfg.http_client.proxy;
  o.ca_file = cfg.http_client.ca_file;
#ifdef POSTERN_VERSION
  o.user_agent = std::string("Postern/") + POSTERN_VERSION;
#endif
  return o;
}

HttpClient::HttpClient(uv_loop_t* loop, Options opt) : loop_(loop), opt_(std::move(opt)) {
  global_init();
  CURLM* m = curl_multi_init();
  if (!m) throw std::runtime_error("libcurl: curl_multi_init failed");
  multi_ = m;
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION,
                    +[](CURLM* multi, long ms, void* u) -> int { return HttpClient::on_timer(multi, ms, u); });
  curl_multi_setopt(m, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, std::max(1L, opt_.max_connections));
  timer_ = new uv_timer_t;
  defer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  uv_timer_init(loop_, defer_);
  timer_->data = this;
  defer_->data = this;
}

HttpClient::~HttpClient() {
  auto* m = static_cast<CURLM*>(multi_);
  for (auto& [id, t] : transfers_) curl_multi_remove_handle(m, t->easy);
  transfers_.clear();
  // Stop watching while the sockets are still open, then let libcurl close them unwatched.
  for (Socket* s : std::vector<Socket*>(sockets_.begin(), sockets_.end())) {
    uv_poll_stop(&s->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
  }
  sockets_.clear();
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, nullptr);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, nullptr);
  curl_multi_cleanup(m);
  deferred_.clear();
  for (uv_timer_t* t : {timer_, defer_})
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

// --- requests -----------------------------------------------------------------------------------

std::string HttpClient::configure(Transfer& t, const Request& req) {
  CURL* e = t.easy;
  CURLcode rc = CURLE_OK;
  auto set = [&rc](CURLcode r) {
    if (rc == CURLE_OK) rc = r;
  };
  set(curl_easy_setopt(e, CURLOPT_URL, req.url.c_str()));
  set(curl_easy_setopt(e, CURLOPT_PRIVATE, &t));
  set(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t.errbuf));
  set(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
  bool https = ascii_lower(req.url.substr(0, 8)) == "https://";
  set(curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https"));
  set(curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, req.max_redirects > 0 ? 1L : 0L));
  set(curl_easy_setopt(e, CURLOPT_MAXREDIRS, std::max(0L, req.max_redirects)));
  set(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, req.timeout.count()))));
  set(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, req.connect_timeout.count()))));
  set(curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(req.max_response_size)));
  set(curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L));
  set(curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L));
  const std::string& ca = req.ca_file.empty() ? opt_.ca_file : req.ca_file;
  if (!ca.empty()) {  // only this CA: not the system's directory too
    set(curl_easy_setopt(e, CURLOPT_CAINFO, ca.c_str()));
    set(curl_easy_setopt(e, CURLOPT_CAPATH, nullptr));
  }
  if (opt_.proxy == "direct") set(curl_easy_setopt(e, CURLOPT_PROXY, ""));  // "" = none, environment ignored
  else if (!opt_.proxy.empty()) set(curl_easy_setopt(e, CURLOPT_PROXY, opt_.proxy.c_str()));
  set(curl_easy_setopt(e, CURLOPT_USERAGENT, opt_.user_agent.c_str()));
  if (req.method == "HEAD") {
    set(curl_easy_setopt(e, CURLOPT_NOBODY, 1L));
  } else if (req.method == "POST" || req.method == "PUT" || !req.body.empty()) {
    set(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size())));
    set(curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req.body.c_str()));
    if (req.method != "POST") set(curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req.method.c_str()));
    t.headers = curl_slist_append(t.headers, "Expect:");  // no 100-continue round trip
  } else if (req.method != "GET") {
    set(curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req.method.c_str()));
  }
  for (auto& [name, value] : req.headers) {
    std::string line = name + (value.empty() ? ";" : ": " + value);  // "Name;" sends an empty header
    curl_slist* next = curl_slist_append(t.headers, line.c_str());
    if (!next) return "out of memory";
    t.headers = next;
  }
  if (t.headers) set(curl_easy_setopt(e, CURLOPT_HTTPHEADER, t.headers));
  set(curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, +[](char* p, size_t size, size_t n, void* u) -> size_t {
    auto* tr = static_cast<Transfer*>(u);
    size_t len = size * n;
    tr->header_bytes += len;
    if (tr->header_bytes > kMaxHeaderBytes || tr->resp.headers.size() >= kMaxHeaderLines) {
      tr->headers_too_large = true;
      return 0;
    }
    std::string_view line = trim(std::string_view(p, len));
    if (line.rfind("HTTP/", 0) == 0) {  // a new response (after a redirect or 100 Continue)
      tr->resp.headers.clear();
      return len;
    }
    auto colon = line.find(':');
    if (colon != std::string_view::npos && colon > 0)
      tr->resp.headers.emplace_back(ascii_lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
    return len;
  }));
  set(curl_easy_setopt(e, CURLOPT_HEADERDATA, &t));
  set(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* u) -> size_t {
    auto* tr = static_cast<Transfer*>(u);
    size_t len = size * n;
    if (len > tr->max_body - std::min(tr->max_body, tr->resp.body.size())) {
      tr->body_too_large = true;
      return 0;  // aborts the transfer: CURLE_WRITE_ERROR
    }
    tr->resp.body.append(p, len);
    return len;
  }));
  set(curl_easy_setopt(e, CURLOPT_WRITEDATA, &t));
  if (rc != CURLE_OK) return std::string("cannot set up the request: ") + curl_easy_strerror(rc);
  return "";
}

uint64_t HttpClient::start(Request req, Callback cb) {
  uint64_t id = next_id_++;
  if (auto e = check_request(req); !e.empty()) {
    fail_later(id, std::move(cb), e);
    return id;
  }
  auto t = std::make_unique<Transfer>();
  t->id = id;
  t->cb = std::move(cb);
  t->max_body = req.max_response_size;
  t->timeout = req.timeout;
  t->easy = curl_easy_init();
  std::string err = t->easy ? configure(*t, req) : "cannot start a libcurl transfer";
  if (err.empty() && curl_multi_add_handle(static_cast<CURLM*>(multi_), t->easy) != CURLM_OK)
    err = "cannot add the transfer to libcurl";
  if (!err.empty()) {
    fail_later(id, std::move(t->cb), err);
    return id;
  }
  transfers_.emplace(id, std::move(t));  // libcurl asks for a timeout now; the work starts on the loop
  return id;
}

bool HttpClient::cancel(uint64_t id) {
  auto d = std::find_if(deferred_.begin(), deferred_.end(), [id](const Deferred& x) { return x.id == id; });
  if (d != deferred_.end()) {
    deferred_.erase(d);
    return true;
  }
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return false;
  curl_multi_remove_handle(static_cast<CURLM*>(multi_), it->second->easy);
  transfers_.erase(it);
  return true;
}

void HttpClient::fail_later(uint64_t id, Callback cb, std::string error) {
  deferred_.push_back({id, std::move(cb), std::move(error)});
  uv_timer_start(defer_, [](uv_timer_t* h) {
    auto* self = static_cast<HttpClient*>(h->data);
    auto batch = std::move(self->deferred_);
    self->deferred_.clear();
    for (auto& d : batch) {
      Response r;
      r.error = std::move(d.error);
      if (d.cb) d.cb(std::move(r));
    }
  }, 0, 0);
}

// --- libcurl <-> libuv ------------------------------------------------------------------------

int HttpClient::on_socket(void*, int fd, int what, void* userp, void* socketp) {
  auto* self = static_cast<HttpClient*>(userp);
  auto* sock = static_cast<Socket*>(socketp);
  auto* m = static_cast<CURLM*>(self->multi_);
  if (what == CURL_POLL_REMOVE) {
    if (sock) {
      uv_poll_stop(&sock->poll);
      self->sockets_.erase(sock);
      uv_close(reinterpret_cast<uv_handle_t*>(&sock->poll), [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
      curl_multi_assign(m, fd, nullptr);
    }
    return 0;
  }
  if (!sock) {
    sock = new Socket;
    sock->fd = fd;
    sock->owner = self;
    if (uv_poll_init_socket(self->loop_, &sock->poll, fd) != 0) {
      delete sock;
      return -1;  // libcurl fails the transfer
    }
    sock->poll.data = sock;
    self->sockets_.insert(sock);
    curl_multi_assign(m, fd, sock);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, [](uv_poll_t* h, int status, int ev) {
    auto* s = static_cast<Socket*>(h->data);
    int flags = status < 0 ? CURL_CSELECT_ERR : 0;
    if (status >= 0 && (ev & UV_READABLE)) flags |= CURL_CSELECT_IN;
    if (status >= 0 && (ev & UV_WRITABLE)) flags |= CURL_CSELECT_OUT;
    s->owner->socket_action(s->fd, flags);  // may close this handle: freed in its close callback
  });
  return 0;
}

int HttpClient::on_timer(void*, long timeout_ms, void* userp) {
  auto* self = static_cast<HttpClient*>(userp);
  if (timeout_ms < 0) {
    uv_timer_stop(self->timer_);
    return 0;
  }
  uv_timer_start(self->timer_, [](uv_timer_t* h) {
    static_cast<HttpClient*>(h->data)->socket_action(CURL_SOCKET_TIMEOUT, 0);
  }, static_cast<uint64_t>(timeout_ms), 0);
  return 0;
}

void HttpClient::socket_action(int fd, int flags) {
  int running = 0;
  curl_multi_socket_action(static_cast<CURLM*>(multi_), fd, flags, &running);
  check_done();
}

void HttpClient::check_done() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(static_cast<CURLM*>(multi_), &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
    if (t) finish(t, msg->data.result);
  }
}

namespace {

std::string describe(CURLcode code, const char* errbuf, std::chrono::milliseconds timeout) {
  std::string detail = errbuf && *errbuf ? std::string(trim(errbuf)) : curl_easy_strerror(code);
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT: return "timed out after " + std::to_string(timeout.count()) + " ms (" + detail + ")";
    case CURLE_COULDNT_CONNECT: return "cannot connect: " + detail;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return "cannot resolve: " + detail;
    case CURLE_PEER_FAILED_VERIFICATION: return "TLS verification failed: " + detail;
    case CURLE_SSL_CONNECT_ERROR: return "TLS handshake failed: " + detail;
    case CURLE_SSL_CACERT_BADFILE: return "cannot load the CA file: " + detail;
    case CURLE_UNSUPPORTED_PROTOCOL: return "unsupported protocol (http and https only): " + detail;
    case CURLE_URL_MALFORMAT: return "bad URL: " + detail;
    case CURLE_TOO_MANY_REDIRECTS: return "too many redirects: " + detail;
    case CURLE_GOT_NOTHING: return "the server closed the connection without an answer";
    default: return detail;
  }
}

}  // namespace

void HttpClient::finish(Transfer* t, int code) {
  auto rc = static_cast<CURLcode>(code);
  curl_multi_remove_handle(static_cast<CURLM*>(multi_), t->easy);
  Response r = std::move(t->resp);
  if (rc == CURLE_OK) {
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r.status);
  } else {
    if (t->body_too_large || rc == CURLE_FILESIZE_EXCEEDED)
      r.error = "response larger than " + std::to_string(t->max_body) + " bytes";
    else if (t->headers_too_large)
      r.error = "response headers larger than " + std::to_string(kMaxHeaderBytes) + " bytes";
    else
      r.error = describe(rc, t->errbuf, t->timeout);
    r.status = 0;
    r.headers.clear();
    r.body.clear();
  }
  Callback cb = std::move(t->cb);
  transfers_.erase(t->id);  // frees the easy handle; `t` is gone
  if (cb) cb(std::move(r));
}

}  // namespace postern::http
