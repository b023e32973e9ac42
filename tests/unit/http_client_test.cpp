// http_client_test.cpp — HttpClient (libcurl multi on libuv) against a tiny HTTP/1.1 server on
// 127.0.0.1 run in threads by the test (plain or TLS with a certificate made here). Every wait
// is bounded; the server stops (and joins its threads) at the end of each test.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "http/http_client.h"
#include "tests/unit/test_certs.h"
#include "tls/context_provider.h"

namespace postern::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Reply {
  std::string raw;    // the bytes to answer with
  bool hang = false;  // read the request, then say nothing until the server stops
};

// A tiny HTTP/1.1 server: one thread accepting, one per connection; one request per connection.
class TestServer {
 public:
  using Handler = std::function<Reply(const std::string& head, const std::string& body)>;

  explicit TestServer(Handler h, SSL_CTX* tls = nullptr) : handler_(std::move(h)), tls_(tls) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 128) != 0 ||
        ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 || ::pipe(wake_) != 0)
      throw std::runtime_error("test server: cannot listen");
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~TestServer() { stop(); }

  uint16_t port() const { return port_; }
  std::string url(const std::string& path = "/") const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + path;
  }
  std::vector<std::string> heads() {
    std::lock_guard lk(mu_);
    return heads_;
  }
  int connections() const { return connections_.load(); }

  void stop() {
    if (stopped_.exchange(true)) return;
    (void)!::write(wake_[1], "x", 1);
    acceptor_.join();
    std::vector<std::thread> conns;
    {
      std::lock_guard lk(mu_);
      conns.swap(conns_);
    }
    for (auto& t : conns) t.join();
    ::close(lfd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

 private:
  bool stopping(int timeout_ms) {
    pollfd p{wake_[0], POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) > 0;
  }

  void accept_loop() {
    for (int i = 0; i < 100000; ++i) {
      pollfd p[2] = {{lfd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(p, 2, 1000) < 0 || (p[1].revents & POLLIN)) return;
      if (!(p[0].revents & POLLIN)) continue;
      int fd = ::accept(lfd_, nullptr, nullptr);
      if (fd < 0) continue;
      ++connections_;
      std::lock_guard lk(mu_);
      conns_.emplace_back([this, fd] { serve(fd); });
    }
  }

  // Reads the head and body of one request (bounded in size and time).
  bool read_request(int fd, SSL* ssl, std::string& head, std::string& body) {
    std::string buf;
    auto deadline = Clock::now() + 5s;
    size_t need = std::string::npos;
    while (Clock::now() < deadline && buf.size() < (1 << 20)) {
      size_t end = buf.find("\r\n\r\n");
      if (end != std::string::npos && need == std::string::npos) {
        head = buf.substr(0, end);
        std::string lower = head;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        auto cl = lower.find("\r\ncontent-length:");
        need = end + 4 + (cl == std::string::npos ? 0 : std::strtoul(lower.c_str() + cl + 17, nullptr, 10));
      }
      if (need != std::string::npos && buf.size() >= need) {
        body = buf.substr(head.size() + 4, need - head.size() - 4);
        return true;
      }
      pollfd p{fd, POLLIN, 0};
      if (!(ssl && SSL_pending(ssl)) && ::poll(&p, 1, 100) <= 0) continue;
      char tmp[16384];
      int n = ssl ? SSL_read(ssl, tmp, sizeof tmp) : static_cast<int>(::recv(fd, tmp, sizeof tmp, 0));
      if (n <= 0) return false;
      buf.append(tmp, static_cast<size_t>(n));
    }
    return false;
  }

  void serve(int fd) {
    SSL* ssl = nullptr;
    if (tls_) {
      ssl = SSL_new(tls_);
      SSL_set_fd(ssl, fd);
      timeval tv{5, 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (SSL_accept(ssl) != 1) {
        SSL_free(ssl);
        ::close(fd);
        return;
      }
    }
    std::string head, body;
    if (read_request(fd, ssl, head, body)) {
      {
        std::lock_guard lk(mu_);
        heads_.push_back(head);
      }
      Reply r = handler_(head, body);
      if (r.hang) {
        stopping(10000);
      } else {
        size_t off = 0;
        while (off < r.raw.size()) {
          size_t chunk = std::min<size_t>(r.raw.size() - off, 65536);
          int n = ssl ? SSL_write(ssl, r.raw.data() + off, static_cast<int>(chunk))
                      : static_cast<int>(::send(fd, r.raw.data() + off, chunk, MSG_NOSIGNAL));
          if (n <= 0) break;
          off += static_cast<size_t>(n);
        }
      }
    }
    if (ssl) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
  }

  Handler handler_;
  SSL_CTX* tls_;
  int lfd_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
  std::vector<std::string> heads_;
  std::atomic<int> connections_{0};
  std::atomic<bool> stopped_{false};
};

std::string ok(const std::string& body, const std::string& extra_headers = "") {
  return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n" + extra_headers + "\r\n" + body;
}

class HttpClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    client_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);  // the client's handles close
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle was left open";
  }

  HttpClient& client(HttpClient::Options o = direct()) {
    client_ = std::make_unique<HttpClient>(&loop_, std::move(o));
    return *client_;
  }
  static HttpClient::Options direct() {
    HttpClient::Options o;
    o.proxy = "direct";  // never the machine's proxy settings
    return o;
  }

  // Runs the loop until `done` or `max` has passed; returns whether `done` came true.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds max = 10s) {
    uv_timer_t guard;
    uv_timer_init(&loop_, &guard);
    uv_timer_start(&guard, [](uv_timer_t*) {}, 10, 10);
    auto end = Clock::now() + max;
    while (!done() && Clock::now() < end) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  // One request, run to its answer.
  HttpClient::Response fetch(HttpClient::Request req) {
    std::optional<HttpClient::Response> got;
    client_->start(std::move(req), [&](HttpClient::Response r) { got = std::move(r); });
    EXPECT_FALSE(got) << "callback ran inside start()";
    EXPECT_TRUE(run_until([&] { return got.has_value(); }, 20s));
    return got.value_or(HttpClient::Response{});
  }

  uv_loop_t loop_{};
  std::unique_ptr<HttpClient> client_;
};

