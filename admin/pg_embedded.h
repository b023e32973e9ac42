// pg_embedded.h — the private PostgreSQL cluster posternd runs when [database] url is empty.
//
// One cluster per state directory, listening on a unix socket only (directory mode 0700), run as
// an unprivileged user: posternd's own user, or the "postgres" system user when posternd is root
// (PostgreSQL refuses to run as root). Initialised on first start, restarted if it dies, stopped
// when posternd stops.
//
// Where it lives: <state_dir>/pgdata (socket in <state_dir>/pgsock) when the cluster user can
// reach the state directory. When it cannot (posternd is root and a parent is 0700, e.g. a clone
// in /root), the cluster goes to /var/lib/postern-pg/<id>/{data,sock}, owned by postgres, 0700,
// and <state_dir>/pgdata is a symlink to it: the record that follows the state directory when it
// moves. Nothing outside the directories posternd creates has its permissions changed.
//
// Security-sensitive: the cluster trusts every local connection on its socket (-A trust), so the
// socket directory is 0700 and owned by the cluster user. A leftover postmaster is signalled only
// after checking it is this cluster's (binary, user, working directory = the data directory)
// while holding the cluster's lock, so a stale postmaster.pid never kills an unrelated process
// and one posternd never stops the cluster another posternd supervises.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <string>
#include <vector>

namespace postern::admin {

class EmbeddedPostgres {
 public:
  // The directory under which clusters go when the state directory is out of the cluster user's reach.
  static constexpr const char* kExternalRoot = "/var/lib/postern-pg";

  EmbeddedPostgres(uv_loop_t* loop, std::string state_dir);
  ~EmbeddedPostgres();
  // Finds the binaries, places, locks and creates the cluster if needed (blocking: start-up
  // only). Returns "" or one line saying what stands in the way and how to fix it.
  std::string prepare();
  void start();
  // Fast shutdown; the loop keeps running until the server has exited.
  void stop();
  std::string conninfo() const;
  const std::string& data_dir() const { return data_dir_; }

 private:
  std::string find_server();
  std::string pick_user();
  std::string blocked_dir(const std::string& path) const;
  std::string locate();
  std::string locate_in_place(const std::string& blocked);
  std::string locate_external(const std::string& why);
  std::string use_record(const std::string& link);
  std::string make_dirs();
  std::string check_owner();
  std::string lock();
  std::string initdb();
  void stop_stale();
  bool is_our_postmaster(pid_t pid, std::string& what) const;
  void spawn();
  std::string log_tail(off_t from) const;

  uv_loop_t* loop_;
  std::string state_dir_, data_dir_, sock_dir_, bin_dir_, log_path_;
  std::string base_;  // the external cluster's directory, "" when in place
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::vector<gid_t> groups_;
  std::string user_;
  bool as_other_user_ = false;
  int lock_fd_ = -1;
  off_t log_mark_ = 0;  // postgres.log size when the server was last spawned
  uv_process_t* proc_ = nullptr;
  uv_timer_t* restart_ = nullptr;
  bool stopping_ = false;
  unsigned failures_ = 0;
};

}  // namespace postern::admin
