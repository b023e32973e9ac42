// fd_budget.h — fitting the sessions to the descriptor limit. An inbound session holds one
// descriptor (its socket) and, only while a message arrives, a second (its queue file): the budget
// counts one per session plus a reserve of queue files for messages arriving at once (up to 1,024:
// idle and command-phase sessions, the great majority under load, cost one). An outbound
// connection holds two (socket, queue file being sent), an admin connection one, and the daemon
// itself some (log, spool, PostgreSQL, DNS, the listeners). More messages arriving at once than
// the reserve and the slack above it would be answered 451 (the queue file cannot be opened). At start RLIMIT_NOFILE's soft limit is raised as far as
// needed (up to the hard limit); if that cannot hold smtp.max_sessions, fewer sessions are
// accepted (the rest get 421 4.3.2 at connect) and the reason is logged, so that running out of
// descriptors stays an exception (the listeners pause then: see Worker::pause_accepting).
#pragma once

#include <cstdint>
#include <string>

#include "conf/config.h"

namespace postern::mta {

struct FdBudget {
  uint64_t soft = 0, hard = 0;  // RLIMIT_NOFILE after raising
  uint64_t needed = 0;          // for the configured limits
  uint32_t session_limit = 0;   // inbound sessions accepted at once
  uint64_t receiving = 0;       // queue files reserved for messages arriving at once
  std::string warning;          // non-empty when the limit cannot fit the configuration
};

// Pure: what the limits allow for this configuration.
FdBudget plan_fd_budget(const Config& cfg, uint64_t soft, uint64_t hard);
// Raises RLIMIT_NOFILE's soft limit as the plan needs and returns the plan.
FdBudget fit_fd_budget(const Config& cfg);

}  // namespace postern::mta