TEST_F(HttpClientTest, GetReturnsStatusHeadersAndBody) {
  TestServer srv([](const std::string&, const std::string&) { return Reply{ok("hello", "X-Answer: 42\r\n")}; });
  client();
  HttpClient::Request req;
  req.url = srv.url("/v1/status?code=IM-1");
  req.headers = {{"X-Node", "mx1"}, {"Accept", "application/json"}};
  auto r = fetch(req);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(r.header("x-answer"), "42");
  EXPECT_EQ(r.header("Content-Type"), "text/plain");
  auto heads = srv.heads();
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads[0].rfind("GET /v1/status?code=IM-1 HTTP/1.1\r\n", 0), 0u) << heads[0];
  EXPECT_NE(heads[0].find("\r\nX-Node: mx1"), std::string::npos);
  EXPECT_NE(heads[0].find("\r\nUser-Agent: Postern"), std::string::npos);
}

TEST_F(HttpClientTest, PostSendsTheBody) {
  std::string seen;
  TestServer srv([&](const std::string&, const std::string& body) {
    seen = body;
    return Reply{ok("got " + std::to_string(body.size()))};
  });
  client();
  HttpClient::Request req;
  req.method = "POST";
  req.url = srv.url("/activate");
  req.headers = {{"Content-Type", "application/json"}};
  req.body = std::string(100000, 'b') + "{\"code\":\"x\"}";
  auto r = fetch(req);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, "got " + std::to_string(req.body.size()));
  EXPECT_EQ(seen, req.body);
  auto head = srv.heads().at(0);
  EXPECT_EQ(head.rfind("POST /activate HTTP/1.1", 0), 0u);
  EXPECT_EQ(head.find("Expect:"), std::string::npos) << "no 100-continue round trip";
}

TEST_F(HttpClientTest, NotFoundIsAnAnswerNotAnError) {
  TestServer srv([](const std::string&, const std::string&) {
    return Reply{"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nno such x"};
  });
  client();
  HttpClient::Request req;
  req.url = srv.url("/missing");
  auto r = fetch(req);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "no such x");
}

TEST_F(HttpClientTest, TimeoutEndsTheRequest) {
  TestServer srv([](const std::string&, const std::string&) { return Reply{"", true}; });
  client();
  HttpClient::Request req;
  req.url = srv.url("/slow");
  req.timeout = 300ms;
  auto t0 = Clock::now();
  auto r = fetch(req);
  auto took = Clock::now() - t0;
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error.rfind("timed out after 300 ms", 0), 0u) << r.error;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 5s);
  EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(HttpClientTest, ResponseTooLargeIsRefused) {
  std::string big(2 << 20, 'x');
  TestServer announced([&](const std::string&, const std::string&) { return Reply{ok(big)}; });
  // No Content-Length: the bound is kept while the body streams in.
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  for (int i = 0; i < 64; ++i) chunked += "8000\r\n" + std::string(0x8000, 'y') + "\r\n";
  chunked += "0\r\n\r\n";
  TestServer streamed([&](const std::string&, const std::string&) { return Reply{chunked}; });
  client();
  for (TestServer* s : {&announced, &streamed}) {
    HttpClient::Request req;
    req.url = s->url("/bundle");
    req.max_response_size = 1 << 20;
    auto r = fetch(req);
    EXPECT_EQ(r.error, "response larger than 1048576 bytes");
    EXPECT_EQ(r.status, 0);
    EXPECT_TRUE(r.body.empty());
  }
  HttpClient::Request fits;
  fits.url = announced.url("/bundle");
  fits.max_response_size = 2 << 20;
  auto r = fetch(fits);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body.size(), big.size());
}

