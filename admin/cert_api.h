// cert_api.h — the certificate store on the control thread: named entries in PostgreSQL (table
// certificates), their bindings to the four roles (table role_bindings: role, key type, SNI name,
// entry, generation, the config's file path at assign time), the API under
// /api/v1/certificates, and publishing: bindings resolve to PEM identities that go to
// rt.tls (TlsRoles); the data path never reads the database.
//
// The last good bindings (with their keys sealed under the node key) are in
// <state_dir>/cache/certs.json, so a start without the database serves the same certificates.
// Every admin-console assign rewrites <state_dir>/admin-trust.pem, which posternctl pins.
// A change made here is NOTIFYed ('certs'); the other nodes re-read the bindings and publish.
// Security-sensitive: private keys (unsealed only in memory, for a build or an export/backup),
// the node key, export and backup passwords (never logged), upload parsing (certs/).
#pragma once

#include <uv.h>

#include <ctime>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "admin/admin_server.h"
#include "admin/pg_client.h"
#include "certs/cert_crypt.h"
#include "certs/cert_material.h"
#include "mta/runtime.h"

namespace postern::admin {

// One binding as published (and cached): what a role serves for a key type (and SNI name).
struct CertBinding {
  std::string role, key_type, sni, entry, file_path;
  int64_t generation = 0;
  std::string cert_pem, chain_pem, key_sealed, fingerprint;
};

class CertStore {
 public:
  // raise(code, severity, text, alert): the control plane's event log.
  using Raise = std::function<void(const std::string&, const std::string&, const std::string&, bool)>;
  CertStore(uv_loop_t* loop, mta::Runtime& rt, PgClient& db, std::string node, std::string state_dir, Raise raise);
  ~CertStore();
  // Start-up: the node key (created at first start), then the cached bindings are published.
  // Throws std::runtime_error when the node key cannot be read or made.
  void start();
  // The database is (again) reachable: default entries at first start, then the bindings.
  void on_db_up();
  // Another node changed the store: re-read the bindings and publish what changed.
  void on_notify();
  // /api/v1/certificates/... (p: the path's segments, p[2] == "certificates").
  void handle(const HttpRequest& req, const std::vector<std::string>& p, Responder respond);
  // The store binds role r (and the config still names the file recorded at assign time).
  bool serves(tls::Role r, const Config& cfg) const;
  // Rebuilds role r from its bindings: "" or why it was refused.
  std::string publish_role(tls::Role r, const Config& cfg);
  // SIGHUP / reload of a role the store serves: as publish_role, except that a default entry
  // whose file an admin replaced serves that file and takes it (on every node).
  std::string reload_role(tls::Role r, const Config& cfg);
  const std::string& trust_file() const { return trust_file_; }
  // File-backed entries: every certificate file the configuration names for a role the store
  // does not bind is recorded as an entry of kind `file` (metadata read from the file, no key
  // copied; `in use` by the roles of this node that serve it), so `cert list` shows what every
  // role serves. The file stays what is served. Called after each reload and when the database
  // comes up; a file that does not parse keeps its previous entry.
  void sync_file_entries();

 private:
  using json = nlohmann::json;
  struct FileEntry {  // a certificate file the configuration names, and the roles it serves
    std::string path, key_path;
    std::vector<std::string> roles;
    certs::ParseResult pr;
  };
  void write_file_entries(const std::vector<FileEntry>& files, const json& have);
  void off_loop(std::function<void()> work, std::function<void()> done);
  std::time_t now() const;
  void load_bindings(std::function<void(bool)> done);
  void apply_bindings(std::vector<CertBinding> next, const std::string& why);
  std::string build_role(tls::Role r, const std::vector<CertBinding>& bs, const Config& cfg,
                         tls::BuildResult& out) const;
  void write_cache() const;
  void sync_default_files(const Config& cfg, const std::vector<CertBinding>& old) const;
  void adopt_default_file(const std::string& name, const Config& cfg);
  void read_cache();
  void write_trust_file() const;
  void seed_defaults(std::function<void(bool)> done);
  void fetch(const std::string& name, std::function<void(bool ok, std::string err, json entry)> cb);
  void with_names(std::function<void(bool ok, std::vector<std::string>)> cb);
  void insert_entry(json doc, const std::string& event, const std::string& msg, Responder respond, bool upsert = false);
  void refresh_status();

  void list(const HttpRequest& req, Responder respond);
  void show(const std::string& name, const HttpRequest& req, Responder respond);
  void create(bool csr, const json& body, Responder respond);
  void import(const json& body, Responder respond);
  void complete_request(json req_entry, std::shared_ptr<struct ImportJob> job, Responder respond);
  void export_entry(const std::string& name, const json& body, Responder respond);
  void assign(const std::string& name, const json& body, Responder respond);
  void remove(const std::string& name, Responder respond);
  void backup(const json& body, Responder respond);
  void restore(const json& body, Responder respond);
  void regenerate(const json& body, Responder respond);

  uv_loop_t* loop_;
  mta::Runtime& rt_;
  PgClient& db_;
  std::string node_, state_dir_, trust_file_;
  Raise raise_;
  certs::NodeKey key_;
  std::vector<CertBinding> bindings_;  // what this node publishes (from the database or the cache)
  bool seeded_ = false;
};

}  // namespace postern::admin
