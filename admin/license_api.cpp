// license_api.cpp — see license_api.h.
#include "admin/license_api.h"

#include <nlohmann/json.hpp>

#include "licensing/activation_code.h"

namespace postern::admin {
using nlohmann::json;

namespace {
HttpResponse answer(int status, const json& j) {
  return {status, "application/json", j.dump(-1, ' ', false, json::error_handler_t::replace), {}};
}
}  // namespace

void license_api(LicenseManager& m, const HttpRequest& req, const std::vector<std::string>& p, Responder respond) {
  auto reply = [respond](int status, json body) { respond(answer(status, body)); };
  const std::string& method = req.method;
  if (p.size() == 3) {
    if (method != "GET") return reply(405, {{"error", "method not allowed"}});
    return reply(200, m.list());
  }
  if (method != "POST") return reply(405, {{"error", "method not allowed"}});
  if (p.size() == 4) {
    const std::string& act = p[3];
    if (act == "update-status") return m.update_status(reply);
    if (act == "import") return m.import(req.body, "file", reply);
    if (act == "profile") return m.import(req.body, "profile", reply);
    if (act == "hide-optional" || act == "show-optional") return m.set_hide_optional(act == "hide-optional", reply);
    return reply(404, {{"error", "no such endpoint"}});
  }
  if (p.size() == 5 && p[4] == "activate") {
    auto k = licensing::kind_from_cli(p[3]);
    if (!k)
      return reply(404, {{"error", "no such license (antivirus, antispam, reputation, prefilter, dlp, encryption)"}});
    auto j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("code") || !j["code"].is_string())
      return reply(400, {{"error", "the body must be {\"code\": \"...\"}"}});
    return m.activate(*k, j["code"].get<std::string>(), reply);
  }
  reply(404, {{"error", "no such endpoint"}});
}

}  // namespace postern::admin
