// posternctl_license.h — `posternctl license ...`: list, activate, update-status, import,
// hide-optional, show-optional (cmd/posternctl_license.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace postern::ctl {

// Adds the `license` area; its callbacks fill in the request (method, path, body).
void add_license_commands(CLI::App& app, std::string& method, std::string& path, std::string& body);
// Prints an answer from /api/v1/licenses...; false when `path` is not one of them.
bool print_license(const std::string& path, const nlohmann::json& j);

}  // namespace postern::ctl
