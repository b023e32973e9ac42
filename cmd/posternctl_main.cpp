// posternctl — the admin command line. Speaks HTTPS to posternd's admin API, with the URL from
// the config and the bearer token from the state directory; verifies the server against the
// admin-console certificate in the state directory (or --cacert). Human tables by default,
// --json for scripts. Exit status: 0 done, 1 refused or failed (the HTTP status and the reason
// on stderr), 2 a usage or configuration error. No input, from the command line or the server,
// ends it with an uncaught exception.
#include <curl/curl.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cmd/posternctl_license.h"
#include "cmd/posternctl_patterns.h"
#include "cmd/posternctl_admin.h"
#include "cmd/posternctl_quarantine.h"
#include "cmd/posternctl_cert.h"
#include "conf/config.h"

using nlohmann::json;

namespace {

struct Client {
  std::string base, token, cacert, state_dir;
  std::string request_body;  // JSON sent with POST ("" = none)
  bool insecure = false;

  // Returns the HTTP status (0 on transport failure, with the reason in body). How the server
  // is verified: posternctl_cert.h.
  long call(const std::string& method, const std::string& path, std::string& body) {
    return postern::ctl::call({base, token, cacert, state_dir, insecure}, method, path, request_body, body);
  }
};

std::string when(int64_t t) {
  if (t <= 0) return "now";
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// Field readers that never throw: a missing field or one of another type reads as empty/0, so
// an unexpected answer prints oddly instead of aborting.
std::string str(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const json& v = j[key];
  return v.is_string() ? v.get<std::string>() : v.is_null() ? "" : v.dump();
}
int64_t num(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<int64_t>();
}
bool flag(const json& j, const char* key) { return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>(); }
const json& list(const json& j, const char* key) {
  static const json empty = json::array();
  return j.is_object() && j.contains(key) && j[key].is_array() ? j[key] : empty;
}

void print_queue(const json& q, bool header = true) {
  if (header)
    std::printf("%-16s %8s %4s %-5s %-19s %-30s %s\n", "QUEUE ID", "SIZE", "TRY", "HELD", "NEXT ATTEMPT", "SENDER",
                "RECIPIENTS (pending)");
  for (auto& m : q) {
    int pending = 0;
    std::string first;
    for (auto& r : list(m, "recipients"))
      if (str(r, "state") == "pending" && !pending++) first = str(r, "address");
    std::string from = str(m, "from");
    std::printf("%-16s %8lld %4lld %-5s %-19s %-30s %d %s\n", str(m, "queue_id").c_str(),
                static_cast<long long>(num(m, "size")), static_cast<long long>(num(m, "attempts")),
                flag(m, "held") ? "yes" : "no", when(num(m, "next_attempt")).c_str(), from.empty() ? "<>" : from.c_str(),
                pending, first.c_str());
  }
}

void print_message(const json& m) {
  std::printf("queue id:   %s\nsender:     <%s>\nreceived:   %s\nsize:       %lld\nattempts:   %lld\nheld:       %s\n"
              "next:       %s\n",
              str(m, "queue_id").c_str(), str(m, "from").c_str(), when(num(m, "received_at")).c_str(),
              static_cast<long long>(num(m, "size")), static_cast<long long>(num(m, "attempts")),
              flag(m, "held") ? "yes" : "no", when(num(m, "next_attempt")).c_str());
  for (auto& r : list(m, "recipients"))
    std::printf("  %-9s <%s> %s %s\n", str(r, "state").c_str(), str(r, "address").c_str(), str(r, "status").c_str(),
                str(r, "diag").c_str());
}

void print_events(const json& ev) {
  std::printf("%-20s %-22s %-8s %-24s %-16s %s\n", "TIME (UTC)", "NODE", "SEVERITY", "CODE", "QUEUE ID", "TEXT");
  for (auto& e : ev)
    std::printf("%-20s %-22s %-8s %-24s %-16s %s\n", str(e, "at").c_str(), str(e, "node").c_str(),
                str(e, "severity").c_str(), str(e, "code").c_str(), str(e, "queue_id").c_str(), str(e, "text").c_str());
}

void print_roles(const json& roles) {
  std::printf("%-14s %-18s %-14s %-22s %-4s %s\n", "ROLE", "CERTIFICATE", "KEY", "NOT AFTER", "GEN", "SHA-256");
  for (auto& r : roles) {
    if (str(r, "certificate").empty()) {
      std::printf("%-14s %-18s\n", str(r, "role").c_str(), "(none)");
    } else {
      const json& certs = list(r, "certificates");
      if (certs.empty())
        std::printf("%-14s %-18s %-14s %-22s %-4lld %s\n", str(r, "role").c_str(), str(r, "certificate").c_str(), "",
                    str(r, "not_after").c_str(), static_cast<long long>(num(r, "generation")),
                    str(r, "fingerprint").c_str());
      for (auto& c : certs)
        std::printf("%-14s %-18s %-14s %-22s %-4lld %s\n", str(r, "role").c_str(), str(r, "certificate").c_str(),
                    str(c, "key_type").c_str(), str(c, "not_after").c_str(), static_cast<long long>(num(r, "generation")),
                    str(c, "fingerprint").c_str());
    }
    if (!str(r, "last_error").empty())
      std::printf("%-14s last reload refused: %s\n", "", str(r, "last_error").c_str());
  }
}

void print_result(const std::string& method, const std::string& path, const json& j) {
  if (postern::ctl::print_license(path, j)) return;
  if (postern::ctl::print_patterns(path, j)) return;
  if (postern::ctl::print_admin(path, j)) return;
  if (postern::ctl::print_quarantine(method, path, j)) return;
  if (path == "/api/v1/queue" && j.is_array()) print_queue(j);
  else if (path.rfind("/api/v1/queue/", 0) == 0 && method == "GET" && j.is_object()) print_message(j);
  else if ((path.rfind("/api/v1/events", 0) == 0 || path == "/api/v1/alerts") && j.is_array()) print_events(j);
  else if (path == "/api/v1/roles" && j.is_array()) print_roles(j);
  else if (path == "/api/v1/reload") std::printf("reloaded on node %s\n", str(j, "node").c_str());
  else if (path == "/api/v1/tls/flush-tickets")
    std::printf("session-ticket keys flushed on node %s (and asked of the other nodes)\n", str(j, "node").c_str());
  else std::cout << j.dump(2) << "\n";
}

// Queue IDs are letters and digits: an empty, "/" or "?" one would change which endpoint is called.
int refused(long status, const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  std::string why = !j.is_discarded() && j.is_object() && j.contains("error") ? str(j, "error") : body;
  std::cerr << "posternctl: " << (status ? std::to_string(status) + " " : "") << why << "\n";
  return 1;
}

// queue list: GET /api/v1/queue page by page (--all follows next_after to the end; each request
// stays bounded). Without --all, where the next page starts goes to stderr.
int queue_list(Client& cl, size_t limit, std::string after, bool all, bool as_json) {
  json merged = json::array();
  int64_t total = 0;
  bool header = true;
  for (int pages = 0; pages < 1'000'000; ++pages) {
    std::string body, path = "/api/v1/queue?limit=" + std::to_string(limit);
    if (!after.empty()) path += "&after=" + after;
    long status = cl.call("GET", path, body);
    if (status < 200 || status > 299) return refused(status, body);
    auto j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("messages")) return refused(0, "unexpected answer: " + body);
    total = num(j, "total");
    std::string next = str(j, "next_after");
    if (as_json && !all) {
      std::cout << j.dump(2) << "\n";
    } else if (as_json) {
      for (auto& m : list(j, "messages")) merged.push_back(m);
    } else {
      print_queue(list(j, "messages"), header);
      header = false;
    }
    if (next.empty() || next == after) break;
    if (!all) {
      std::cerr << "posternctl: " << total << " messages in the queue; next page: posternctl queue list --after "
                << next << (limit != 100 ? " --limit " + std::to_string(limit) : "") << "\n";
      break;
    }
    after = next;
  }
  if (as_json && all) std::cout << json{{"total", total}, {"messages", merged}}.dump(2) << "\n";
  return 0;
}

std::string check_queue_id(const std::string& id) {
  if (id.empty()) return "a queue ID is required (see: posternctl queue list)";
  if (id.size() > 64 || !std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isalnum(c) != 0; }))
    return "bad queue ID '" + id + "': letters and digits only";
  return "";
}

