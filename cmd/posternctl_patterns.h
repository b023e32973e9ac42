// posternctl_patterns.h — `posternctl patterns status | update | import-bundle FILE`
// (cmd/posternctl_patterns.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace postern::ctl {

// Adds the `patterns` area; its callbacks fill in the request (method, path, body).
void add_patterns_commands(CLI::App& app, std::string& method, std::string& path, std::string& body);
// Prints an answer from /api/v1/patterns...; false when `path` is not one of them.
bool print_patterns(const std::string& path, const nlohmann::json& j);

}  // namespace postern::ctl
