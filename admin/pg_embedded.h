// pg_embedded.h — the private PostgreSQL cluster posternd runs when [database] url is empty.
//
// Under <state_dir>/pgdata, listening on a unix socket only (in <state_dir>/pgsock, mode 0700),
// run as an unprivileged user (the "postgres" system user when posternd is root; initdb refuses
// root), initialised on first start, restarted if it dies, stopped when posternd stops. A cluster
// left running by a posternd that was killed is stopped and started afresh.
#pragma once

#include <uv.h>

#include <string>

namespace postern::admin {

class EmbeddedPostgres {
 public:
  EmbeddedPostgres(uv_loop_t* loop, std::string state_dir);
  // Finds the binaries, creates the cluster if needed (blocking: start-up only). "" or an error.
  std::string prepare();
  void start();
  // Fast shutdown; the loop keeps running until the server has exited.
  void stop();
  std::string conninfo() const;

 private:
  void spawn();
  void stop_stale();

  uv_loop_t* loop_;
  std::string state_dir_, data_dir_, sock_dir_, bin_dir_, log_path_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  bool as_other_user_ = false;
  uv_process_t* proc_ = nullptr;
  uv_timer_t* restart_ = nullptr;
  bool stopping_ = false;
  unsigned failures_ = 0;
};

}  // namespace postern::admin