TEST_F(HttpClientTest, HugeHeadersAreRefused) {
  std::string headers;
  for (int i = 0; i < 2000; ++i) headers += "X-Filler-" + std::to_string(i) + ": " + std::string(40, 'h') + "\r\n";
  TestServer srv([&](const std::string&, const std::string&) { return Reply{ok("x", headers)}; });
  client();
  HttpClient::Request req;
  req.url = srv.url();
  auto r = fetch(req);
  EXPECT_EQ(r.error.rfind("response headers larger than", 0), 0u) << r.error;
}

TEST_F(HttpClientTest, ConnectionRefused) {
  uint16_t port;
  {
    TestServer gone([](const std::string&, const std::string&) { return Reply{}; });
    port = gone.port();
  }  // stopped and closed: nothing listens there now
  client();
  HttpClient::Request req;
  req.url = "http://127.0.0.1:" + std::to_string(port) + "/";
  auto r = fetch(req);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error.rfind("cannot connect: ", 0), 0u) << r.error;
}

TEST_F(HttpClientTest, ManyConcurrentRequests) {
  TestServer srv([](const std::string& head, const std::string&) {
    std::string path = head.substr(4, head.find(' ', 4) - 4);
    std::this_thread::sleep_for(20ms);  // overlap them
    return Reply{ok("answer for " + path)};
  });
  HttpClient::Options o = direct();
  o.max_connections = 8;
  client(o);
  constexpr int kN = 100;
  std::map<int, HttpClient::Response> got;
  for (int i = 0; i < kN; ++i) {
    HttpClient::Request req;
    req.url = srv.url("/r" + std::to_string(i));
    client_->start(req, [&got, i](HttpClient::Response r) { got[i] = std::move(r); });
  }
  EXPECT_EQ(client_->in_flight(), static_cast<size_t>(kN));
  ASSERT_TRUE(run_until([&] { return got.size() == kN; }, 30s)) << got.size();
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(got[i].error, "") << i;
    EXPECT_EQ(got[i].body, "answer for /r" + std::to_string(i));
  }
  EXPECT_EQ(srv.connections(), kN);
  EXPECT_EQ(client_->in_flight(), 0u);
}

TEST_F(HttpClientTest, BadRequestsFailOnTheLoopNotInStart) {
  client();
  struct Case {
    HttpClient::Request req;
    std::string want;
  } cases[] = {
      {{.url = "ftp://127.0.0.1/x"}, "unsupported protocol"},
      {{.url = "http://[::1"}, "bad URL"},
      {{.url = ""}, "no URL"},
      {{.method = "TRACE", .url = "http://127.0.0.1:9/"}, "unsupported method"},
      {{.url = "http://127.0.0.1:9/", .headers = {{"X-A", "1\r\nX-Injected: 2"}}}, "bad value for header X-A"},
      {{.url = "http://127.0.0.1:9/", .headers = {{"Bad Name", "1"}}}, "bad header name"},
      {{.url = "http://127.0.0.1:9/a b"}, "bad URL"},
  };
  for (auto& c : cases) {
    auto r = fetch(c.req);
    EXPECT_EQ(r.error.rfind(c.want, 0), 0u) << c.req.url << ": " << r.error;
  }
}

TEST_F(HttpClientTest, CancelAndDestroyNeverCallBack) {
  TestServer srv([](const std::string&, const std::string&) { return Reply{"", true}; });
  client();
  int calls = 0;
  HttpClient::Request req;
  req.url = srv.url("/hang");
  uint64_t a = client_->start(req, [&](HttpClient::Response) { ++calls; });
  uint64_t bad = client_->start({.url = ""}, [&](HttpClient::Response) { ++calls; });
  EXPECT_TRUE(client_->cancel(bad));  // failed at once, its callback not run yet: dropped
  client_->start(req, [&](HttpClient::Response) { ++calls; });
  run_until([&] { return srv.connections() == 2; }, 5s);
  EXPECT_TRUE(client_->cancel(a));
  EXPECT_FALSE(client_->cancel(a));
  EXPECT_FALSE(client_->cancel(bad));
  EXPECT_EQ(client_->in_flight(), 1u);
  client_.reset();  // with one request still in flight
  run_until([] { return false; }, 200ms);
  EXPECT_EQ(calls, 0);
}

// --- TLS ---------------------------------------------------------------------------------------

