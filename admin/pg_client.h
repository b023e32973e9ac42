// pg_client.h — PostgreSQL through libpq, asynchronous on a libuv loop (the control thread's).
//
// One connection; queries run one at a time in order; results come back through callbacks on
// the loop. While the database is unreachable every query fails at once with "database
// unavailable" (the admin API answers 503, nothing hangs), and the client reconnects on its own.
// On every (re)connection it applies the numbered migrations and LISTENs on the given channels.
#pragma once

#include <libpq-fe.h>
#include <uv.h>

#include <deque>
#include <functional>
#include <string>
#include <vector>

namespace postern::admin {

struct PgResult {
  bool ok = false;
  std::string error;
  std::vector<std::vector<std::string>> rows;
};

class PgClient {
 public:
  using Callback = std::function<void(PgResult)>;
  PgClient(uv_loop_t* loop, std::string conninfo, std::vector<std::string> listen_channels);
  ~PgClient();
  void start();
  void stop();  // closes the connection and the handles
  // Runs sql with $1.. params. cb runs on the loop, always exactly once.
  void query(std::string sql, std::vector<std::string> params, Callback cb);
  bool up() const { return state_ == State::kReady || state_ == State::kBusy; }
  const std::string& last_error() const { return last_error_; }

  std::function<void(bool up)> on_state;  // connection up (migrated) / down
  std::function<void(const std::string& channel, const std::string& payload)> on_notify;

 private:
  enum class State { kDown, kConnecting, kSetup, kReady, kBusy, kStopped };
  struct Pending {
    std::string sql;
    std::vector<std::string> params;
    Callback cb;
    bool internal = false;
  };
  void connect();
  void on_poll(int status, int events);
  void continue_connect();
  void setup();
  void send_next();
  void read_results();
  void lost(const std::string& why);
  void watch(int events);
  void fail_all(const std::string& why);
  void disconnect();

  uv_loop_t* loop_;
  std::string conninfo_;
  std::vector<std::string> channels_;
  PGconn* conn_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* retry_ = nullptr;
  uv_timer_t* deadline_ = nullptr;
  State state_ = State::kDown;
  std::deque<Pending> queue_;
  Pending current_;
  PgResult acc_;
  std::string last_error_;
  bool announced_up_ = false;
  bool ever_up_ = false;
  unsigned failures_ = 0;
};

// The numbered schema migrations, in order (admin/migrations.cpp).
struct Migration {
  int version;
  const char* sql;
};
const std::vector<Migration>& migrations();

}  // namespace postern::admin
