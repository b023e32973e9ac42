// pg_embedded.cpp — the private PostgreSQL cluster: where it lives, who runs it, initdb, the
// leftover postmaster of a killed posternd, and supervision on the control loop (see the header).
//
// Security-sensitive: fork()ed children change user before they run anything (initdb, the
// reachability probe); a process named by postmaster.pid is signalled only when /proc shows it is
// this cluster's postmaster, through a pidfd so a recycled PID cannot be hit.
#include "admin/pg_embedded.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/log.h"

namespace postern::admin {
namespace fs = std::filesystem;

namespace {

// A unix socket path holds at most 107 bytes; PostgreSQL's is <dir>/.s.PGSQL.5432.
constexpr size_t kMaxSocketDir = 107 - (sizeof("/.s.PGSQL.5432") - 1);

// Stable name for a state directory's external cluster (FNV-1a 64 of its canonical path).
std::string path_id(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string user_name(uid_t uid) {
  passwd* pw = getpwuid(uid);
  return pw ? pw->pw_name : "uid " + std::to_string(uid);
}

// "mode 0700, owner root" for a message.
std::string describe(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return std::string("mode ") + mode + ", owner " + user_name(st.st_uid);
}

bool has_cluster(const std::string& dir) { return ::access((dir + "/PG_VERSION").c_str(), F_OK) == 0; }

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

// Creates dir (mode 0700) unless it exists; "" or why not.
std::string make_dir(const std::string& dir, uid_t uid, gid_t gid, bool chown_it) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return "cannot create " + dir + ": " + std::strerror(errno);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return dir + " is not a directory";
  if (::chmod(dir.c_str(), 0700) != 0) return "cannot chmod " + dir + ": " + std::strerror(errno);
  if (chown_it && ::chown(dir.c_str(), uid, gid) != 0) return "cannot chown " + dir + ": " + std::strerror(errno);
  return "";
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Sends sig through the pidfd and waits up to `wait` for the process to exit.
bool signal_and_wait(int pidfd, int sig, std::chrono::milliseconds wait) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) != 0) return errno == ESRCH;
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(wait.count())) > 0;
}

}  // namespace

EmbeddedPostgres::EmbeddedPostgres(uv_loop_t* loop, std::string state_dir)
    : loop_(loop), state_dir_(fs::absolute(state_dir).lexically_normal().string()) {
  log_path_ = state_dir_ + "/log/postgres.log";
}

EmbeddedPostgres::~EmbeddedPostgres() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string EmbeddedPostgres::conninfo() const {
  return "host=" + sock_dir_ + " port=5432 dbname=postgres user=postern connect_timeout=5";
}

std::string EmbeddedPostgres::prepare() {
  try {
    std::error_code ec;
    if (auto c = fs::canonical(state_dir_, ec); !ec) state_dir_ = c.string();
    fs::create_directories(state_dir_ + "/log");
    std::string err = find_server();
    if (err.empty()) err = pick_user();
    if (err.empty()) err = locate();
    if (err.empty()) err = check_owner();
    if (err.empty()) err = lock();
    if (err.empty()) err = make_dirs();
    if (!err.empty()) return err;
    stop_stale();
    return initdb();
  } catch (const std::exception& e) {
    return e.what();
  }
}

// The newest installed server.
std::string EmbeddedPostgres::find_server() {
  std::string best;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/usr/lib/postgresql", ec))
    if (fs::exists(e.path() / "bin" / "postgres") && e.path().string() > best) best = e.path().string();
  if (best.empty()) return "no PostgreSQL server found under /usr/lib/postgresql: install the postgresql package, or set database.url";
  bin_dir_ = best + "/bin";
  return "";
}

