// pattern_api.h — /api/v1/patterns (status, update, import) and the relay's /updates/ route
// (read without a token: the bundles are signed), both answered by the PatternManager.
#pragma once

#include <string>
#include <vector>

#include "admin/admin_server.h"
#include "admin/pattern_manager.h"

namespace postern::admin {

// GET /api/v1/patterns; POST /api/v1/patterns/update; POST /api/v1/patterns/import (body: the
// bundle file's bytes, bounded by admin.max_body_size and updates.max_bundle_size).
void pattern_api(PatternManager& pm, const HttpRequest& req, const std::vector<std::string>& p, Responder respond);
// GET /updates/...: true when the path is the relay's (and it was answered).
bool relay_route(PatternManager* pm, const HttpRequest& req, Responder& respond);

}  // namespace postern::admin
