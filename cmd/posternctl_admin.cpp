// posternctl_admin.cpp — see posternctl_admin.h.
#include "cmd/posternctl_admin.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

namespace postern::ctl {
using nlohmann::json;

namespace {

// The first line (without CR/LF), at most 1024 bytes and one more to notice a longer one.
bool first_line(std::istream& in, std::string& out) {
  out.clear();
  char c;
  while (out.size() <= 1024 && in.get(c) && c != '\n') out.push_back(c);
  if (!out.empty() && out.back() == '\r') out.pop_back();
  return !out.empty() || static_cast<bool>(in);
}

}  // namespace

void add_admin_commands(CLI::App& app, std::string& method, std::string& path, std::string& body) {
  auto* admin = app.add_subcommand("admin", "the admin dashboard");
  auto* sp = admin->add_subcommand("set-password",
                                   "set the dashboard's password (first line of --password-file, else of stdin)");
  static std::string file;
  sp->add_option("--password-file", file, "a file whose first line is the password")->check(CLI::ExistingFile);
  sp->callback([&] {
    std::string pw;
    if (!file.empty()) {
      std::ifstream in(file);
      if (!in || !first_line(in, pw)) throw CLI::ValidationError("--password-file", "cannot read " + file);
    } else {
      if (isatty(STDIN_FILENO)) std::fprintf(stderr, "password (the first line of stdin): ");
      first_line(std::cin, pw);
    }
    if (pw.size() < 8) throw CLI::ValidationError("password", "the password must have at least 8 characters");
    if (pw.size() > 1024) throw CLI::ValidationError("password", "the password may have at most 1024 bytes");
    method = "POST";
    path = "/api/v1/admin/password";
    body = json{{"password", pw}}.dump(-1, ' ', false, json::error_handler_t::replace);
  });
}

bool print_admin(const std::string& path, const json&) {
  if (path != "/api/v1/admin/password") return false;
  std::printf("the admin password is set (every node on this database uses it; dashboard sessions ended)\n");
  return true;
}

}  // namespace postern::ctl