// posternd's own user, or "postgres" when posternd is root (initdb and postgres refuse root).
std::string EmbeddedPostgres::pick_user() {
  if (geteuid() != 0) {
    uid_ = geteuid();
    gid_ = getegid();
    user_ = user_name(uid_);
    return "";
  }
  passwd* pw = getpwnam("postgres");
  if (!pw)
    return "posternd runs as root and there is no 'postgres' user to run the private cluster as (PostgreSQL refuses "
           "root): install the postgresql package, run posternd as an unprivileged user, or set database.url";
  uid_ = pw->pw_uid;
  gid_ = pw->pw_gid;
  user_ = "postgres";
  as_other_user_ = true;
  return "";
}

// The first directory on the way to `path` (itself included) the cluster user may not enter, or
// "" when it may enter every one. Asked of the kernel by a child that has become that user, so
// ACLs and groups count as they will for PostgreSQL.
std::string EmbeddedPostgres::blocked_dir(const std::string& path) const {
  if (!as_other_user_) return "";
  std::vector<std::string> dirs;
  fs::path acc;
  for (auto& part : fs::path(path)) {
    if (part.empty()) continue;
    acc /= part;
    dirs.push_back(acc.string());
  }
  pid_t pid = fork();
  if (pid < 0) return "";  // cannot tell: initdb or postgres will say
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0) _exit(255);
    for (size_t i = 0; i < dirs.size(); ++i)
      if (::access(dirs[i].c_str(), X_OK) != 0) _exit(static_cast<int>(std::min<size_t>(i + 1, 254)));
    _exit(0);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 255) return "";
  return dirs[std::min<size_t>(WEXITSTATUS(status), dirs.size()) - 1];
}

// Where the cluster is: the record (a symlink) wins, then a cluster already in place; a new one
// goes in place when the cluster user can reach it, else to kExternalRoot.
std::string EmbeddedPostgres::locate() {
  std::string link = state_dir_ + "/pgdata";
  struct stat st {};
  bool present = ::lstat(link.c_str(), &st) == 0;
  if (present && S_ISLNK(st.st_mode)) return use_record(link);
  if (present && !S_ISDIR(st.st_mode)) return link + " is not a directory: move it away";
  if (present && has_cluster(link)) return locate_in_place(blocked_dir(state_dir_));
  std::error_code ec;
  if (present && !fs::is_empty(link, ec))
    return link + " is not empty and holds no PostgreSQL cluster (no PG_VERSION): move it away";
  std::string why, blocked = blocked_dir(state_dir_);
  if (!blocked.empty())
    why = "the " + user_ + " user, which runs the private cluster, cannot enter " + blocked + " (" + describe(blocked) + ")";
  else if ((state_dir_ + "/pgsock").size() > kMaxSocketDir)
    why = "the socket path under " + state_dir_ + " would be longer than a unix socket allows";
  if (why.empty() || !as_other_user_) return locate_in_place(blocked);
  return locate_external(why);
}

// `b`: what blocked_dir() said of the state directory.
std::string EmbeddedPostgres::locate_in_place(const std::string& b) {
  data_dir_ = state_dir_ + "/pgdata";
  sock_dir_ = state_dir_ + "/pgsock";
  if (sock_dir_.size() > kMaxSocketDir)
    return "the socket path " + sock_dir_ + "/.s.PGSQL.5432 is longer than the 107 bytes a unix socket allows: use a "
           "shorter server.state_dir, or set database.url";
  if (!b.empty())
    return "the " + user_ + " user, which runs the private cluster, cannot reach " + data_dir_ + ": it may not enter " + b +
           " (" + describe(b) + "); fix: chmod o+x " + b + ", or move the state directory where " + user_ +
           " can reach it, or set database.url";
  return "";
}

