// posternctl_cert.cpp — see posternctl_cert.h.
#include "cmd/posternctl_cert.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

namespace postern::ctl {
using nlohmann::json;

namespace {

constexpr size_t kMaxFile = 1 << 20;

// "sha256//<base64>;..." for every certificate in `file` ("" if none).
std::string pins_from(const std::string& file) {
  FILE* f = std::fopen(file.c_str(), "r");
  if (!f) return "";
  std::string pins;
  while (X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr)) {
    unsigned char* der = nullptr;
    int len = i2d_PUBKEY(X509_get0_pubkey(x), &der);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (len > 0 && EVP_Digest(der, static_cast<size_t>(len), md, &n, EVP_sha256(), nullptr) == 1) {
      unsigned char b64[128] = {};
      EVP_EncodeBlock(b64, md, static_cast<int>(n));
      pins += (pins.empty() ? "sha256//" : ";sha256//") + std::string(reinterpret_cast<char*>(b64));
    }
    OPENSSL_free(der);
    X509_free(x);
  }
  std::fclose(f);
  return pins;
}

enum class Trust { kInsecure, kCaFile, kPinned, kSystem };

long perform(const Conn& c, Trust t, const std::string& ca_or_pins, const std::string& method, const std::string& path,
             const std::string& body, std::string& out, CURLcode& rc) {
  CURL* h = curl_easy_init();
  out.clear();
  if (!h) {
    out = "cannot initialise libcurl";
    rc = CURLE_FAILED_INIT;
    return 0;
  }
  std::string url = c.base + path;
  curl_slist* hdr = curl_slist_append(nullptr, ("Authorization: Bearer " + c.token).c_str());
  if (!body.empty()) hdr = curl_slist_append(hdr, "Content-Type: application/json");
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "POST") {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 120L);
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  if (t == Trust::kInsecure || t == Trust::kPinned) {
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    if (t == Trust::kPinned) curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, ca_or_pins.c_str());
  } else if (t == Trust::kCaFile) {
    curl_easy_setopt(h, CURLOPT_CAINFO, ca_or_pins.c_str());
  }
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, +[](char* p, size_t s, size_t n, void* u) {
    auto* o = static_cast<std::string*>(u);
    if (o->size() + s * n > 64 * kMaxFile) return size_t{0};
    o->append(p, s * n);
    return s * n;
  });
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
  rc = curl_easy_perform(h);
  long status = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  else out = std::string("cannot reach ") + url + ": " + curl_easy_strerror(rc);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  return status;
}

bool tls_refusal(CURLcode rc) {
  return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH || rc == CURLE_SSL_CACERT_BADFILE;
}

}  // namespace

long call(const Conn& c, const std::string& method, const std::string& path, const std::string& body, std::string& out) {
  CURLcode rc = CURLE_OK;
  if (c.insecure) return perform(c, Trust::kInsecure, "", method, path, body, out, rc);
  if (!c.cacert.empty()) return perform(c, Trust::kCaFile, c.cacert, method, path, body, out, rc);
  // The store's trust file (the admin console's current certificates), then the certificate
  // of older releases, then the system store (a CA-signed console).
  std::string pins = c.state_dir.empty() ? "" : pins_from(c.state_dir + "/admin-trust.pem");
  std::string legacy = c.state_dir + "/certs/default_console.crt";
  long status = 0;
  if (!pins.empty()) status = perform(c, Trust::kPinned, pins, method, path, body, out, rc);
  else if (!c.state_dir.empty() && std::filesystem::exists(legacy))
    status = perform(c, Trust::kCaFile, legacy, method, path, body, out, rc);
  else return perform(c, Trust::kSystem, "", method, path, body, out, rc);
  if (rc == CURLE_OK || !tls_refusal(rc)) return status;
  std::string first = out;
  status = perform(c, Trust::kSystem, "", method, path, body, out, rc);
  if (rc != CURLE_OK && tls_refusal(rc))
    out = first + " (and the system store does not verify it either: pass --cacert FILE)";
  return status;
}

// --- cert verbs --------------------------------------------------------------------------------

