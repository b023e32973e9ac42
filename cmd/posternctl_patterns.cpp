// posternctl_patterns.cpp — see posternctl_patterns.h. import-bundle reads the bundle file
// (bounded to 256 MiB here; the daemon applies updates.max_bundle_size and admin.max_body_size)
// and sends it as it is: the daemon unpacks and verifies it.
#include "cmd/posternctl_patterns.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>

namespace postern::ctl {
using nlohmann::json;

namespace {

std::string field(const json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || j[k].is_null()) return "-";
  return j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
}

std::string utc(const json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || !j[k].is_number()) return "-";
  std::time_t t = j[k].get<std::time_t>();
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

void print_status(const json& j) {
  const json& in = j.contains("installed") ? j["installed"] : json();
  if (in.is_object()) {
    long long age = in.value("age_seconds", 0LL);
    std::printf("installed:   version %s, issued %s (age %lldd %lldh)\n", field(in, "version").c_str(),
                utc(in, "issued_at").c_str(), age / 86400, (age % 86400) / 3600);
    std::printf("signer:      %s, expires %s (%s days)\n", field(in, "signer").c_str(), utc(in, "signer_not_after").c_str(),
                field(in, "signer_days_left").c_str());
  } else {
    std::printf("installed:   none\n");
  }
  std::printf("updates:     %s%s\n", j.value("updates_allowed", false) ? "allowed" : "REFUSED by the antivirus license",
              j.value("stale", false) ? " (patterns are stale)" : "");
  std::printf("server:      %s (every %ss)\n", field(j, "server").c_str(), field(j, "interval_seconds").c_str());
  std::printf("last check:  %s, last success %s\n", utc(j, "last_check").c_str(), utc(j, "last_success").c_str());
  std::printf("last result: %s\n", field(j, "last_result").c_str());
  if (j.contains("engine") && j["engine"].is_object())
    std::printf("engine:      %s%s%s\n", j["engine"].value("loaded", false) ? "loaded" : "not loaded",
                field(j["engine"], "error") == "-" ? "" : ": ", field(j["engine"], "error") == "-" ? "" : field(j["engine"], "error").c_str());
  if (field(j, "signer_alert") != "-") std::printf("alert:       %s\n", field(j, "signer_alert").c_str());
}

}  // namespace

void add_patterns_commands(CLI::App& app, std::string& method, std::string& path, std::string& body) {
  auto* pat = app.add_subcommand("patterns", "pattern bundles: status, update, offline import");
  pat->add_subcommand("status", "installed version, age, signer and its expiry, last check and result")
      ->callback([&] { method = "GET"; path = "/api/v1/patterns"; });
  pat->add_subcommand("update", "check the update server (or relay) now and install what it has")
      ->callback([&] { method = "POST"; path = "/api/v1/patterns/update"; });
  auto* imp = pat->add_subcommand("import-bundle", "install an offline bundle file (postern-bundle build)");
  static std::string file;
  imp->add_option("file", file, "the bundle file")->required()->check(CLI::ExistingFile);
  imp->callback([&] {
    constexpr size_t kMax = 256u << 20;
    std::ifstream in(file, std::ios::binary);
    std::string data(kMax + 1, '\0');
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    data.resize(static_cast<size_t>(in.gcount()));
    if (data.size() > kMax) throw CLI::ValidationError("file", file + ": larger than 256 MiB");
    method = "POST";
    path = "/api/v1/patterns/import";
    body = std::move(data);
  });
}

bool print_patterns(const std::string& path, const json& j) {
  if (path.rfind("/api/v1/patterns", 0) != 0) return false;
  if (path == "/api/v1/patterns") return print_status(j), true;
  std::printf("%s%s\n", field(j, "result").c_str(),
              j.contains("installed") ? (": version " + field(j, "installed")).c_str() : "");
  if (j.contains("status")) print_status(j["status"]);
  return true;
}

}  // namespace postern::ctl
