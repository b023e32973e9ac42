#include "mta/fd_budget.h"

#include <sys/resource.h>

#include <algorithm>

namespace postern::mta {
namespace {

constexpr uint64_t kDaemonReserve = 64;  // logs, spool, PostgreSQL, DNS, listeners, certificates
constexpr uint64_t kReceivingReserve = 1024;  // queue files of messages arriving at once

}  // namespace

FdBudget plan_fd_budget(const Config& cfg, uint64_t soft, uint64_t hard) {
  FdBudget b;
  uint64_t outbound = 2ull * cfg.outbound.max_connections;
  uint64_t fixed = kDaemonReserve + cfg.admin.max_connections + outbound;
  b.receiving = std::min<uint64_t>(cfg.smtp.max_sessions, kReceivingReserve);
  b.needed = fixed + cfg.smtp.max_sessions + b.receiving;
  b.hard = hard;
  b.soft = std::max(soft, std::min(hard, b.needed));
  if (b.soft >= b.needed) {
    b.session_limit = cfg.smtp.max_sessions;
    return b;
  }
  // Not enough: after the daemon's reserve and the admin listener, an eighth (at most 1,024) is
  // kept for queue files of arriving messages; inbound sessions get the rest after the outbound
  // connections, or two thirds of it when the outbound connections alone would not leave them that.
  uint64_t avail = b.soft > kDaemonReserve + cfg.admin.max_connections ? b.soft - kDaemonReserve - cfg.admin.max_connections : 0;
  b.receiving = std::min<uint64_t>(kReceivingReserve, avail / 8);
  uint64_t rest = avail - b.receiving;
  uint64_t sessions = rest > outbound * 2 ? rest - outbound : rest * 2 / 3;
  sessions = std::max<uint64_t>(1, sessions);
  b.session_limit = static_cast<uint32_t>(std::min<uint64_t>(sessions, cfg.smtp.max_sessions));
  b.warning = "the descriptor limit (RLIMIT_NOFILE " + std::to_string(b.soft) + ", hard " + std::to_string(hard) +
              ") cannot hold smtp.max_sessions=" + std::to_string(cfg.smtp.max_sessions) + " (needs " +
              std::to_string(b.needed) + "): at most " + std::to_string(b.session_limit) +
              " sessions will be accepted; raise the limit (ulimit -n, LimitNOFILE= in the systemd unit) or lower "
              "smtp.max_sessions";
  return b;
}

FdBudget fit_fd_budget(const Config& cfg) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  FdBudget b = plan_fd_budget(cfg, rl.rlim_cur, rl.rlim_max);
  if (b.soft > rl.rlim_cur) {
    rlimit want = rl;
    want.rlim_cur = b.soft;
    if (setrlimit(RLIMIT_NOFILE, &want) != 0) b = plan_fd_budget(cfg, rl.rlim_cur, rl.rlim_cur);
  }
  return b;
}

}  // namespace postern::mta