// A new cluster in kExternalRoot/<id>, recorded as the symlink <state_dir>/pgdata.
std::string EmbeddedPostgres::locate_external(const std::string& why) {
  std::string root = kExternalRoot;
  auto cant = [&](const std::string& what) {
    return why + ", and " + what + ": chmod o+x the directory named, move the state directory where the " + user_ +
           " user can reach it, or set database.url";
  };
  if (::mkdir(root.c_str(), 0755) != 0 && errno != EEXIST) return cant("cannot create " + root + ": " + std::strerror(errno));
  std::string id = path_id(state_dir_), link = state_dir_ + "/pgdata";
  for (int n = 1; n <= 99 && base_.empty(); ++n) {
    std::string base = root + "/" + id + (n > 1 ? "-" + std::to_string(n) : "");
    if (::mkdir(base.c_str(), 0700) == 0) {
      base_ = base;
    } else if (errno != EEXIST) {
      return cant("cannot create " + base + ": " + std::strerror(errno));
    } else if (read_line(base + "/state_dir") == state_dir_) {
      // Made for this path: the start that made it was interrupted, or the state directory was
      // removed and made again. Its data is kept, never dropped behind the admin's back.
      base_ = base;
      if (has_cluster(base + "/data"))
        spdlog::warn("database: reusing the private cluster in {}, made for {} before its record {} was lost; to start "
                     "with an empty one instead, stop posternd and remove {}",
                     base, state_dir_, link, base);
    } else {
      spdlog::warn("database: {} holds the private cluster of the state directory {}; remove it if nothing uses it "
                   "any more",
                   base, esc(read_line(base + "/state_dir")));
    }
  }
  if (base_.empty()) return cant("every name for it under " + root + " is taken");
  if (auto e = make_dir(base_, uid_, gid_, true); !e.empty()) return cant(e);
  if (std::string b = blocked_dir(base_); !b.empty()) return cant("it may not enter " + b + " (" + describe(b) + ") either");
  std::ofstream(base_ + "/state_dir") << state_dir_ << "\n";
  ::rmdir(link.c_str());  // empty ones, left by an earlier failed start
  ::rmdir((state_dir_ + "/pgsock").c_str());
  if (::symlink((base_ + "/data").c_str(), link.c_str()) != 0)
    return "cannot record the private cluster as the symlink " + link + ": " + std::strerror(errno);
  fsync_dir(state_dir_);
  data_dir_ = base_ + "/data";
  sock_dir_ = base_ + "/sock";
  spdlog::warn("database: {}; the private cluster goes to {} (recorded as the symlink {})", why, base_, link);
  return "";
}

std::string EmbeddedPostgres::use_record(const std::string& link) {
  std::error_code ec;
  fs::path target = fs::read_symlink(link, ec);
  if (target.is_relative()) target = fs::path(state_dir_) / target;
  target = target.lexically_normal();
  // Its parent holds the socket directory too; the data directory itself is absent only when
  // the first start was interrupted before initdb finished.
  if (target.filename().empty() || !fs::is_directory(target.parent_path(), ec))
    return "the private cluster recorded in " + link + " (-> " + target.string() + ") is missing: restore it there, or "
           "remove " + link + " to start a new, empty cluster";
  base_ = fs::canonical(target.parent_path()).string();
  data_dir_ = base_ + "/" + target.filename().string();
  sock_dir_ = base_ + "/sock";
  if (sock_dir_.size() > kMaxSocketDir)
    return "the socket path " + sock_dir_ + "/.s.PGSQL.5432 is longer than the 107 bytes a unix socket allows: move "
           "the cluster and point " + link + " at it";
  if (std::string b = blocked_dir(base_); !b.empty())
    return "the " + user_ + " user, which runs the private cluster, cannot reach " + data_dir_ + ": it may not enter " + b +
           " (" + describe(b) + "); fix: chmod o+x " + b + ", or set database.url";
  if (read_line(base_ + "/state_dir") != state_dir_) {
    spdlog::info("database: the private cluster in {} now serves the state directory {}", base_, state_dir_);
    std::ofstream(base_ + "/state_dir") << state_dir_ << "\n";
  }
  return "";
}

// An existing cluster runs as the user that owns it; PostgreSQL refuses any other. (An external
// one's directory is the cluster user's from the start, and may be all another user can see.)
std::string EmbeddedPostgres::check_owner() {
  struct stat st {};
  std::string dir = base_.empty() ? data_dir_ : base_;
  if ((base_.empty() && !has_cluster(data_dir_)) || ::stat(dir.c_str(), &st) != 0 || st.st_uid == uid_) return "";
  std::string owner = user_name(st.st_uid);
  return "the private cluster in " + data_dir_ + " belongs to " + owner + ", but posternd (running as " +
         user_name(geteuid()) + ") would run it as " + user_ + ": run posternd as " +
         (owner == "postgres" ? std::string("root with server.user = \"root\"") : owner) + ", or chown -R " + user_ +
         " " + dir;
}

