// privilege.cpp — see privilege.h. Security-sensitive: every step checks its result, and the
// result of the whole is verified from /proc for every thread before posternd serves.
#include "cmd/privilege.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "base/log.h"
#include "tls/cert_watch.h"

namespace postern::priv {
namespace fs = std::filesystem;

namespace {

std::string err(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string user_name(uid_t uid) {
  passwd* pw = getpwuid(uid);
  return pw ? pw->pw_name : std::to_string(uid);
}

std::string group_name(gid_t gid) {
  group* gr = getgrgid(gid);
  return gr ? gr->gr_name : std::to_string(gid);
}

// "mode 0700, owner root:root" for a message.
std::string describe(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return std::string("mode ") + mode + ", owner " + user_name(st.st_uid) + ":" + group_name(st.st_gid);
}

std::string octal(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// The capability sets of the calling thread (v3: two 32-bit words).
bool set_caps(uint64_t effective, uint64_t permitted) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  data[0].effective = static_cast<uint32_t>(effective);
  data[1].effective = static_cast<uint32_t>(effective >> 32);
  data[0].permitted = static_cast<uint32_t>(permitted);
  data[1].permitted = static_cast<uint32_t>(permitted >> 32);
  return ::syscall(SYS_capset, &hdr, data) == 0;
}

size_t thread_count() {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/self/task", ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

// The fields of a /proc status file posternd checks and reports.
std::map<std::string, std::string> status_fields(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    for (char& c : value)
      if (c == '\t') c = ' ';
    out[key] = value;
  }
  return out;
}

// The first directory on the way to `path` the running user may not enter, or "".
std::string blocked_on_the_way(const std::string& path) {
  fs::path acc;
  for (auto& part : fs::absolute(path).lexically_normal()) {
    if (part.empty()) continue;
    acc /= part;
    std::error_code ec;
    if (!fs::is_directory(acc, ec)) break;
    if (::faccessat(AT_FDCWD, acc.c_str(), X_OK, AT_EACCESS) != 0) return acc.string();
  }
  return "";
}

// blocked_on_the_way(path) as the target user would see it, asked of a child that has become
// that user (groups and ACLs count as they will); "" also when it cannot tell.
std::string blocked_for(const Target& t, const std::string& path) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return "";
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return "";
  }
  if (pid == 0) {
    ::close(fds[0]);
    if (::setgroups(t.groups.size(), t.groups.data()) != 0 || ::setresgid(t.gid, t.gid, t.gid) != 0 ||
        ::setresuid(t.uid, t.uid, t.uid) != 0)
      ::_exit(1);
    std::string b = blocked_on_the_way(path);
    ssize_t n = ::write(fds[1], b.data(), b.size());
    ::_exit(n == static_cast<ssize_t>(b.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || out.size() > 4096) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? out : "";
}

std::string unreachable_state_dir(const std::string& who, const std::string& state, const std::string& b, bool drop) {
  return "posternd runs as " + who + ", which cannot reach the state directory " + state + ": it may not enter " + b +
         " (" + describe(b) + "); move server.state_dir (e.g. to /var/lib/postern), chmod o+x " + b +
         (drop ? ", or set server.user = \"root\"" : "");
}

// Gives everything below the directory `dfd` (at `path`, for messages) to the user; see
// take_state_dir(). Each entry is opened without following a symlink and changed through that
// descriptor, so what was checked is what is changed.
void give_tree(int dfd, const std::string& path, const Target& t, int depth, size_t& changed, size_t& linked,
               std::string& error) {
  if (depth > 32) {
    error = path + ": nested more than 32 directories deep";
    return;
  }
  int copy = ::dup(dfd);
  DIR* d = copy >= 0 ? ::fdopendir(copy) : nullptr;
  if (!d) {
    if (copy >= 0) ::close(copy);
    error = err("cannot read " + path);
    return;
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string p = path + "/" + name;
    int fd = ::openat(dfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;  // gone meanwhile
    struct stat st {};
    bool is_dir = false;
    if (::fstat(fd, &st) != 0) {
      error = err("cannot stat " + p);
    } else if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      ++linked;
    } else {
      is_dir = S_ISDIR(st.st_mode);
      if (st.st_uid != t.uid || st.st_gid != t.gid) {
        // A symlink itself is changed by name (that never follows it); anything else through fd.
        int r = S_ISLNK(st.st_mode) ? ::fchownat(dfd, name.c_str(), t.uid, t.gid, AT_SYMLINK_NOFOLLOW)
                                    : ::fchownat(fd, "", t.uid, t.gid, AT_EMPTY_PATH);
        if (r != 0) error = err("cannot chown " + p);
        else ++changed;
      }
    }
    ::close(fd);
    if (error.empty() && is_dir) {
      int sub = ::openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      struct stat ss {};
      if (sub >= 0 && ::fstat(sub, &ss) == 0 && ss.st_dev == st.st_dev && ss.st_ino == st.st_ino)
        give_tree(sub, p, t, depth + 1, changed, linked, error);
      if (sub >= 0) ::close(sub);
    }
    if (!error.empty()) break;
  }
  ::closedir(d);
}

bool can(const std::string& path, int mode) { return ::faccessat(AT_FDCWD, path.c_str(), mode, AT_EACCESS) == 0; }

}  // namespace

std::string Target::describe() const {
  std::string gs;
  for (gid_t g : groups) gs += (gs.empty() ? "" : ",") + group_name(g);
  return user + " (uid " + std::to_string(uid) + ", gid " + std::to_string(gid) + " " + group + ", groups " +
         (gs.empty() ? "none" : gs) + ")";
}

std::string plan(const Config& cfg, Target& t, std::vector<Note>& notes) {
  t = Target{};
  if (geteuid() != 0) {
    std::string me = user_name(geteuid());
    if (!cfg.user.empty() && cfg.user != "root" && cfg.user != me)
      return "server.user = \"" + esc(cfg.user) + "\", but posternd was started as " + me +
             " (not root) and cannot switch users: start it as root or as " + esc(cfg.user) +
             " (systemd: User=" + esc(cfg.user) + "), or set server.user = \"\"";
    if (cfg.user == "root")
      notes.push_back({true, "server.user = \"root\" has no effect: posternd was started as " + me + ", not root"});
    if (!cfg.group.empty()) {
      group* gr = getgrnam(cfg.group.c_str());
      if (!gr || gr->gr_gid != getegid())
        return "server.group = \"" + esc(cfg.group) + "\", but posternd was started with group " +
               group_name(getegid()) + " (not as root) and cannot switch: start it as root, or with that group "
               "(systemd: Group=" + esc(cfg.group) + "), or set server.group = \"\"";
    }
    return "";
  }
  if (cfg.user == "root") return "";  // said explicitly: stay root, no warning
  std::string name = cfg.user.empty() ? "postern" : cfg.user;
  passwd* pw = getpwnam(name.c_str());
  if (!pw) {
    if (!cfg.user.empty())
      return "server.user = \"" + esc(name) + "\": there is no such user on this system: create it (useradd --system "
             "--home-dir /var/lib/postern --shell /usr/sbin/nologin " + esc(name) + "), or set server.user = \"root\"";
    notes.push_back({true, "running as root: there is no 'postern' user to run as once the listeners are bound; create "
                           "it (useradd --system --home-dir /var/lib/postern --shell /usr/sbin/nologin postern), or set "
                           "server.user = \"root\" to run as root on purpose (README: Running as a service)"});
    return "";
  }
  if (pw->pw_uid == 0)
    return "server.user = \"" + esc(name) + "\" has uid 0: that is root; say server.user = \"root\" to run as root";
  t.drop = true;
  t.user = pw->pw_name;
  t.uid = pw->pw_uid;
  t.gid = pw->pw_gid;
  if (!cfg.group.empty()) {
    group* gr = getgrnam(cfg.group.c_str());
    if (!gr) return "server.group = \"" + esc(cfg.group) + "\": there is no such group on this system";
    if (gr->gr_gid == 0) return "server.group = \"" + esc(cfg.group) + "\" has gid 0: refusing to run with root's group";
    t.gid = gr->gr_gid;
  }
  t.group = group_name(t.gid);
  int n = 64;
  for (int tries = 0; tries < 4; ++tries) {
    t.groups.assign(static_cast<size_t>(n), 0);
    int got = n;
    if (getgrouplist(t.user.c_str(), t.gid, t.groups.data(), &got) >= 0) {
      t.groups.resize(static_cast<size_t>(got));
      break;
    }
    n = got > n ? got : n * 4;
    t.groups.clear();
  }
  if (t.groups.empty()) t.groups.push_back(t.gid);
  for (gid_t g : t.groups)
    if (g == 0)
      return "the user " + t.user + " is a member of group " + group_name(0) +
             " (gid 0) in /etc/group: remove it from that group (posternd refuses to keep root's group)";
  return "";
}

std::string take_state_dir(const Config& cfg, const Target& t, std::vector<Note>& notes) {
  std::error_code ec;
  fs::path dir = fs::absolute(cfg.state_dir).lexically_normal();
  if (dir.has_relative_path() && dir.filename().empty()) dir = dir.parent_path();  // "var/" -> "var"
  if (dir == dir.root_path()) return "server.state_dir must not be the root directory";
  // Nothing is changed for a user that could not use it anyway (a clone below /root).
  if (std::string b = blocked_for(t, dir.parent_path().string()); !b.empty())
    return unreachable_state_dir(t.user, dir.string(), b, true);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return err("cannot stat server.state_dir " + dir.string());
    fs::create_directories(dir.parent_path(), ec);
    if (ec) return "cannot create " + dir.parent_path().string() + ": " + ec.message();
    if (::mkdir(dir.c_str(), 0700) != 0) return err("cannot create " + dir.string());
    if (::chown(dir.c_str(), t.uid, t.gid) != 0) return err("cannot chown " + dir.string());
    notes.push_back({false, "state directory " + dir.string() + " created for " + t.user + " (mode 0700)"});
  } else {
    if (!S_ISDIR(st.st_mode)) return "server.state_dir " + dir.string() + " is not a directory";
    dir = fs::canonical(dir, ec);
    if (ec) return "cannot resolve server.state_dir: " + ec.message();
    // posternd's to give: empty, made by a posternd (posternd.pid), or the user's already (the
    // admin said so). Anything else could be any directory of the system: refused.
    bool empty = fs::is_empty(dir, ec);
    bool ours = (!ec && empty) || st.st_uid == t.uid || ::access((dir / "posternd.pid").c_str(), F_OK) == 0;
    if (!ours)
      return "server.state_dir " + dir.string() + " (" + describe(dir) + ") is not empty and holds no posternd.pid, so "
             "it is not a Postern state directory posternd may give to " + t.user + ": point server.state_dir at a "
             "new directory, or chown " + t.user + ":" + t.group + " " + dir.string() + " yourself";
    // Everything in it is posternd's: the queue, certificates, the in-place private cluster of
    // an earlier run as root (run as postgres then, as the user now). Walked through file
    // descriptors, never following a symlink (an external cluster's record stays a link, its
    // cluster untouched), and a file with other hard links (it could be any file of the
    // system, linked in by whoever could write here) is left alone.
    size_t changed = 0, linked = 0;
    int top = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (top < 0) return err("cannot open " + dir.string());
    std::string walk_err;
    struct stat ts {};
    if (::fstat(top, &ts) != 0 || ((ts.st_uid != t.uid || ts.st_gid != t.gid) && ::fchown(top, t.uid, t.gid) != 0))
      walk_err = err("cannot chown " + dir.string());
    else if (ts.st_uid != t.uid || ts.st_gid != t.gid)
      ++changed;
    if (walk_err.empty()) give_tree(top, dir.string(), t, 0, changed, linked, walk_err);
    ::close(top);
    if (!walk_err.empty()) return walk_err;
    if (linked)
      notes.push_back({true, "state directory " + dir.string() + ": files with other hard links, not given to " +
                                 t.user + ": " + std::to_string(linked)});
    if (changed)
      notes.push_back({false, "state directory " + dir.string() + ": " + std::to_string(changed) +
                                  " entries given to " + t.user + ":" + t.group});
  }
  // A log file outside the state directory: made, and the user's, before the switch.
  std::string log = cfg.resolved_log_file();
  if (!log.empty()) {
    fs::path lp = fs::absolute(log).lexically_normal();
    auto rel = lp.lexically_relative(dir);
    if (rel.empty() || *rel.begin() == "..") {
      fs::path parent = lp.parent_path();
      if (!fs::exists(parent, ec)) {
        fs::create_directories(parent, ec);
        if (ec) return "cannot create " + parent.string() + ": " + ec.message();
        if (::chown(parent.c_str(), t.uid, t.gid) != 0) return err("cannot chown " + parent.string());
      }
      int fd = ::open(lp.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) return err("cannot open the log file " + lp.string());
      struct stat s {};
      bool ok = ::fstat(fd, &s) == 0 && (s.st_uid == t.uid || ::fchown(fd, t.uid, t.gid) == 0);
      ::close(fd);
      if (!ok) return err("cannot give the log file " + lp.string() + " to " + t.user);
    }
  }
  return "";
}

std::string begin(const Target& t) {
  if (size_t n = thread_count(); n != 1)
    return "the privilege drop must begin while posternd is one thread, but it has " + std::to_string(n);
  // The bounding set first, while root may still change it: CAP_NET_BIND_SERVICE is all any
  // thread or child could ever be given again.
  for (int cap = 0; cap <= 63; ++cap)
    if (cap != CAP_NET_BIND_SERVICE && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      return err("prctl(PR_CAPBSET_DROP, " + std::to_string(cap) + ")");
  if (::setgroups(t.groups.size(), t.groups.data()) != 0) return err("setgroups");
  if (::setresgid(t.gid, t.gid, t.gid) != 0) return err("setresgid");
  if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return err("prctl(PR_SET_KEEPCAPS)");
  // The saved uid stays 0 until finish(): that is what makes the kernel clear every thread's
  // capabilities then. Until then only CAP_NET_BIND_SERVICE is kept, effective.
  if (::setresuid(t.uid, t.uid, 0) != 0) return err("setresuid");
  uint64_t bind = 1ull << CAP_NET_BIND_SERVICE;
  if (!set_caps(bind, bind)) return err("capset");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return err("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return err("prctl(PR_SET_NO_NEW_PRIVS)");
  ::umask(077);
  return "";
}

std::string finish(const Target& t) {
  if (::setresuid(t.uid, t.uid, t.uid) != 0) return err("setresuid");  // every thread (glibc)
  uid_t r = 0, e = 0, s = 0;
  gid_t gr = 0, ge = 0, gs = 0;
  if (::getresuid(&r, &e, &s) != 0 || r != t.uid || e != t.uid || s != t.uid) return "the uids are not all " + t.user;
  if (::getresgid(&gr, &ge, &gs) != 0 || gr != t.gid || ge != t.gid || gs != t.gid) return "the gids are not all " + t.group;
  if (::setuid(0) == 0) return "setuid(0) succeeded after the drop";
  if (::setgid(0) == 0) return "setgid(0) succeeded after the drop";
  // The uid change made posternd non-dumpable, which makes its /proc entries root's; its own
  // user may see them again (it can read everything posternd holds anyway).
  ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  std::string want_uid = std::to_string(t.uid), want_gid = std::to_string(t.gid);
  std::error_code ec;
  size_t threads = 0;
  for (auto it = fs::directory_iterator("/proc/self/task", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    auto f = status_fields(it->path().string() + "/status");
    std::string tid = it->path().filename().string();
    std::istringstream uids(f["Uid"]), gids(f["Gid"]);
    for (std::string v; uids >> v;)
      if (v != want_uid) return "thread " + tid + " still has uid " + v;
    for (std::string v; gids >> v;)
      if (v != want_gid) return "thread " + tid + " still has gid " + v;
    for (const char* cap : {"CapInh", "CapPrm", "CapEff", "CapAmb"})
      if (f[cap].find_first_not_of('0') != std::string::npos) return "thread " + tid + " still has " + cap + " " + f[cap];
    if (f["NoNewPrivs"] != "1") return "thread " + tid + " has NoNewPrivs " + f["NoNewPrivs"];
    ++threads;
  }
  if (ec || threads == 0) return "cannot read /proc/self/task: " + ec.message();
  return "";
}

void clear_ambient() { ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); }

void abandon() {
  uid_t r = 0, e = 0, s = 0;
  if (::getresuid(&r, &e, &s) != 0 || e == 0 || s != 0) return;
  if (::setresuid(e, e, e) == 0) ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

std::string check_access(const Config& cfg, const Target& t) {
  std::string who = t.drop ? t.user : user_name(geteuid());
  std::string state = fs::absolute(cfg.state_dir).lexically_normal().string();
  if (std::string b = blocked_on_the_way(state); !b.empty()) return unreachable_state_dir(who, state, b, t.drop);
  if (!can(state, R_OK | W_OK | X_OK))
    return "posternd runs as " + who + ", which cannot use the state directory " + state + " (" + describe(state) +
           "): chown -R " + who + " " + state;
  if (!can(cfg.path, R_OK))
    return "posternd runs as " + who + ", which cannot read its configuration " + cfg.path + " (" + describe(cfg.path) +
           ") to reload it on SIGHUP: chgrp " + (t.drop ? t.group : who) + " " + cfg.path + " && chmod g+r " + cfg.path;
  // Certificate files are re-read on every change and on SIGHUP; the watch needs their
  // directories (and a symlink target's, as certbot's live/ -> archive/) readable too.
  for (const std::string& f : tls::watched_files(cfg)) {
    std::error_code ec;
    std::vector<std::string> dirs{fs::absolute(f).parent_path().string()};
    if (auto c = fs::canonical(f, ec); !ec && c.parent_path() != dirs[0]) dirs.push_back(c.parent_path().string());
    auto hint = [&](const std::string& what) {
      return "posternd runs as " + who + ", which cannot " + what +
             ": the certificate files it serves are re-read as " + who +
             " when they change; give it a group for them (groupadd postern-certs; usermod -aG postern-certs " + who +
             "; chgrp -R postern-certs DIRS; chmod g+rx DIRS; chmod g+r the key files; README: Running as a service)";
    };
    for (auto& d : dirs) {
      if (std::string b = blocked_on_the_way(d); !b.empty())
        return hint("enter " + b + " (" + describe(b) + ") on the way to " + f);
      if (!can(d, R_OK | X_OK)) return hint("read the directory " + d + " (" + describe(d) + ") to watch " + f);
    }
    if (!can(f, R_OK)) return hint("read " + f + " (" + describe(f) + ")");
  }
  struct Named {
    const char* key;
    const std::string* path;
  };
  for (const Named& n : {Named{"relay.recipient_map", &cfg.relay.recipient_map},
                         Named{"license.public_key_file", &cfg.license.public_key_file},
                         Named{"http_client.ca_file", &cfg.http_client.ca_file},
                         Named{"outbound.ca_file", &cfg.outbound.ca_file},
                         Named{"updates.ca_file", &cfg.updates.ca_file},
                         Named{"updates.pattern_root", &cfg.updates.pattern_root},
                         Named{"scan.clamav_database_dir", &cfg.scan.clamav_database_dir}}) {
    if (n.path->empty()) continue;
    std::error_code ec;
    int mode = fs::is_directory(*n.path, ec) ? R_OK | X_OK : R_OK;
    if (!can(*n.path, mode) && fs::exists(*n.path, ec))
      return "posternd runs as " + who + ", which cannot read " + n.key + " " + *n.path + " (" + describe(*n.path) +
             "): make it readable by " + who + " or a group it is in";
  }
  return "";
}

void secure_modes(const Config& cfg, bool unprivileged, std::vector<Note>& notes) {
  std::string dir = cfg.state_dir;
  auto tighten = [&](const std::string& p, mode_t want) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077) == 0) return;
    if (::chmod(p.c_str(), want) == 0)
      notes.push_back({true, p + " was mode " + octal(st.st_mode) + ", readable by others: made " + octal(want)});
  };
  if (unprivileged) tighten(dir, 0700);
  tighten(dir + "/admin.token", 0600);
  tighten(dir + "/node.key", 0600);
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir + "/certs", ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    if (it->path().extension() == ".key") tighten(it->path().string(), 0600);
  // Key files the config names are the admin's (certbot's): said, not changed.
  for (const std::string* k : {&cfg.smtp.tls_key_file, &cfg.outbound.tls_key_file, &cfg.admin_tls_key_file,
                               &cfg.euq_tls_key_file}) {
    struct stat st {};
    if (!k->empty() && ::stat(k->c_str(), &st) == 0 && (st.st_mode & 007) != 0)
      notes.push_back({true, "the private key " + *k + " is readable by every user (" + describe(*k) +
                                 "): chmod o-rwx it"});
  }
}

std::string status_summary() {
  auto f = status_fields("/proc/self/status");
  std::string out;
  for (const char* k : {"Uid", "Gid", "Groups", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"}) {
    std::string v = f[k];
    while (!v.empty() && v.back() == ' ') v.pop_back();
    for (char& c : v)
      if (c == ' ') c = ',';
    out += std::string(out.empty() ? "" : " ") + k + "=" + v;
  }
  return out;
}

}  // namespace postern::priv
