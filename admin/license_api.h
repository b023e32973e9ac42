// license_api.h — /api/v1/licenses on the admin API (bearer token checked by AdminServer):
//   GET  /api/v1/licenses                       the six licenses: state, code, D, grace end,
//                                                days left, last and next check, notice
//   POST /api/v1/licenses/{license}/activate     {"code": "IM-..."}
//   POST /api/v1/licenses/update-status          the seed's three answers in "message"
//   POST /api/v1/licenses/import                 body: a signed license file (offline site)
//   POST /api/v1/licenses/profile                body: a signed record pushed by a central
//                                                manager (may not replace one code by another)
//   POST /api/v1/licenses/hide-optional | show-optional
// Security-sensitive: bodies are bounded by admin.max_body_size and parsed without exceptions;
// nothing is stored unless LicenseManager verifies it.
#pragma once

#include <string>
#include <vector>

#include "admin/admin_server.h"
#include "admin/license_manager.h"

namespace postern::admin {

// `parts`: the path split at '/', starting with "api", "v1", "licenses".
void license_api(LicenseManager& m, const HttpRequest& req, const std::vector<std::string>& parts, Responder respond);

}  // namespace postern::admin
