// posternctl_license.cpp — see posternctl_license.h. Reads the license file to import (bounded
// to 64 KiB) and sends it as it is: the daemon verifies it.
#include "cmd/posternctl_license.h"

#include <cstdio>
#include <fstream>
#include <iostream>

namespace postern::ctl {
using nlohmann::json;

namespace {

std::string field(const json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || j[k].is_null()) return "-";
  return j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
}

void print_list(const json& j) {
  std::printf("%-11s %-14s %-27s %-10s %-10s %5s %5s %-20s %-20s\n", "LICENSE", "STATE", "CODE", "EXPIRES",
              "GRACE END", "DAYS", "GRACE", "LAST CHECK", "NEXT CHECK");
  if (!j.contains("licenses") || !j["licenses"].is_array()) return;
  for (auto& l : j["licenses"])
    std::printf("%-11s %-14s %-27s %-10s %-10s %5s %5s %-20s %-20s\n", field(l, "license").c_str(),
                field(l, "state").c_str(), field(l, "code").c_str(), field(l, "expires").c_str(),
                field(l, "grace_end").c_str(), field(l, "days_left").c_str(), field(l, "grace_days_left").c_str(),
                field(l, "last_check").c_str(), field(l, "next_check").c_str());
  for (auto& l : j["licenses"])
    if (field(l, "notice") != "-") std::printf("notice: %s\n", field(l, "notice").c_str());
  std::printf("today %s (%s)%s\n", field(j, "today").c_str(), field(j, "timezone").c_str(),
              j.value("hide_optional", false) ? "; notices of optional licenses that are not activated are hidden" : "");
}

}  // namespace

void add_license_commands(CLI::App& app, std::string& method, std::string& path, std::string& body) {
  auto* lic = app.add_subcommand("license", "licenses: activation, status, offline import");
  lic->add_subcommand("list", "the six licenses: state, expiry D, grace end, days left, last and next check")
      ->callback([&] { method = "GET"; path = "/api/v1/licenses"; });
  auto* act = lic->add_subcommand("activate", "activate LICENSE with an activation code (through the license server)");
  static std::string license, code, file;
  act->add_option("license", license, "antivirus, antispam (also activates reputation), reputation, prefilter, dlp")
      ->required();
  act->add_option("code", code, "the activation code, e.g. IM-...")->required();
  act->callback([&] {
    method = "POST";
    path = "/api/v1/licenses/" + license + "/activate";
    body = json{{"code", code}}.dump();
  });
  lic->add_subcommand("update-status", "check every license with the license server now")
      ->callback([&] { method = "POST"; path = "/api/v1/licenses/update-status"; });
  auto* imp = lic->add_subcommand("import", "import a signed license file from the vendor (offline sites)");
  imp->add_option("file", file, "the license file (postern-license-server --export-license)")
      ->required()->check(CLI::ExistingFile);
  imp->callback([&] {
    std::ifstream in(file, std::ios::binary);
    std::string text(64 * 1024 + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
    if (!in.eof() || text.size() > 64 * 1024) throw CLI::ValidationError("file", file + ": too large for a license file");
    method = "POST";
    path = "/api/v1/licenses/import";
    body = text;
  });
  lic->add_subcommand("hide-optional", "hide the notices of optional licenses that are not activated")
      ->callback([&] { method = "POST"; path = "/api/v1/licenses/hide-optional"; });
  lic->add_subcommand("show-optional", "show them again")
      ->callback([&] { method = "POST"; path = "/api/v1/licenses/show-optional"; });
}

bool print_license(const std::string& path, const json& j) {
  if (path.rfind("/api/v1/licenses", 0) != 0) return false;
  if (path == "/api/v1/licenses") print_list(j);
  else if (j.contains("message")) std::printf("%s\n", field(j, "message").c_str());
  else if (j.contains("activated"))
    std::printf("%s activated: %s, expires %s\n", field(j, "activated").c_str(), field(j, "code").c_str(),
                field(j, "expires").c_str());
  else if (j.contains("imported"))
    std::printf("%s license imported: %s, expires %s\n", field(j, "imported").c_str(), field(j, "code").c_str(),
                field(j, "expires").c_str());
  else if (j.contains("hide_optional"))
    std::printf("notices of optional licenses that are not activated: %s\n",
                j.value("hide_optional", false) ? "hidden" : "shown");
  else std::cout << j.dump(2) << "\n";
  return true;
}

}  // namespace postern::ctl
