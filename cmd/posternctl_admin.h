// posternctl_admin.h — `posternctl admin set-password [--password-file FILE]`: the dashboard's
// password (read from FILE's first line, else from stdin's first line; never from the command
// line), sent to POST /api/v1/admin/password, which stores its scrypt hash (admin/web_auth.h).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace postern::ctl {

void add_admin_commands(CLI::App& app, std::string& method, std::string& path, std::string& body);
// Prints an answer from /api/v1/admin/...; false when `path` is not one of them.
bool print_admin(const std::string& path, const nlohmann::json& j);

}  // namespace postern::ctl
