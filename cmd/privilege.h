// privilege.h — posternd started as root: whom it runs as, the state directory made that user's,
// and the drop itself (README "Running as a service").
//
// Security-sensitive. The drop has two steps so that every file posternd creates is the target
// user's and no thread keeps a privilege:
//   begin(): while posternd is still one thread: the bounding set cut to CAP_NET_BIND_SERVICE,
//     supplementary groups (from /etc/group), gid,
//     then uids (real = effective = the user, saved = 0); the effective capability set is only
//     CAP_NET_BIND_SERVICE (to bind ports below 1024), permitted the same; no ambient or
//     inheritable capabilities; PR_SET_NO_NEW_PRIVS (inherited by every thread and child);
//     umask 077. From here on files are created as the user, the private PostgreSQL runs as it.
//   finish(): once every listener is bound: setresuid(user, user, user), which glibc applies to
//     every thread and which clears every capability of every thread (no uid is 0 any more);
//     then verified: ids, setuid(0)/setgid(0) refused, and CapPrm/CapEff/CapAmb = 0, NoNewPrivs = 1
//     in /proc for every thread. Any failure is fatal: posternd never runs half-dropped.
// Started by an unprivileged user (systemd's User=postern with AmbientCapabilities): no switch;
// the ambient set is cleared at start so the private PostgreSQL does not inherit it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "conf/config.h"

namespace postern::priv {

// A line for the log, kept until logging is set up (the drop happens before it).
struct Note {
  bool warn = false;
  std::string text;
};

struct Target {
  bool drop = false;  // started as root and switching to `user`
  std::string user, group;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary, /etc/group membership of `user` (and gid)
  std::string describe() const;  // "postern (uid 998, gid 998, groups postern,postern-certs)"
};

// Whom to run as, from server.user / server.group and who started posternd. "" or the reason to
// refuse. `notes` gets lines to log once logging is set up (the root warning).
std::string plan(const Config& cfg, Target& t, std::vector<Note>& notes);

// As root, before begin(): the state directory (made if missing, 0700) and everything in it are
// given to the user, when it is posternd's (empty, holding posternd.pid, or the user's already),
// walked through descriptors that never follow a symlink, files with other hard links left
// alone; nothing is changed if the user could not reach it. The log file too when it lies
// outside. "" or why not.
std::string take_state_dir(const Config& cfg, const Target& t, std::vector<Note>& notes);

// See the header comment. Both return "" or what failed (then posternd must exit).
std::string begin(const Target& t);
std::string finish(const Target& t);

// Not started as root: clears the ambient capability set (children do not inherit it).
void clear_ambient();
// A start refused after begin(): the saved uid 0 goes too (and every capability with it) before
// posternd exits, so nothing runs at exit with a way back to root, and its own exit-time tools
// (the sanitizers' leak check stops the world through ptrace, which a saved uid of 0 forbids)
// work. Nothing when posternd is root or has finished the drop.
void abandon();

// After begin() (or in an unprivileged start): what posternd will need to open again as the user
// later — the state directory, the config file (SIGHUP), every certificate file and its directory
// (the watch, reloads), the other files the config names. "" or the first one it cannot use,
// with the fix.
std::string check_access(const Config& cfg, const Target& t);

// Running as an unprivileged user: the state directory is made 0700 and the private keys and the
// admin token 0600 when wider (each change noted). Root without a switch: keys only (the postgres
// user must still enter the state directory).
void secure_modes(const Config& cfg, bool unprivileged, std::vector<Note>& notes);

// The lines of /proc/self/status posternd reports after the drop (Uid, Gid, Groups, CapEff, NoNewPrivs).
std::string status_summary();

}  // namespace postern::priv
