// posternctl_cert.h — posternctl's HTTPS client for the admin API (shared with posternctl_main)
// and its `cert` verbs (the certificate store, admin/cert_api.h).
// Security-sensitive: how the admin console is verified: --cacert if given; else the public
// keys in <state_dir>/admin-trust.pem (rewritten by posternd on every admin-console assign) are
// pinned; when they do not match (or there is no trust file) the system store verifies, so a
// CA-signed console certificate works. Passwords come from files, never the command line.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace postern::ctl {

struct Conn {
  std::string base, token;
  std::string cacert;     // --cacert ("" = the trust file, then the system store)
  std::string state_dir;  // for admin-trust.pem and the legacy certs/default_console.crt
  bool insecure = false;
};

// One request: body (JSON) is sent with POST. Returns the HTTP status, 0 on a transport failure
// (the reason in out).
long call(const Conn& c, const std::string& method, const std::string& path, const std::string& body, std::string& out);

struct CertCommands;
// Registers `cert ...` on app. The object lives as long as the process.
CertCommands* add_cert_commands(CLI::App& app);
bool chosen(const CertCommands* cc);
// Runs the chosen verb: 0 done, 1 refused (the reason on stderr), 2 a usage error.
int run(CertCommands* cc, const Conn& c, bool as_json);

}  // namespace postern::ctl
