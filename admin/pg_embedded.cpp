#include "admin/pg_embedded.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace postern::admin {
namespace fs = std::filesystem;

EmbeddedPostgres::EmbeddedPostgres(uv_loop_t* loop, std::string state_dir)
    : loop_(loop), state_dir_(fs::absolute(state_dir).lexically_normal().string()) {
  data_dir_ = state_dir_ + "/pgdata";
  sock_dir_ = state_dir_ + "/pgsock";
  log_path_ = state_dir_ + "/log/postgres.log";
}

std::string EmbeddedPostgres::conninfo() const {
  return "host=" + sock_dir_ + " port=5432 dbname=postgres user=postern connect_timeout=5";
}

std::string EmbeddedPostgres::prepare() {
  // The newest installed server.
  std::string best;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    if (fs::exists(e.path() / "bin" / "postgres") && e.path().string() > best) best = e.path().string();
  }
  if (best.empty()) return "no PostgreSQL server found under /usr/lib/postgresql (install the postgresql package)";
  bin_dir_ = best + "/bin";
  if (geteuid() == 0) {
    passwd* pw = getpwnam("postgres");
    if (!pw) return "running as root and there is no 'postgres' user to run the private cluster as";
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    as_other_user_ = true;
    // The cluster user must be able to reach its directories inside the state directory.
    ::chmod(state_dir_.c_str(), 0711);
  }
  fs::create_directories(state_dir_ + "/log");
  for (auto& d : {data_dir_, sock_dir_}) {
    fs::create_directories(d);
    ::chmod(d.c_str(), 0700);
    if (as_other_user_ && ::chown(d.c_str(), uid_, gid_) != 0) return "cannot chown " + d;
  }
  stop_stale();
  if (fs::exists(data_dir_ + "/PG_VERSION")) return "";
  spdlog::info("database: creating the private cluster in {}", data_dir_);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (as_other_user_ && (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0)) _exit(126);
    std::string initdb = bin_dir_ + "/initdb";
    execl(initdb.c_str(), "initdb", "-D", data_dir_.c_str(), "-U", "postern", "-A", "trust", "-E", "UTF8",
          "--locale=C", "--no-instructions", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "initdb failed (exit " + std::to_string(WEXITSTATUS(status)) + "); see " + log_path_;
  return "";
}

// A postmaster left by a posternd that was killed still holds the data directory: stop it.
void EmbeddedPostgres::stop_stale() {
  std::ifstream in(data_dir_ + "/postmaster.pid");
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return;
  if (::kill(pid, 0) != 0) return;
  spdlog::warn("database: stopping a leftover private PostgreSQL (pid {})", pid);
  ::kill(pid, SIGQUIT);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
}

void EmbeddedPostgres::start() {
  restart_ = new uv_timer_t;
  uv_timer_init(loop_, restart_);
  restart_->data = this;
  spawn();
}

void EmbeddedPostgres::spawn() {
  std::string exe = bin_dir_ + "/postgres";
  std::vector<std::string> args = {exe, "-D", data_dir_, "-k", sock_dir_, "-c", "listen_addresses=",
                                   "-c", "unix_socket_permissions=0700", "-c", "max_connections=50",
                                   "-c", "shared_buffers=16MB"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int logfd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = logfd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
  stdio[1].data.fd = logfd;
  stdio[2] = stdio[1];
  uv_process_options_t opt{};
  opt.file = exe.c_str();
  opt.args = argv.data();
  opt.stdio = stdio;
  opt.stdio_count = 3;
  if (as_other_user_) {
    opt.flags = UV_PROCESS_SETUID | UV_PROCESS_SETGID;
    opt.uid = uid_;
    opt.gid = gid_;
  }
  opt.exit_cb = [](uv_process_t* p, int64_t status, int sig) {
    auto* self = static_cast<EmbeddedPostgres*>(p->data);
    uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    self->proc_ = nullptr;
    if (self->stopping_) {
      spdlog::info("database: private PostgreSQL stopped");
      if (self->restart_) {
        uv_close(reinterpret_cast<uv_handle_t*>(self->restart_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        self->restart_ = nullptr;
      }
      return;
    }
    ++self->failures_;
    uint64_t delay = std::min<uint64_t>(1000ull << std::min(self->failures_, 4u), 10000);
    spdlog::error("database: private PostgreSQL exited (status {}, signal {}); restarting in {} ms; see {}", status,
                  sig, delay, self->log_path_);
    uv_timer_start(self->restart_, [](uv_timer_t* t) { static_cast<EmbeddedPostgres*>(t->data)->spawn(); }, delay, 0);
  };
  proc_ = new uv_process_t;
  proc_->data = this;
  int r = uv_spawn(loop_, proc_, &opt);
  if (logfd >= 0) ::close(logfd);
  if (r != 0) {
    spdlog::error("database: cannot start {}: {}", exe, uv_strerror(r));
    uv_close(reinterpret_cast<uv_handle_t*>(proc_), [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    proc_ = nullptr;
    uv_timer_start(restart_, [](uv_timer_t* t) { static_cast<EmbeddedPostgres*>(t->data)->spawn(); }, 5000, 0);
    return;
  }
  spdlog::info("database: private PostgreSQL started pid={} socket={}", proc_->pid, sock_dir_);
  if (failures_ > 0) failures_ = std::max(0u, failures_ - 1);
}

void EmbeddedPostgres::stop() {
  stopping_ = true;
  if (proc_) {
    uv_process_kill(proc_, SIGINT);  // fast shutdown
  } else if (restart_) {
    uv_close(reinterpret_cast<uv_handle_t*>(restart_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    restart_ = nullptr;
  }
}

}  // namespace postern::admin