struct CertCommands {
  std::string verb;  // "" = none chosen
  std::string name, key = "rsa2048", cn, country, state, locality, org, unit, email, out, in, which = "both";
  std::vector<std::string> sans, roles;
  std::string cert_file, key_file, pkcs12_file, passphrase_file, password_file, format, sni;
  int days = 825;
  bool pem = false, add = false, force = false, with_key = false;
};

namespace {

bool read_file(const std::string& path, std::string& out, std::string& err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    err = "cannot read " + path;
    return false;
  }
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  if (out.size() > kMaxFile) {
    err = path + " is larger than 1 MiB";
    return false;
  }
  return true;
}

// A password file's first line (the newline is not part of it).
bool read_secret(const std::string& path, std::string& out, std::string& err) {
  if (!read_file(path, out, err)) return false;
  auto nl = out.find_first_of("\r\n");
  if (nl != std::string::npos) out.resize(nl);
  return true;
}

bool write_out(const std::string& path, const std::string& data, bool secret, std::string& err) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0644);
  if (fd < 0 || ::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    if (fd >= 0) ::close(fd);
    err = "cannot write " + path;
    return false;
  }
  ::close(fd);
  return true;
}

std::string s(const json& j, const char* k) {
  if (!j.is_object() || !j.contains(k) || j[k].is_null()) return "";
  return j[k].is_string() ? j[k].get<std::string>() : j[k].dump();
}

std::string joined(const json& a) {
  std::string out;
  if (a.is_array())
    for (auto& x : a) out += (out.empty() ? "" : ",") + (x.is_string() ? x.get<std::string>() : x.dump());
  return out;
}

void print_list(const json& list) {
  std::printf("%-24s %-11s %-9s %-5s %-9s %-20s %s\n", "NAME", "KIND", "STATUS", "VALID", "KEY", "NOT AFTER", "ROLES");
  for (auto& e : list) {
    std::string key = s(e, "key_type").empty() ? "" : s(e, "key_type") + "-" + s(e, "key_bits");
    std::printf("%-24s %-11s %-9s %-5s %-9s %-20s %s\n", s(e, "name").c_str(), s(e, "kind").c_str(),
                s(e, "status").c_str(), e.value("valid", false) ? "yes" : "no", key.c_str(), s(e, "not_after").c_str(),
                joined(e.value("roles", json::array())).c_str());
  }
}

void print_entry(const json& e) {
  for (const char* k : {"name", "kind", "status", "subject", "issuer", "serial", "fingerprint", "key_type", "key_bits",
                        "not_before", "not_after", "chain_length", "chain_ok", "key_matches", "valid", "invalid_reason",
                        "file_path", "created_at"})
    if (!s(e, k).empty()) std::printf("%-15s %s\n", (std::string(k) + ":").c_str(), s(e, k).c_str());
  std::printf("%-15s %s\n", "sans:", joined(e.value("sans", json::array())).c_str());
  std::printf("%-15s %s\n", "roles:", joined(e.value("roles", json::array())).c_str());
  for (const char* k : {"cert_pem", "chain_pem", "csr_pem"})
    if (!s(e, k).empty()) std::cout << s(e, k);
}

int refused(long status, const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  std::string why = !j.is_discarded() && j.is_object() && j.contains("error") ? s(j, "error") : body;
  std::cerr << "posternctl: " << (status ? std::to_string(status) + " " : "") << why << "\n";
  return 1;
}

int usage(const std::string& why) {
  std::cerr << "posternctl: " << why << "\n";
  return 2;
}

void add_subject_options(CLI::App* sc, CertCommands& c) {
  sc->add_option("--name", c.name, "entry name (default: the common name)");
  sc->add_option("--key", c.key, "key: rsa2048, rsa4096 or ec-p256")->capture_default_str();
  sc->add_option("--cn", c.cn, "common name")->required();
  sc->add_option("--country", c.country, "two-letter country code (e.g. JP)");
  sc->add_option("--state", c.state, "state or prefecture");
  sc->add_option("--locality", c.locality, "locality (city)");
  sc->add_option("--org,--organisation,--organization", c.org, "organisation");
  sc->add_option("--unit", c.unit, "organisational unit");
  sc->add_option("--email", c.email, "e-mail address");
  sc->add_option("--san", c.sans, "subjectAltName: DNS:name, IP:address or email:address (repeatable)");
  sc->add_option("--out", c.out, "write the PEM here instead of stdout");
}

