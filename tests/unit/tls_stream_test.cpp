// Tests of the one transport over socketpairs on a private loop: plaintext both ways, STARTTLS
// both ways, write high-water and read backpressure, the write-progress deadline, the write
// queue bound and the close deadline against a peer that never reads.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include <cstdio>
#include <filesystem>

#include "tls/context_provider.h"
#include "tls/tls_stream.h"

using namespace postern::tls;

namespace {

struct Recorder : StreamHandler {
  std::string data;
  bool tls_ready = false, closed = false, ended = false, writable = false;
  StreamEnd why{};
  void on_stream_data(std::string_view b) override { data.append(b); }
  void on_stream_tls_ready() override { tls_ready = true; }
  void on_stream_writable() override { writable = true; }
  void on_stream_end(StreamEnd w, const std::string&) override {
    ended = true;
    why = w;
  }
  void on_stream_closed() override { closed = true; }
};

struct Loop {
  uv_loop_t loop{};
  Loop() {
    signal(SIGPIPE, SIG_IGN);  // as posternd does: a peer that left is an error, not a signal
    uv_loop_init(&loop);
  }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);  // let every handle close
    uv_loop_close(&loop);
  }
  // Runs until cond() or about `ms` milliseconds of loop time.
  template <typename F>
  bool run_until(F cond, int ms = 3000) {
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    bool fired = false;
    t.data = &fired;
    uv_timer_start(&t, [](uv_timer_t* h) { *static_cast<bool*>(h->data) = true; }, static_cast<uint64_t>(ms), 0);
    while (!cond() && !fired) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    return cond();
  }
};

std::pair<int, int> pair_of_sockets(int bufsize = 0) {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  if (bufsize > 0)
    for (int fd : sv) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    }
  return {sv[0], sv[1]};
}

std::shared_ptr<const ContextSet> context(bool server) {
  static std::string dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("postern-stream-test-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  std::string crt = dir + "/c.crt", key = dir + "/c.key";
  EXPECT_EQ(ensure_self_signed(crt, key, "stream.test"), "");
  ContextOptions o;
  o.server = server;
  auto r = build_context_files(crt, key, o);
  EXPECT_TRUE(r.set) << r.error;
  return r.set;
}

}  // namespace

TEST(TlsStream, PlainBothWays) {
  Loop l;
  auto [a, b] = pair_of_sockets();
  Recorder ra, rb;
  auto* sa = TlsStream::create(&l.loop, &ra);
  auto* sb = TlsStream::create(&l.loop, &rb);
  ASSERT_EQ(sa->open(a), 0);
  ASSERT_EQ(sb->open(b), 0);
  sa->write("hello ");
  sa->write("world");
  sb->write("back");
  EXPECT_TRUE(l.run_until([&] { return rb.data == "hello world" && ra.data == "back"; }));
  sa->close();
  EXPECT_TRUE(l.run_until([&] { return ra.closed && rb.ended; }));
  EXPECT_EQ(rb.why, StreamEnd::kEof);
  EXPECT_TRUE(l.run_until([&] { return rb.closed; }));  // the peer's end closes it too
}

TEST(TlsStream, StartTlsBothWaysAndHeldOutput) {
  Loop l;
  auto [a, b] = pair_of_sockets();
  Recorder rs, rc;
  auto* server = TlsStream::create(&l.loop, &rs);
  auto* client = TlsStream::create(&l.loop, &rc);
  ASSERT_EQ(server->open(a), 0);
  ASSERT_EQ(client->open(b), 0);
  server->write("220 go ahead\r\n");  // plaintext, before the switch
  ASSERT_TRUE(l.run_until([&] { return rc.data == "220 go ahead\r\n"; }));
  ASSERT_TRUE(server->start_tls(context(true), true));
  ASSERT_TRUE(client->start_tls(context(false), false, "stream.test"));
  client->write("EHLO secret\r\n");  // held until the handshake completes, then encrypted
  EXPECT_TRUE(l.run_until([&] { return rs.tls_ready && rc.tls_ready && rs.data == "EHLO secret\r\n"; }));
  server->write("250 ok\r\n");
  EXPECT_TRUE(l.run_until([&] { return rc.data == "220 go ahead\r\n250 ok\r\n"; }));
  EXPECT_TRUE(client->tls_ready());
  client->close();  // close_notify
  EXPECT_TRUE(l.run_until([&] { return rc.closed && rs.ended; }));
  EXPECT_EQ(rs.why, StreamEnd::kTlsClosed);
  EXPECT_TRUE(l.run_until([&] { return rs.closed; }));
}

TEST(TlsStream, GarbageInsteadOfClientHelloIsATlsError) {
  Loop l;
  auto [a, b] = pair_of_sockets();
  Recorder rs;
  auto* server = TlsStream::create(&l.loop, &rs);
  ASSERT_EQ(server->open(a), 0);
  ASSERT_TRUE(server->start_tls(context(true), true));
  ASSERT_EQ(::write(b, "NOT TLS AT ALL\r\n", 16), 16);
  EXPECT_TRUE(l.run_until([&] { return rs.closed; }));
  EXPECT_EQ(rs.why, StreamEnd::kTlsError);
  ::close(b);
}

TEST(TlsStream, PeerThatNeverReadsStopsReadingThenHitsTheWriteDeadline) {
  Loop l;
  auto [a, b] = pair_of_sockets(4096);
  Recorder r;
  StreamLimits lim;
  lim.write_high_water = 64 * 1024;
  lim.write_timeout = std::chrono::milliseconds(300);
  auto* s = TlsStream::create(&l.loop, &r, lim);
  ASSERT_EQ(s->open(a), 0);
  std::string chunk(16 * 1024, 'x');
  for (int i = 0; i < 16; ++i) s->write(chunk);  // 256 KiB to a peer that reads nothing
  EXPECT_FALSE(s->writable());
  // Input waiting from the peer is not read while our output is stuck.
  ASSERT_EQ(::write(b, "QUIT\r\n", 6), 6);
  l.run_until([] { return false; }, 100);
  EXPECT_EQ(r.data, "");
  EXPECT_TRUE(l.run_until([&] { return r.closed; }, 3000));
  EXPECT_EQ(r.why, StreamEnd::kWriteTimeout);
  ::close(b);
}

