#include "tls/acceptor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace postern::tls {

Acceptor::Acceptor(uv_loop_t* loop, std::string name, OnAccept on_accept)
    : loop_(loop), name_(std::move(name)), on_accept_(std::move(on_accept)) {}

Acceptor::~Acceptor() { close(); }

void Acceptor::listen(const std::string& host, uint16_t port, bool reuse_port, int backlog) {
  sockaddr_storage ss{};
  socklen_t len;
  int family;
  bool ok;
  if (host.find(':') != std::string::npos) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    ok = inet_pton(AF_INET6, host.c_str(), &s6->sin6_addr) == 1;
    len = sizeof *s6;
    family = AF_INET6;
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    ok = inet_pton(AF_INET, host.c_str(), &s4->sin_addr) == 1;
    len = sizeof *s4;
    family = AF_INET;
  }
  std::string where = host + ":" + std::to_string(port);
  if (!ok) throw std::runtime_error("cannot listen on " + where + ": not a numeric address");
  // Debian's libuv 1.44 has no UV_TCP_REUSEPORT: the socket is made here.
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      (reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
      (family == AF_INET6 && ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, backlog) != 0) {
    std::string err = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot listen on " + where + ": " + err);
  }
  fd_ = fd;
  poll_ = new uv_poll_t;
  retry_ = new uv_timer_t;
  uv_poll_init(loop_, poll_, fd_);
  uv_timer_init(loop_, retry_);
  poll_->data = this;
  retry_->data = this;
  set_enabled(true);
}

uint16_t Acceptor::port() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd_ < 0 || getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  return ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                       : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

void Acceptor::set_enabled(bool on) {
  enabled_ = on;
  if (!poll_) return;
  if (on && !paused_) {
    uv_poll_start(poll_, UV_READABLE, [](uv_poll_t* p, int status, int) {
      auto* self = static_cast<Acceptor*>(p->data);
      if (status < 0) {
        spdlog::warn("{} listener poll error: {}", self->name_, uv_strerror(status));
        return;
      }
      self->accept_some();
    });
  } else {
    uv_poll_stop(poll_);
  }
}

void Acceptor::accept_some() {
  for (int i = 0; i < 64 && enabled_ && !paused_ && fd_ >= 0; ++i) {  // then let the loop run others
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      backoff_ = std::chrono::milliseconds(0);
      on_accept_(fd);
      continue;
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return;
    if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) return pause(e);
    spdlog::warn("{} accept error: {}", name_, std::strerror(e));
    return;
  }
}

void Acceptor::pause(int err) {
  using namespace std::chrono;
  paused_ = true;
  ++pauses_;
  if (shared_pauses_) shared_pauses_->fetch_add(1);
  uv_poll_stop(poll_);
  backoff_ = std::clamp<milliseconds>(backoff_ * 2, milliseconds(50), milliseconds(1000));
  ++since_log_;
  auto now = steady_clock::now();
  if (now - last_log_ >= seconds(10)) {
    spdlog::warn("{} accept paused for {} ms: {} ({} pauses since the last report)", name_, backoff_.count(),
                 std::strerror(err), since_log_);
    last_log_ = now;
    since_log_ = 0;
  }
  uv_timer_start(retry_, [](uv_timer_t* t) {
    auto* self = static_cast<Acceptor*>(t->data);
    self->paused_ = false;
    self->set_enabled(self->enabled_);
  }, static_cast<uint64_t>(backoff_.count()), 0);
}

void Acceptor::close(std::function<void()> done) {
  if (!poll_) {
    if (done) done();
    return;
  }
  uv_poll_stop(poll_);
  uv_timer_stop(retry_);
  struct Closing {
    int fd;
    int left = 2;
    std::function<void()> done;
  };
  auto* c = new Closing{fd_, 2, std::move(done)};
  auto cb = [](uv_handle_t* h) {
    auto* cl = static_cast<Closing*>(h->data);
    if (h->type == UV_POLL) delete reinterpret_cast<uv_poll_t*>(h);
    else delete reinterpret_cast<uv_timer_t*>(h);
    if (--cl->left > 0) return;
    ::close(cl->fd);
    if (cl->done) cl->done();
    delete cl;
  };
  poll_->data = c;
  retry_->data = c;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), cb);
  uv_close(reinterpret_cast<uv_handle_t*>(retry_), cb);
  poll_ = nullptr;
  retry_ = nullptr;
  fd_ = -1;
}

}  // namespace postern::tls