// One posternd per cluster: a second one (a copied state directory, the same one started twice)
// must neither stop nor share the one the first supervises.
std::string EmbeddedPostgres::lock() {
  std::string path = data_dir_ + ".lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (lock_fd_ < 0) return "cannot open " + path + ": " + std::strerror(errno);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    std::string holder = read_line(path);
    return "the private cluster in " + data_dir_ + " is in use by another posternd" +
           (holder.empty() ? "" : " (pid " + esc(holder, 20) + ")") +
           ": stop that one first, or give this one its own server.state_dir";
  }
  std::string pid = std::to_string(getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the note; only the message to a second posternd loses the PID.
  }
  return "";
}

std::string EmbeddedPostgres::make_dirs() {
  if (auto e = make_dir(sock_dir_, uid_, gid_, as_other_user_); !e.empty()) return e;
  if (!fs::exists(data_dir_)) return "";  // initdb makes it
  return make_dir(data_dir_, uid_, gid_, as_other_user_ && !has_cluster(data_dir_));
}

// initdb into <data>.initdb, then rename: a killed start never leaves half a cluster behind.
// initdb's own per-file fsync costs seconds here; one syncfs of the file system before the rename
// makes the same files durable.
std::string EmbeddedPostgres::initdb() {
  if (has_cluster(data_dir_)) return "";
  std::string tmp = data_dir_ + ".initdb";
  fs::remove_all(tmp);
  if (auto e = make_dir(tmp, uid_, gid_, as_other_user_); !e.empty()) return e;
  spdlog::info("database: creating the private cluster in {} as user {}", data_dir_, user_);
  std::string exe = bin_dir_ + "/initdb";
  log_mark_ = file_size(log_path_);
  pid_t pid = fork();
  if (pid == 0) {
    setsid();  // a Ctrl-C at the terminal is posternd's to handle, not initdb's
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (chdir("/") != 0) _exit(125);
    if (as_other_user_ && (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0)) _exit(126);
    execl(exe.c_str(), exe.c_str(), "-D", tmp.c_str(), "-U", "postern", "-A", "trust", "-E", "UTF8", "--locale=C",
          "--no-instructions", "--no-sync", static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid < 0) return std::string("cannot fork initdb: ") + std::strerror(errno);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string code = WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                         : "signal " + std::to_string(WTERMSIG(status));
    return "initdb failed (" + code + "): " + log_tail(log_mark_) + "; its output is in " + log_path_;
  }
  int fd = ::open(tmp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::syncfs(fd) != 0) {
    std::string err = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return "cannot sync the new cluster in " + tmp + ": " + err;
  }
  ::close(fd);
  ::rmdir(data_dir_.c_str());  // an empty one, left by an earlier failed start
  if (::rename(tmp.c_str(), data_dir_.c_str()) != 0)
    return "cannot rename " + tmp + " to " + data_dir_ + ": " + std::strerror(errno);
  fsync_dir(fs::path(data_dir_).parent_path().string());
  return "";
}

// The last non-empty line `path` got since offset `from`, for a message.
std::string EmbeddedPostgres::log_tail(off_t from) const {
  std::ifstream in(log_path_, std::ios::binary);
  off_t size = file_size(log_path_);
  from = std::max<off_t>(from, size - 4096);
  if (!in || from >= size) return "(no output)";
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return esc(text.substr(text.find_last_of('\n') == std::string::npos ? 0 : text.find_last_of('\n') + 1), 300);
}