struct TlsFixture {
  testcerts::TestCert ca = testcerts::make_cert({.cn = "Test Update CA", .ca = true});
  std::string dir = testcerts::make_temp_dir();
  std::string ca_file = testcerts::write_temp_file(dir, "ca.pem", ca.cert_pem);
  std::shared_ptr<tls::ContextSet> server(const std::string& san) {
    auto leaf = testcerts::make_cert({.cn = "updates.test", .issuer = &ca, .san = san});
    tls::Identity id;
    id.cert_pem = leaf.cert_pem;
    id.key_pem = leaf.key_pem;
    id.source = "test";
    tls::ContextOptions o;
    auto br = tls::build_context({id}, o);
    EXPECT_TRUE(br.set) << br.error;
    return br.set;
  }
  ~TlsFixture() { std::filesystem::remove_all(dir); }
};

TEST_F(HttpClientTest, HttpsVerifiesAgainstAPinnedCaOrTheSystemStore) {
  TlsFixture f;
  auto good = f.server("IP:127.0.0.1");
  TestServer srv([](const std::string&, const std::string&) { return Reply{ok("signed")}; }, good->ctx);
  client();
  HttpClient::Request req;
  req.url = srv.url("/bundle");
  req.ca_file = f.ca_file;
  auto r = fetch(req);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, "signed");
  req.ca_file = "";  // the system store does not know the test CA
  r = fetch(req);
  EXPECT_EQ(r.error.rfind("TLS verification failed: ", 0), 0u) << r.error;
  // The CA from the client's options works the same way.
  auto o = direct();
  o.ca_file = f.ca_file;
  client(o);
  r = fetch(req);
  EXPECT_EQ(r.error, "");
  // The right CA but a certificate for another name.
  auto wrong = f.server("DNS:other.test");
  TestServer other([](const std::string&, const std::string&) { return Reply{ok("x")}; }, wrong->ctx);
  req.url = other.url("/");
  r = fetch(req);
  EXPECT_EQ(r.error.rfind("TLS verification failed: ", 0), 0u) << r.error;
  EXPECT_NE(r.error.find("127.0.0.1"), std::string::npos) << r.error;
}

// --- proxies -----------------------------------------------------------------------------------

class EnvGuard {
 public:
  explicit EnvGuard(std::vector<std::string> names) : names_(std::move(names)) {
    for (auto& n : names_) {
      const char* v = std::getenv(n.c_str());
      saved_.emplace_back(v ? std::optional<std::string>(v) : std::nullopt);
      unsetenv(n.c_str());
    }
  }
  ~EnvGuard() {
    for (size_t i = 0; i < names_.size(); ++i) {
      if (saved_[i]) setenv(names_[i].c_str(), saved_[i]->c_str(), 1);
      else unsetenv(names_[i].c_str());
    }
  }

 private:
  std::vector<std::string> names_;
  std::vector<std::optional<std::string>> saved_;
};

TEST_F(HttpClientTest, ProxyFromConfigOrEnvironment) {
  EnvGuard env({"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"});
  TestServer proxy([](const std::string&, const std::string&) { return Reply{ok("via proxy")}; });
  HttpClient::Request req;
  req.url = "http://licensing.invalid/v1/check";  // never resolved here: the proxy does that
  // An explicit proxy.
  auto o = direct();
  o.proxy = "http://127.0.0.1:" + std::to_string(proxy.port());
  client(o);
  auto r = fetch(req);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.body, "via proxy");
  ASSERT_EQ(proxy.heads().size(), 1u);
  EXPECT_EQ(proxy.heads()[0].rfind("GET http://licensing.invalid/v1/check HTTP/1.1\r\n", 0), 0u) << proxy.heads()[0];
  // The environment's, as curl(1) reads it, when none is configured.
  setenv("http_proxy", o.proxy.c_str(), 1);
  o.proxy = "";
  client(o);
  r = fetch(req);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(proxy.heads().size(), 2u);
  // "direct": the environment is ignored.
  TestServer origin([](const std::string&, const std::string&) { return Reply{ok("direct")}; });
  client(direct());
  req.url = origin.url("/x");
  r = fetch(req);
  EXPECT_EQ(r.body, "direct");
  EXPECT_EQ(proxy.heads().size(), 2u);
  EXPECT_EQ(origin.heads().at(0).rfind("GET /x HTTP/1.1", 0), 0u);
}

TEST_F(HttpClientTest, OptionsFromConfig) {
  Config cfg;
  cfg.http_client.proxy = "http://proxy.example:3128";
  cfg.http_client.ca_file = "/etc/postern/ca.pem";
  auto o = HttpClient::options_from(cfg);
  EXPECT_EQ(o.proxy, "http://proxy.example:3128");
  EXPECT_EQ(o.ca_file, "/etc/postern/ca.pem");
  EXPECT_EQ(o.user_agent.rfind("Postern/", 0), 0u);
}

}  // namespace
}  // namespace postern::http
