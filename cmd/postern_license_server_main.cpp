// postern-license-server — the vendor's license server, and its key and offline-file tools:
//   --listen HOST:PORT --db FILE --key FILE    answer activation and status requests over HTTP
//   --export-license CODE --db FILE --key FILE --out FILE   the signed license file for an
//                                              offline site (posternctl license import FILE)
//   --gen-key --key FILE --public-key FILE     a new Ed25519 key pair (private key 0600)
// Protocol (README "Licensing"): POST /v1/activate {"code", "license"} and POST /v1/status
// {"code"} answer 200 with a signed record (licensing/license_record.h) or 4xx {"error"}; the
// database file is re-read for every request, so a renewal by postern-issue-code is served at
// once. Security-sensitive: the private key (read once, never logged); request bodies are
// bounded by the HTTP server (64 KiB) and parsed without exceptions; codes in log lines go
// through esc().
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/log.h"
#include "http/http_server.h"
#include "licensing/activation_code.h"
#include "licensing/license_record.h"
#include "licensing/vendor_db.h"

namespace lic = postern::licensing;
namespace http = postern::http;
using nlohmann::json;

namespace {

int fail(const std::string& why, int rc = 1) {
  std::cerr << "postern-license-server: " << why << "\n";
  return rc;
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

// Writes FILE atomically with `mode`.
bool write_file(const std::string& path, const std::string& text, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

lic::Key load_key(const std::string& path, std::string& err) {
  std::string pem;
  if (!read_file(path, pem)) return err = "cannot read the key " + path, nullptr;
  auto k = lic::private_key_from_pem(pem, err);
  if (!k) err = path + ": " + err;
  return k;
}

// The signed record for an issued code, or "" with why.
std::string signed_for(const std::string& db_path, const std::string& code, EVP_PKEY* key, int& status,
                       std::string& why) {
  lic::VendorDb db;
  if (auto e = lic::VendorDb::load(db_path, db); !e.empty()) return status = 500, why = e, "";
  auto it = db.codes.find(code);
  if (it == db.codes.end()) return status = 404, why = "unknown activation code", "";
  lic::LicenseRecord r;
  r.code = code;
  r.kind = it->second.kind;
  r.expires = it->second.expires;
  r.serial = it->second.serial;
  r.issued_at = it->second.issued_at;
  r.signed_at = static_cast<int64_t>(std::time(nullptr));
  std::string doc = lic::sign_record(r, key, why);
  if (doc.empty()) status = 500;
  return doc;
}

struct Server {
  std::string db;
  lic::Key key;
};

http::Response answer(Server& s, const http::Request& req) {
  bool activate = req.path == "/v1/activate", status_q = req.path == "/v1/status";
  if (req.path == "/v1/health") return http::json_response(200, R"({"status":"ok"})");
  if (!activate && !status_q) return http::json_error(404, "no such endpoint");
  if (req.method != "POST") return http::json_error(405, "method not allowed");
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("code") || !j["code"].is_string())
    return http::json_error(400, "the body must be a JSON object with \"code\"");
  auto code = lic::parse_code(j["code"].get<std::string>());
  if (!code) return http::json_error(400, lic::kCodeRefused);
  if (activate) {
    auto k = lic::kind_from_cli(j.contains("license") && j["license"].is_string() ? j["license"].get<std::string>() : "");
    if (!k || !lic::code_fits(*k, code->prefix, code->kind)) return http::json_error(409, lic::kCodeRefused);
  }
  int status = 200;
  std::string why, doc = signed_for(s.db, code->text, s.key.get(), status, why);
  spdlog::info("license server: {} code={} peer={} status={}{}", activate ? "activate" : "status", code->text,
               req.peer_ip, status, why.empty() ? "" : " why=" + postern::esc(why));
  if (doc.empty()) return http::json_error(status, status == 404 ? lic::kCodeRefused : why);
  return http::json_response(200, doc);
}

int serve(const std::string& listen, const std::string& db, const std::string& key_path) {
  Server s;
  s.db = db;
  std::string err;
  s.key = load_key(key_path, err);
  if (!s.key) return fail(err);
  lic::VendorDb check;
  if (auto e = lic::VendorDb::load(db, check); !e.empty()) return fail(e);
  postern::ListenAddr a;
  if (!postern::parse_listen(listen, a)) return fail("--listen must be HOST:PORT, not '" + listen + "'", 2);
  uv_loop_t* loop = uv_default_loop();
  http::ServerOptions o;
  o.name = "license server";
  o.plain = true;
  o.limits.max_body_size = 64 * 1024;
  o.handler = [&s](const http::Request& r, http::Responder respond) { respond(answer(s, r)); };
  auto server = std::make_unique<http::HttpServer>(loop, std::move(o));
  try {
    server->listen(a.host, a.port);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  static http::HttpServer* g_server = server.get();
  uv_signal_t term, intr;
  for (auto [h, sig] : {std::pair{&term, SIGTERM}, std::pair{&intr, SIGINT}}) {
    uv_signal_init(loop, h);
    uv_signal_start(h, [](uv_signal_t* sh, int) {
      g_server->close();
      uv_stop(sh->loop);
    }, sig);
  }
  spdlog::info("license server: listening on http://{}:{} db={}", a.host, a.port, db);
  std::cout << "postern-license-server: listening on http://" << a.host << ":" << a.port << std::endl;
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}

int export_license(const std::string& code_in, const std::string& db, const std::string& key_path,
                   const std::string& out) {
  auto code = lic::parse_code(code_in);
  if (!code) return fail(lic::kCodeRefused);
  std::string err;
  auto key = load_key(key_path, err);
  if (!key) return fail(err);
  int status = 200;
  std::string doc = signed_for(db, code->text, key.get(), status, err);
  if (doc.empty()) return fail(err + ": " + code->text);
  if (!write_file(out, doc + "\n", 0644)) return fail("cannot write " + out);
  std::cout << "signed license for " << code->text << " written to " << out << "\n";
  return 0;
}

int gen_key(const std::string& key_path, const std::string& pub_path) {
  std::string err;
  auto k = lic::generate_key(err);
  if (!k) return fail(err);
  if (::access(key_path.c_str(), F_OK) == 0) return fail(key_path + " exists: refusing to overwrite a key");
  if (!write_file(key_path, lic::private_key_pem(k.get()), 0600)) return fail("cannot write " + key_path);
  if (!write_file(pub_path, lic::public_key_pem(k.get()), 0644)) return fail("cannot write " + pub_path);
  std::cout << "Ed25519 key pair: private " << key_path << ", public " << pub_path
            << " (give the public key to posternd as license.public_key_file)\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"postern-license-server - the vendor's license server (signed license records over HTTP)"};
  std::string listen, db, key, pub, out, export_code;
  bool gen = false;
  app.add_option("--listen", listen, "HOST:PORT to serve on");
  app.add_option("--db", db, "database file written by postern-issue-code");
  app.add_option("--key", key, "Ed25519 private key (PEM)");
  app.add_flag("--gen-key", gen, "write a new key pair to --key and --public-key");
  app.add_option("--public-key", pub, "where --gen-key writes the public key");
  app.add_option("--export-license", export_code, "write the signed license file for CODE to --out");
  app.add_option("--out", out, "output file for --export-license");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  signal(SIGPIPE, SIG_IGN);
  try {
    if (gen) return key.empty() || pub.empty() ? fail("--gen-key needs --key and --public-key", 2) : gen_key(key, pub);
    if (!export_code.empty())
      return db.empty() || key.empty() || out.empty() ? fail("--export-license needs --db, --key and --out", 2)
                                                      : export_license(export_code, db, key, out);
    if (listen.empty() || db.empty() || key.empty()) return fail("--listen, --db and --key are required", 2);
    return serve(listen, db, key);
  } catch (const std::exception& e) {
    return fail(std::string("fatal: ") + e.what());
  }
}
