// posternctl_quarantine.h — `posternctl quarantine list | show ID | release ID | delete ID`
// (cmd/posternctl_quarantine.cpp), over /api/v1/quarantine.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

namespace postern::ctl {

// Adds the `quarantine` area; its callbacks fill in the request (method, path).
void add_quarantine_commands(CLI::App& app, std::string& method, std::string& path);
// Prints an answer from /api/v1/quarantine...; false when `path` is not one of them.
bool print_quarantine(const std::string& method, const std::string& path, const nlohmann::json& j);

}  // namespace postern::ctl