TEST(TlsStream, WritableAgainAfterThePeerReads) {
  Loop l;
  auto [a, b] = pair_of_sockets(4096);
  Recorder r;
  StreamLimits lim;
  lim.write_high_water = 32 * 1024;
  auto* s = TlsStream::create(&l.loop, &r, lim);
  ASSERT_EQ(s->open(a), 0);
  s->write(std::string(64 * 1024, 'y'));
  EXPECT_FALSE(s->writable());
  char buf[65536];
  size_t got = 0;
  l.run_until([&] {
    ssize_t n = ::read(b, buf, sizeof buf);
    if (n > 0) got += static_cast<size_t>(n);
    return r.writable;
  });
  EXPECT_TRUE(r.writable);
  EXPECT_TRUE(s->writable());
  s->abort();
  EXPECT_TRUE(l.run_until([&] { return r.closed; }));
  ::close(b);
}

TEST(TlsStream, WriteQueueIsBounded) {
  Loop l;
  auto [a, b] = pair_of_sockets(4096);
  Recorder r;
  StreamLimits lim;
  lim.max_write_queue = 128 * 1024;
  auto* s = TlsStream::create(&l.loop, &r, lim);
  ASSERT_EQ(s->open(a), 0);
  bool ok = true;
  for (int i = 0; i < 64 && ok; ++i) ok = s->write(std::string(16 * 1024, 'z'));
  EXPECT_FALSE(ok);
  EXPECT_TRUE(r.ended);
  EXPECT_EQ(r.why, StreamEnd::kWriteQueueFull);
  EXPECT_TRUE(l.run_until([&] { return r.closed; }));
  ::close(b);
}

TEST(TlsStream, CloseHasADeadlineEvenIfThePeerNeverReads) {
  Loop l;
  auto [a, b] = pair_of_sockets(4096);
  Recorder r;
  StreamLimits lim;
  lim.close_timeout = std::chrono::milliseconds(200);
  lim.write_timeout = std::chrono::minutes(10);
  auto* s = TlsStream::create(&l.loop, &r, lim);
  ASSERT_EQ(s->open(a), 0);
  s->write(std::string(512 * 1024, 'q'));
  s->write("421 bye\r\n");
  s->close();
  EXPECT_TRUE(l.run_until([&] { return r.closed; }, 2000));
  ::close(b);
}

TEST(TlsStream, ReadingPausesOnRequest) {
  Loop l;
  auto [a, b] = pair_of_sockets();
  Recorder r;
  auto* s = TlsStream::create(&l.loop, &r);
  ASSERT_EQ(s->open(a), 0);
  s->set_reading(false);
  ASSERT_EQ(::write(b, "later", 5), 5);
  l.run_until([] { return false; }, 100);
  EXPECT_EQ(r.data, "");
  s->set_reading(true);
  EXPECT_TRUE(l.run_until([&] { return r.data == "later"; }));
  s->abort();
  EXPECT_TRUE(l.run_until([&] { return r.closed; }));
  ::close(b);
}

TEST(TlsStream, DetachedStreamFinishesAlone) {
  Loop l;
  auto [a, b] = pair_of_sockets();
  {
    Recorder r;
    auto* s = TlsStream::create(&l.loop, &r);
    ASSERT_EQ(s->open(a), 0);
    s->write("QUIT\r\n");
    s->detach();
    s->close();
  }  // the handler is gone; the stream must not call it
  char buf[16];
  bool got = false;
  EXPECT_TRUE(l.run_until([&] { return got = got || ::read(b, buf, sizeof buf) == 6; }));
  ::close(b);
}

#include <dirent.h>
#include <netinet/in.h>
#include <sys/resource.h>

#include "tls/acceptor.h"

namespace {

int open_fds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return n - 3;  // ".", ".." and the directory itself
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace

// Out of descriptors, the listener pauses instead of spinning, and accepts again once there are.
TEST(Acceptor, PausesOnEmfileAndRecovers) {
  Loop l;
  std::vector<int> accepted;
  postern::tls::Acceptor acc(&l.loop, "test", [&](int fd) { accepted.push_back(fd); });
  acc.listen("127.0.0.1", 0, false);
  ASSERT_NE(acc.port(), 0);
  std::vector<int> clients;
  for (int i = 0; i < 8; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(acc.port());
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    clients.push_back(c);
  }
  rlimit old{};
  getrlimit(RLIMIT_NOFILE, &old);
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(open_fds() + 2);  // room for two more descriptors
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  double c0 = cpu_seconds();
  l.run_until([] { return false; }, 400);
  double busy = cpu_seconds() - c0;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  EXPECT_LE(accepted.size(), 3u);  // give or take the descriptor counting itself
  EXPECT_LT(accepted.size(), 8u);
  EXPECT_GE(acc.pauses(), 1u);
  EXPECT_LT(acc.pauses(), 20u);  // 50 ms doubling: a handful of retries in 400 ms, not a spin
  EXPECT_LT(busy, 0.2);
  EXPECT_TRUE(l.run_until([&] { return accepted.size() == 8; }, 3000));  // the retry timer resumes
  for (int fd : accepted) ::close(fd);
  for (int fd : clients) ::close(fd);
  acc.close();
}