json subject_body(const CertCommands& c) {
  json b{{"key", c.key}, {"cn", c.cn}, {"sans", c.sans}};
  if (!c.name.empty()) b["name"] = c.name;
  const std::pair<const char*, const std::string*> f[] = {{"country", &c.country}, {"state", &c.state},
                                                          {"locality", &c.locality}, {"organisation", &c.org},
                                                          {"unit", &c.unit}, {"email", &c.email}};
  for (auto& [k, v] : f)
    if (!v->empty()) b[k] = *v;
  return b;
}

// Builds the request for the chosen verb. "" or a usage error.
std::string request(CertCommands& c, std::string& method, std::string& path, json& body) {
  const std::string base = "/api/v1/certificates";
  method = "POST";
  std::string err;
  if (c.verb == "list") {
    method = "GET";
    path = base;
  } else if (c.verb == "show") {
    method = "GET";
    path = base + "/" + c.name + (c.pem ? "?pem=1" : "");
  } else if (c.verb == "csr" || c.verb == "self-signed") {
    path = base + "/" + c.verb;
    body = subject_body(c);
    if (c.verb == "self-signed") body["days"] = c.days;
  } else if (c.verb == "import") {
    path = base + "/import";
    if (c.cert_file.empty() == c.pkcs12_file.empty()) return "import needs --cert FILE or --pkcs12 FILE";
    std::string text;
    if (!c.cert_file.empty()) {
      if (!read_file(c.cert_file, text, err)) return err;
      body["cert_pem"] = text;
      body["filename"] = std::filesystem::path(c.cert_file).filename().string();
    } else {
      if (!read_file(c.pkcs12_file, text, err)) return err;
      unsigned char* b64 = new unsigned char[4 * ((text.size() + 2) / 3) + 1];
      EVP_EncodeBlock(b64, reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
      body["pkcs12"] = std::string(reinterpret_cast<char*>(b64));
      delete[] b64;
      body["filename"] = std::filesystem::path(c.pkcs12_file).filename().string();
    }
    if (!c.key_file.empty()) {
      if (!read_file(c.key_file, text, err)) return err;
      body["key_pem"] = text;
    }
    if (!c.passphrase_file.empty()) {
      if (!read_secret(c.passphrase_file, text, err)) return err;
      body["passphrase"] = text;
    }
    if (!c.name.empty()) body["name"] = c.name;
    if (c.force) body["force"] = true;
  } else if (c.verb == "export") {
    path = base + "/" + c.name + "/export";
    if (c.with_key) {
      if (c.password_file.empty()) return "export --with-key needs --password-file FILE";
      std::string pw;
      if (!read_secret(c.password_file, pw, err)) return err;
      body["password"] = pw;
      body["format"] = c.format.empty() ? "pkcs12" : c.format;
      if (body["format"] == "pkcs12" && c.out.empty()) return "a PKCS#12 export needs --out FILE";
    }
  } else if (c.verb == "assign") {
    path = base + "/" + c.name + "/assign";
    json roles = json::array();
    for (auto& r : c.roles) {
      std::stringstream ss(r);
      std::string one;
      while (std::getline(ss, one, ','))
        if (!one.empty()) roles.push_back(one);
    }
    body = {{"roles", roles}, {"add", c.add}};
    if (!c.sni.empty()) body["sni"] = c.sni;
  } else if (c.verb == "delete") {
    method = "DELETE";
    path = base + "/" + c.name;
  } else if (c.verb == "backup" || c.verb == "restore") {
    path = base + "/" + c.verb;
    std::string pw;
    if (!read_secret(c.password_file, pw, err)) return err;
    body["password"] = pw;
    if (c.verb == "restore") {
      std::string file;
      if (!read_file(c.in, file, err)) return err;
      unsigned char* b64 = new unsigned char[4 * ((file.size() + 2) / 3) + 1];
      EVP_EncodeBlock(b64, reinterpret_cast<const unsigned char*>(file.data()), static_cast<int>(file.size()));
      body["file"] = std::string(reinterpret_cast<char*>(b64));
      delete[] b64;
    }
  } else if (c.verb == "regenerate-defaults") {
    path = base + "/regenerate-defaults";
    body["which"] = c.which;
  }
  return "";
}

bool b64_decode(const std::string& in, std::string& out) {
  out.assign(in.size() / 4 * 3 + 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return false;
  size_t pad = 0;
  for (size_t i = in.size(); i > 0 && in[i - 1] == '='; --i) ++pad;
  out.resize(static_cast<size_t>(n) - std::min<size_t>(pad, 2));
  return true;
}

// Human output (or files) for a successful answer.
int present(const CertCommands& c, const json& j) {
  std::string err;
  if (c.verb == "list") print_list(j);
  else if (c.verb == "show") print_entry(j);
  else if (c.verb == "csr" || c.verb == "self-signed") {
    if (!s(j, "message").empty()) std::cerr << "posternctl: " << s(j, "message") << "\n";
    std::string pem = c.verb == "csr" ? s(j, "csr_pem") : "";
    if (c.verb == "csr" && !c.out.empty()) {
      if (!write_out(c.out, pem, false, err)) return refused(0, err);
    } else if (c.verb == "csr") {
      std::cout << pem;
    }
    std::printf("%s %s: %s\n", c.verb == "csr" ? "request" : "certificate", s(j, "name").c_str(), s(j, "status").c_str());
  } else if (c.verb == "import") {
    std::printf("%s\n%s: %s, %s\n", s(j, "message").c_str(), s(j, "name").c_str(), s(j, "status").c_str(),
                s(j, "fingerprint").c_str());
  } else if (c.verb == "export") {
    if (!s(j, "pkcs12").empty()) {
      std::string der;
      if (!b64_decode(s(j, "pkcs12"), der) || !write_out(c.out, der, true, err)) return refused(0, err.empty() ? "bad answer" : err);
      std::printf("%s: PKCS#12 (key, certificate, chain) written to %s\n", c.name.c_str(), c.out.c_str());
    } else {
      std::string text = s(j, "cert_pem") + s(j, "key_pem") + s(j, "csr_pem");
      if (!c.out.empty()) {
        if (!write_out(c.out, text, !s(j, "key_pem").empty(), err)) return refused(0, err);
        std::printf("%s written to %s\n", c.name.c_str(), c.out.c_str());
      } else {
        std::cout << text;
      }
    }
  } else if (c.verb == "assign") {
    for (auto& r : j.value("roles", json::array()))
      std::printf("%-14s %s generation %s %s\n", s(r, "role").c_str(), c.name.c_str(), s(r, "generation").c_str(),
                  s(r, "fingerprint").c_str());
  } else if (c.verb == "delete") {
    std::printf("deleted %s\n", c.name.c_str());
  } else if (c.verb == "backup") {
    std::string file;
    if (!b64_decode(s(j, "file"), file) || !write_out(c.out, file, true, err)) return refused(0, err.empty() ? "bad answer" : err);
    std::printf("backup of %s entries and %s bindings written to %s\n", s(j, "entries").c_str(), s(j, "bindings").c_str(),
                c.out.c_str());
  } else if (c.verb == "restore") {
    std::printf("restored %s entries and %s bindings\n", s(j, "entries").c_str(), s(j, "bindings").c_str());
  } else if (c.verb == "regenerate-defaults") {
    for (auto& r : j.value("regenerated", json::array()))
      std::printf("%s regenerated: %s\n", s(r, "name").c_str(), s(r, "fingerprint").c_str());
  }
  return 0;
}

}  // namespace

CertCommands* add_cert_commands(CLI::App& app) {
  static CertCommands commands;  // one per process, as long as the process
  auto* c = &commands;
  auto* cert = app.add_subcommand("cert", "the certificate store (entries, roles, backup)");
  auto verb = [c, cert](const char* name, const char* help) {
    auto* sc = cert->add_subcommand(name, help);
    sc->callback([c, name] { c->verb = name; });
    return sc;
  };
  verb("list", "every entry: kind, status, validity, key, notAfter, roles");
  auto* show = verb("show", "one entry");
  show->add_option("name", c->name)->required();
  show->add_flag("--pem", c->pem, "include the certificate / CSR PEM");
  add_subject_options(verb("csr", "new key (made on the server) and a certificate signing request (status requested)"), *c);
  auto* ss = verb("self-signed", "new key and a self-signed certificate");
  add_subject_options(ss, *c);
  ss->add_option("--days", c->days, "validity in days")->capture_default_str();
  auto* imp = verb("import", "a PEM certificate (+ chain) with its key, or a PKCS#12 file");
  imp->add_option("--name", c->name, "entry name (default: the file's name)");
  imp->add_option("--cert", c->cert_file, "PEM: the certificate, then its intermediates (may also hold the key)");
  imp->add_option("--key", c->key_file, "PEM private key: PKCS#1, SEC1, PKCS#8, encrypted PKCS#8 or traditional encrypted");
  imp->add_option("--pkcs12", c->pkcs12_file, "PKCS#12 (.p12/.pfx) file instead of --cert/--key");
  imp->add_option("--passphrase-file", c->passphrase_file, "passphrase of the key or PKCS#12 file (first line)");
  imp->add_flag("--force", c->force, "store an expired or not-yet-valid certificate anyway (it cannot be assigned)");
  auto* exp = verb("export", "the certificate and chain (PEM), or with the key under a password");
  exp->add_option("name", c->name)->required();
  exp->add_flag("--with-key", c->with_key, "include the private key, encrypted under --password-file");
  exp->add_option("--password-file", c->password_file, "export password (first line)");
  exp->add_option("--format", c->format, "with the key: pkcs12 (default) or pkcs8 (PEM cert + encrypted key)");
  exp->add_option("--out", c->out, "output file (required for PKCS#12)");
  auto* as = verb("assign", "serve the entry for roles: inbound, outbound, admin, euq (live, nothing restarts)");
  as->add_option("name", c->name)->required();
  as->add_option("--role", c->roles, "roles, comma separated (inbound,outbound,admin,euq or the API names)")
      ->required()
      ->allow_extra_args(false);
  as->add_flag("--add", c->add, "keep the role's certificate of the other key type beside it (RSA + ECDSA)");
  as->add_option("--sni", c->sni, "bind for this server name only (inbound)");
  auto* del = verb("delete", "delete an entry (refused while it is in use)");
  del->add_option("name", c->name)->required();
  auto* bk = verb("backup", "the whole store (entries, keys, bindings) to one password-protected file (seed 002 -b)");
  bk->add_option("--out", c->out, "backup file (written 0600)")->required();
  bk->add_option("--password-file", c->password_file, "backup password (first line, 8+ characters)")->required();
  auto* rs = verb("restore", "restore the store from a backup file (seed 002 -r)");
  rs->add_option("--in,file", c->in, "backup file")->required();
  rs->add_option("--password-file", c->password_file, "backup password (first line)")->required();
  auto* rg = verb("regenerate-defaults", "new default_mta / default_console certificates, served at once (seed 002 -c)");
  rg->add_option("--which", c->which, "mta, console or both")->capture_default_str()->check(CLI::IsMember({"mta", "console", "both"}));
  cert->require_subcommand(1);
  return c;
}

bool chosen(const CertCommands* cc) { return cc && !cc->verb.empty(); }

int run(CertCommands* cc, const Conn& conn, bool as_json) {
  std::string method, path;
  json body = json::object();
  if (auto e = request(*cc, method, path, body); !e.empty()) return usage(e);
  std::string out;
  long status = call(conn, method, path, method == "POST" ? body.dump() : "", out);
  if (status < 200 || status > 299) return refused(status, out);
  auto j = json::parse(out, nullptr, false);
  if (j.is_discarded()) return refused(0, "unexpected answer: " + out.substr(0, 200));
  if (!as_json) return present(*cc, j);
  if (cc->verb == "backup" || (cc->verb == "export" && !cc->out.empty())) {
    std::string bytes, err;
    bool b64 = cc->verb == "backup" || !s(j, "pkcs12").empty();
    if (b64 && !b64_decode(s(j, cc->verb == "backup" ? "file" : "pkcs12"), bytes)) return refused(0, "bad answer");
    if (!b64) bytes = s(j, "cert_pem") + s(j, "key_pem");
    if (!write_out(cc->out, bytes, b64 || !s(j, "key_pem").empty(), err)) return refused(0, err);
    for (const char* k : {"file", "pkcs12", "key_pem"}) j.erase(k);
    j["written_to"] = cc->out;
  }
  std::cout << j.dump(2) << "\n";
  return 0;
}

}  // namespace postern::ctl