// This cluster's postmaster: the PostgreSQL server binary, run by the cluster user, working in
// this data directory (the postmaster chdirs there). `what` says what the process is.
bool EmbeddedPostgres::is_our_postmaster(pid_t pid, std::string& what) const {
  std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  std::string exe = fs::read_symlink(proc + "/exe", ec).string();
  if (ec) {
    what = "its /proc entry cannot be read: " + ec.message();
    return false;
  }
  if (auto d = exe.rfind(" (deleted)"); d != std::string::npos && d + 10 == exe.size()) exe.erase(d);
  uid_t ruid = UINT_MAX, euid = UINT_MAX;
  std::ifstream st(proc + "/status");
  for (std::string line; std::getline(st, line);)
    if (line.rfind("Uid:", 0) == 0) std::istringstream(line.substr(4)) >> ruid >> euid;
  struct stat cwd {}, data {};
  bool in_data = ::stat((proc + "/cwd").c_str(), &cwd) == 0 && ::stat(data_dir_.c_str(), &data) == 0 &&
                 cwd.st_dev == data.st_dev && cwd.st_ino == data.st_ino;
  what = "exe " + exe + ", user " + user_name(euid) + ", cwd " + fs::read_symlink(proc + "/cwd", ec).string();
  bool server = fs::path(exe).filename() == "postgres" && exe.rfind("/usr/lib/postgresql/", 0) == 0;
  return server && ruid == uid_ && euid == uid_ && in_data;
}

// A postmaster left by a posternd that was killed still holds the data directory: stop it. We
// hold the cluster lock, so no live posternd supervises it. Anything else postmaster.pid or the
// socket's lock file names is left alone and the stale file removed: PostgreSQL would refuse to
// start while it names a live process of its user (after a reboot, PIDs are handed out afresh).
void EmbeddedPostgres::stop_stale() {
  for (const std::string& file : {data_dir_ + "/postmaster.pid", sock_dir_ + "/.s.PGSQL.5432.lock"}) {
    long num = 0;
    std::istringstream(read_line(file)) >> num;
    if (num <= 0 || num > INT_MAX) continue;
    auto pid = static_cast<pid_t>(num);
    int fd = pidfd_open(pid);  // pins the process: a PID recycled after this check is never hit
    if (fd < 0 && errno == ESRCH) continue;  // gone: PostgreSQL replaces the file itself
    std::string what;
    if (fd < 0 || !is_our_postmaster(pid, what)) {
      if (fd < 0) what = std::string("pidfd_open: ") + std::strerror(errno);
      spdlog::warn("database: {} names pid {}, which is not this cluster's postmaster ({}); leaving that process "
                   "alone and removing the stale file",
                   file, pid, esc(what));
      ::unlink(file.c_str());
      if (fd >= 0) ::close(fd);
      continue;
    }
    spdlog::warn("database: stopping a leftover private PostgreSQL (pid {})", pid);
    using std::chrono::milliseconds;
    if (!signal_and_wait(fd, SIGINT, milliseconds(10000)) && !signal_and_wait(fd, SIGQUIT, milliseconds(5000)))
      signal_and_wait(fd, SIGKILL, milliseconds(5000));
    ::close(fd);
  }
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
  log_mark_ = file_size(log_path_);
  int logfd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = logfd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
  stdio[1].data.fd = logfd;
  stdio[2] = stdio[1];
  uv_process_options_t opt{};
  opt.file = exe.c_str();
  opt.args = argv.data();
  opt.cwd = "/";
  opt.stdio = stdio;
  opt.stdio_count = 3;
  // Its own session: signals for posternd's terminal (Ctrl-C) are posternd's to act on.
  opt.flags = UV_PROCESS_DETACHED;
  if (as_other_user_) {
    opt.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
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
    spdlog::error("database: private PostgreSQL exited (status {}, signal {}): {}; restarting in {} ms; see {}", status,
                  sig, self->log_tail(self->log_mark_), delay, self->log_path_);
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
  spdlog::info("database: private PostgreSQL started pid={} data={} socket={} user={}", proc_->pid, data_dir_, sock_dir_,
               user_);
  if (failures_ > 0) --failures_;
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
