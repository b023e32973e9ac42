// pattern_api.cpp — see pattern_api.h. Security-sensitive: only GET under /updates/ skips the
// token, and that route serves nothing but the installed, verified bundle by fixed names.
#include "admin/pattern_api.h"

namespace postern::admin {
using nlohmann::json;

void pattern_api(PatternManager& pm, const HttpRequest& req, const std::vector<std::string>& p, Responder respond) {
  auto reply = [respond](int st, json body) { respond({st, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace)}); };
  if (p.size() == 3) {
    if (req.method != "GET") return respond(http::json_error(405, "method not allowed"));
    return reply(200, pm.status());
  }
  if (p.size() == 4 && req.method != "POST") return respond(http::json_error(405, "method not allowed"));
  if (p.size() == 4 && p[3] == "update") return pm.update(reply);
  if (p.size() == 4 && p[3] == "import") {
    if (req.body.empty()) return respond(http::json_error(400, "the body must be a bundle file (postern-bundle build)"));
    return pm.import(req.body, reply);
  }
  respond(http::json_error(404, "no such endpoint"));
}

bool relay_route(PatternManager* pm, const HttpRequest& req, Responder& respond) {
  if (req.path.rfind("/updates/", 0) != 0) return false;
  if (!pm) respond(http::json_error(404, "no pattern bundles on this node"));
  else respond(pm->serve_relay(req));
  return true;
}

}  // namespace postern::admin
