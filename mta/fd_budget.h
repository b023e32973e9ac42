// fd_budget.h — fitting the sessions to the descriptor limit. An inbound session holds up to two
// descriptors (its socket and, while a message arrives, its queue file), an outbound connection
// two (socket, queue file being sent), an admin connection one, and the daemon itself some (log,
// spool, PostgreSQL, DNS, the listeners). At start RLIMIT_NOFILE's soft limit is raised as far as
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
  std::string warning;          // non-empty when the limit cannot fit the configuration
};

// Pure: what the limits allow for this configuration.
FdBudget plan_fd_budget(const Config& cfg, uint64_t soft, uint64_t hard);
// Raises RLIMIT_NOFILE's soft limit as the plan needs and returns the plan.
FdBudget fit_fd_budget(const Config& cfg);

}  // namespace postern::mta
