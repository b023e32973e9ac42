// posternctl_quarantine.cpp — see posternctl_quarantine.h. IDs are letters and digits (checked
// here too, so an ID can never change which endpoint is called); filters are URL-encoded.
#include "cmd/posternctl_quarantine.h"

#include <cctype>
#include <cstdio>
#include <iostream>

namespace postern::ctl {
using nlohmann::json;

namespace {

std::string field(const json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || j[k].is_null()) return "-";
  return j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
}

std::string urlenc(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string o;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '@') o += static_cast<char>(c);
    else {
      o += '%';
      o += hex[c >> 4];
      o += hex[c & 15];
    }
  }
  return o;
}

const CLI::Validator kQueueId(
    [](std::string& s) {
      bool ok = !s.empty() && s.size() <= 64;
      for (unsigned char c : s) ok = ok && std::isalnum(c);
      return ok ? std::string() : std::string("a quarantine ID is letters and digits");
    },
    "ID");

std::string rcpts(const json& e) {
  std::string o;
  if (e.contains("recipients") && e["recipients"].is_array())
    for (auto& r : e["recipients"]) o += (o.empty() ? "" : ",") + (r.is_string() ? r.get<std::string>() : r.dump());
  return o.empty() ? "-" : o;
}

}  // namespace

void add_quarantine_commands(CLI::App& app, std::string& method, std::string& path) {
  auto* q = app.add_subcommand("quarantine", "messages the scanning gate quarantined");
  static std::string id, rcpt, sender, signature;
  auto* list = q->add_subcommand("list", "quarantined messages (filters match substrings, any case)");
  list->add_option("--rcpt", rcpt, "a recipient contains this");
  list->add_option("--sender", sender, "the sender contains this");
  list->add_option("--signature", signature, "the signature name contains this");
  list->callback([&] {
    method = "GET";
    path = "/api/v1/quarantine";
    std::string qs;
    for (auto [k, v] : {std::pair{"rcpt", &rcpt}, std::pair{"sender", &sender}, std::pair{"signature", &signature}})
      if (!v->empty()) qs += std::string(qs.empty() ? "?" : "&") + k + "=" + urlenc(*v);
    path += qs;
  });
  auto* show = q->add_subcommand("show", "one quarantined message with its header section");
  show->add_option("id", id, "the quarantine ID (its queue ID)")->required()->check(kQueueId);
  show->callback([&] { method = "GET"; path = "/api/v1/quarantine/" + id; });
  auto* rel = q->add_subcommand("release", "back into the active queue and delivered (the scan header says so)");
  rel->add_option("id", id, "the quarantine ID")->required()->check(kQueueId);
  rel->callback([&] { method = "POST"; path = "/api/v1/quarantine/" + id + "/release"; });
  auto* del = q->add_subcommand("delete", "delete a quarantined message");
  del->add_option("id", id, "the quarantine ID")->required()->check(kQueueId);
  del->callback([&] { method = "DELETE"; path = "/api/v1/quarantine/" + id; });
}

bool print_quarantine(const std::string& method, const std::string& path, const json& j) {
  if (path.rfind("/api/v1/quarantine", 0) != 0) return false;
  if (j.is_object() && j.contains("entries") && j["entries"].is_array()) {
    std::printf("%-16s %-20s %-30s %-30s %-32s %8s\n", "ID", "RECEIVED", "SENDER", "RECIPIENTS", "SIGNATURE", "SIZE");
    for (auto& e : j["entries"])
      std::printf("%-16s %-20s %-30s %-30s %-32s %8s\n", field(e, "id").c_str(), field(e, "received_at").c_str(),
                  field(e, "sender").c_str(), rcpts(e).c_str(), field(e, "signature").c_str(), field(e, "size").c_str());
    std::printf("%zu quarantined%s\n", j["entries"].size(),
                field(j, "index_pending") != "0" && field(j, "index_pending") != "-"
                    ? (", " + field(j, "index_pending") + " not yet in the database index").c_str() : "");
    return true;
  }
  if (method == "GET" && j.is_object() && j.contains("id")) {
    for (auto k : {"id", "received_at", "sender", "signature", "size", "client_ip", "subject"})
      std::printf("%-12s %s\n", k, field(j, k).c_str());
    std::printf("%-12s %s\n\n%s", "recipients", rcpts(j).c_str(), field(j, "headers").c_str());
    return true;
  }
  if (j.is_object() && j.contains("released")) return std::printf("released %s\n", field(j, "released").c_str()), true;
  if (j.is_object() && j.contains("deleted")) return std::printf("deleted %s\n", field(j, "deleted").c_str()), true;
  return false;
}

}  // namespace postern::ctl
