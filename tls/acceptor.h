// acceptor.h — a listening socket on a loop that never spins. Accepts with accept4() from a
// uv_poll_t (not uv_listen), so that when descriptors run out (EMFILE, ENFILE) it stops polling,
// lets the clients wait in the backlog, and tries again after a backoff of 50 ms doubling to 1 s;
// the log says so at most once every 10 s. Used by every listener: the SMTP workers (one
// SO_REUSEPORT socket per loop) and the HTTPS servers.
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace postern::tls {

class Acceptor {
 public:
  using OnAccept = std::function<void(int fd)>;
  // name: for logs ("smtp worker=0", "admin api"). on_accept owns the descriptor it is given.
  Acceptor(uv_loop_t* loop, std::string name, OnAccept on_accept);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Binds and listens (numeric IPv4 or IPv6 host); throws std::runtime_error naming the address.
  void listen(const std::string& host, uint16_t port, bool reuse_port, int backlog = 1024);
  // Stops accepting for good and closes the socket (the object may be destroyed after `done`).
  void close(std::function<void()> done = nullptr);
  // Pauses/resumes accepting (e.g. while draining).
  void set_enabled(bool on);
  uint64_t pauses() const { return pauses_; }
  uint16_t port() const;  // the bound port (listen() with port 0 picks one)
  // Also counts each pause in *c (e.g. a metrics counter shared by several acceptors).
  void count_pauses_in(std::atomic<uint64_t>* c) { shared_pauses_ = c; }

 private:
  void accept_some();
  void pause(int err);

  uv_loop_t* loop_;
  std::string name_;
  OnAccept on_accept_;
  int fd_ = -1;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* retry_ = nullptr;
  bool enabled_ = true, paused_ = false;
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point last_log_{};
  uint64_t since_log_ = 0;
  uint64_t pauses_ = 0;
  std::atomic<uint64_t>* shared_pauses_ = nullptr;
};

}  // namespace postern::tls