// "A subcommand is required" says nothing useful: name the commands there are.
std::string missing_command(CLI::App& app) {
  CLI::App* a = &app;
  while (!a->get_subcommands().empty()) a = a->get_subcommands().front();
  auto all = a->get_subcommands([](CLI::App*) { return true; });
  if (all.empty()) return "";
  std::string names;
  for (auto* sc : all) names += (names.empty() ? "" : ", ") + sc->get_name();
  return (a == &app ? std::string("a command is required: ") : "'" + a->get_name() + "' needs one of: ") + names +
         " (--help for more)";
}

int run(int argc, char** argv) {
  CLI::App app{"posternctl - administer a running posternd through its admin API"};
  std::string config = "conf/postern.toml", url, token_file, cacert;
  bool as_json = false, insecure = false;
  app.add_option("-c,--config", config, "posternd's configuration (admin.listen, server.state_dir)")->capture_default_str();
  app.add_flag("--json", as_json, "print the API's JSON");
  app.add_option("--url", url, "admin API base URL (default: https://<admin.listen>)");
  app.add_option("--token-file", token_file, "bearer token file (default: <state_dir>/admin.token)");
  app.add_option("--cacert", cacert, "CA/certificate to verify the server (default: pin the keys in <state_dir>/admin-trust.pem, "
                 "else the system store)");
  app.add_flag("-k,--insecure", insecure, "do not verify the server certificate");
  app.set_version_flag("--version", std::string("posternctl ") + POSTERN_VERSION);
  app.require_subcommand(0, 1);
  CLI::Validator queue_id(check_queue_id, "QUEUE_ID", "queue ID");

  std::string method, path, request_body;
  auto* queue = app.add_subcommand("queue", "the mail queue");
  std::string qid;
  size_t qlimit = 100;
  std::string qafter;
  bool qall = false;
  auto* qlist = queue->add_subcommand("list", "messages in the queue, oldest first, one page at a time");
  qlist->add_option("--limit", qlimit, "messages per page (1-1000)")->capture_default_str()->check(CLI::Range(1, 1000));
  qlist->add_option("--after", qafter, "start after this queue ID (the last one of the previous page)")->check(queue_id);
  qlist->add_flag("--all", qall, "follow the pages to the end of the queue");
  qlist->callback([&] { method = "GET"; path = "/api/v1/queue"; });
  auto* show = queue->add_subcommand("show", "one message");
  show->add_option("queue_id", qid)->required()->check(queue_id);
  show->callback([&] { method = "GET"; path = "/api/v1/queue/" + qid; });
  auto* flush = queue->add_subcommand("flush", "retry now (one message, or all deferred)");
  flush->add_option("queue_id", qid)->check(queue_id);
  flush->callback([&] { method = "POST"; path = qid.empty() ? "/api/v1/queue/flush" : "/api/v1/queue/" + qid + "/flush"; });
  for (auto act : {"delete", "hold", "release"}) {
    auto* sc = queue->add_subcommand(act, std::string(act) + " a message");
    sc->add_option("queue_id", qid)->required()->check(queue_id);
    sc->callback([&, act] {
      method = std::string(act) == "delete" ? "DELETE" : "POST";
      path = "/api/v1/queue/" + qid + (std::string(act) == "delete" ? "" : "/" + std::string(act));
    });
  }
  auto* role = app.add_subcommand("role", "certificate roles");
  role->add_subcommand("list", "what certificate each role serves")->callback([&] { method = "GET"; path = "/api/v1/roles"; });
  int limit = 50;
  auto* events = app.add_subcommand("events", "recent events");
  events->add_option("--limit", limit, "how many")->capture_default_str();
  events->callback([&] { method = "GET"; path = "/api/v1/events?limit=" + std::to_string(limit); });
  app.add_subcommand("alerts", "problems that are still true")->callback([&] { method = "GET"; path = "/api/v1/alerts"; });
  app.add_subcommand("reload", "re-read config and certificates on this node (and tell the others)")
      ->callback([&] { method = "POST"; path = "/api/v1/reload"; });
  app.add_subcommand("status", "health of the node")->callback([&] { method = "GET"; path = "/api/v1/health"; });
  auto* tls = app.add_subcommand("tls", "TLS session state");
  tls->add_subcommand("flush-tickets", "new session-ticket keys, old ones dropped: no TLS session is resumed "
                                       "(after a key was replaced for cause; on every node)")
      ->callback([&] { method = "POST"; path = "/api/v1/tls/flush-tickets"; });
  postern::ctl::add_license_commands(app, method, path, request_body);
  postern::ctl::add_patterns_commands(app, method, path, request_body);
  postern::ctl::add_admin_commands(app, method, path, request_body);
  postern::ctl::add_quarantine_commands(app, method, path);
  auto* cert_cmds = postern::ctl::add_cert_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "posternctl: " << e.what() << "\n";
    if (auto hint = missing_command(app); !hint.empty()) std::cerr << "posternctl: " << hint << "\n";
    return 2;
  }
  if (method.empty() && !postern::ctl::chosen(cert_cmds)) {
    std::cerr << "posternctl: " << missing_command(app) << "\n";
    return 2;
  }

  Client cl;
  try {
    postern::Config cfg = postern::load_config(config);
    cl.base = url.empty() ? "https://" + cfg.admin_listen : url;
    if (token_file.empty()) token_file = cfg.state_dir + "/admin.token";
    cl.cacert = cacert;
    cl.state_dir = cfg.state_dir;
  } catch (const postern::ConfigError& e) {
    if (url.empty() || token_file.empty()) {
      std::cerr << "posternctl: " << e.what() << "\n";
      return 2;
    }
    cl.base = url;
    cl.cacert = cacert;
  }
  cl.insecure = insecure;
  cl.request_body = request_body;
  std::ifstream tf(token_file);
  if (!(tf >> cl.token)) {
    std::cerr << "posternctl: cannot read the admin token from " << token_file << "\n";
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (postern::ctl::chosen(cert_cmds)) {
    int rc = postern::ctl::run(cert_cmds, {cl.base, cl.token, cl.cacert, cl.state_dir, cl.insecure}, as_json);
    curl_global_cleanup();
    return rc;
  }
  if (path == "/api/v1/queue") {
    int rc = queue_list(cl, qlimit, qafter, qall, as_json);
    curl_global_cleanup();
    return rc;
  }
  std::string body;
  long status = cl.call(method, path, body);
  curl_global_cleanup();
  if (status < 200 || status > 299) {
    auto j = json::parse(body, nullptr, false);
    std::string why = !j.is_discarded() && j.is_object() && j.contains("error") ? str(j, "error") : body;
    std::cerr << "posternctl: " << (status ? std::to_string(status) + " " : "") << why << "\n";
    return 1;
  }
  auto j = json::parse(body, nullptr, false);
  if (as_json || j.is_discarded()) {
    std::cout << (j.is_discarded() ? body : j.dump(2)) << "\n";
    return 0;
  }
  print_result(method, path, j);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a bug: still a message and a plain failure, never abort()
    std::cerr << "posternctl: internal error: " << e.what() << "\n";
    return 1;
  }
}
