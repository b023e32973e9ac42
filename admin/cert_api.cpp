// cert_api.cpp — see cert_api.h. Security-sensitive: keys are unsealed only into memory that is
// wiped (certs::Secret, tls::Identity), passwords and keys never reach a log line or an event,
// upload sizes are bounded (certs/ and the admin server's body limit), names are restricted to a
// safe alphabet before they reach SQL parameters, file names or URLs.
#include "admin/cert_api.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "base/log.h"
#include "base/text.h"
#include "certs/cert_make.h"
#include "certs/cert_material.h"
#include "tls/tls_roles.h"

namespace postern::admin {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

HttpResponse ok(const json& j) { return {200, "application/json", j.dump()}; }
HttpResponse fail(int status, const std::string& msg, const std::string& reason = "") {
  json j{{"error", msg}};
  if (!reason.empty()) j["reason"] = reason;
  return {status, "application/json", j.dump()};
}
HttpResponse db_fail(const PgResult& r) {
  return fail(503, r.error.rfind("database unavailable", 0) == 0 ? r.error : "database error: " + r.error);
}

bool parse_role(const std::string& s, tls::Role& out) {
  static const std::pair<const char*, tls::Role> names[] = {
      {"inbound_mta", tls::Role::kInboundMta},    {"inbound", tls::Role::kInboundMta},
      {"outbound_mta", tls::Role::kOutboundMta},  {"outbound", tls::Role::kOutboundMta},
      {"admin_console", tls::Role::kAdminConsole}, {"admin", tls::Role::kAdminConsole},
      {"euq_console", tls::Role::kEuqConsole},    {"euq", tls::Role::kEuqConsole}};
  for (auto& [n, r] : names)
    if (s == n) {
      out = r;
      return true;
    }
  return false;
}

// Entry names: 1-64 of [A-Za-z0-9._-], not starting with a dot: safe in URLs, file names, logs.
bool valid_name(const std::string& n) {
  return !n.empty() && n.size() <= 64 && n[0] != '.' &&
         std::all_of(n.begin(), n.end(), [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; });
}

std::string to_name(const std::string& raw) {
  std::string out;
  for (unsigned char c : raw.substr(0, 64)) out += std::isalnum(c) || c == '.' || c == '_' || c == '-' ? char(c) : '_';
  while (!out.empty() && out[0] == '.') out.erase(0, 1);
  return out;
}

// seed 001: an entry without a name takes the file's name ("imsva91_certificate.pem" -> "imsva91_certificate").
std::string name_from_file(const std::string& file) {
  return to_name(fs::path(file).stem().string());
}

std::string free_name(const std::string& want, const std::vector<std::string>& taken) {
  auto used = [&](const std::string& n) { return std::find(taken.begin(), taken.end(), n) != taken.end(); };
  if (!used(want)) return want;
  for (int i = 2; i < 10000; ++i) {
    std::string n = want.substr(0, 58) + "-" + std::to_string(i);
    if (!used(n)) return n;
  }
  return want + "-" + std::to_string(std::time(nullptr));
}

std::string renamed_message(const std::string& name) {
  return "A certificate with the same name exists. The certificate name was changed to " + name + ".";
}

std::string str(const json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : "";
}
int64_t num(const json& j, const char* k) {
  return j.is_object() && j.contains(k) && j[k].is_number() ? j[k].get<int64_t>() : 0;
}

size_t count_certs(const std::string& pem) {
  size_t n = 0;
  for (size_t p = pem.find("-----BEGIN CERTIFICATE-----"); p != std::string::npos;
       p = pem.find("-----BEGIN CERTIFICATE-----", p + 1))
    ++n;
  return n;
}

// The document the INSERT reads ($1: a JSON array of these).
json entry_doc(const std::string& name, const std::string& kind, const certs::Material& m, const std::string& key_sealed,
               const json& fields, const std::string& csr_pem = "") {
  const auto& x = m.meta;
  bool has_cert = !m.cert_pem.empty();
  auto opt = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
  json doc{{"name", name},
           {"kind", kind},
           {"status", has_cert ? "unused" : "requested"},
           {"cert_pem", opt(m.cert_pem)},
           {"chain_pem", opt(m.chain_pem)},
           {"key_sealed", opt(key_sealed)},
           {"csr_pem", opt(csr_pem)},
           {"fields", fields.is_object() ? fields : json::object()}};
  if (has_cert)
    doc.update({{"fingerprint", x.fingerprint}, {"not_before", x.not_before}, {"not_after", x.not_after},
                {"subject", x.subject}, {"issuer", x.issuer}, {"serial", x.serial}, {"sans", x.sans},
                {"key_type", x.key_type}, {"key_bits", x.key_bits}, {"spki", x.spki_sha256}, {"chain_ok", x.chain_ok},
                {"chain_error", opt(x.chain_error)}, {"key_matches", x.key_matches}});
  return doc;
}

const char* kEntryColumns =
    "name, kind, status, cert_pem, chain_pem, key_pem, csr_pem, fingerprint, not_before, not_after, subject, issuer, "
    "serial, sans, key_type, key_bits, spki_sha256, chain_ok, chain_error, key_matches, fields, file_path";
const char* kEntryValues =
    "j->>'name', j->>'kind', j->>'status', j->>'cert_pem', j->>'chain_pem', j->>'key_sealed', j->>'csr_pem', "
    "j->>'fingerprint', to_timestamp((j->>'not_before')::bigint), to_timestamp((j->>'not_after')::bigint), "
    "j->>'subject', j->>'issuer', j->>'serial', coalesce(j->'sans', '[]'::jsonb), j->>'key_type', "
    "(j->>'key_bits')::int, j->>'spki', (j->>'chain_ok')::boolean, j->>'chain_error', (j->>'key_matches')::boolean, "
    "coalesce(j->'fields', '{}'::jsonb), j->>'file_path'";

std::string insert_sql(bool upsert) {
  std::string s = std::string("INSERT INTO certificates (") + kEntryColumns + ") SELECT " + kEntryValues +
                  " FROM jsonb_array_elements($1::jsonb) AS j";
  if (upsert) {
    s += " ON CONFLICT (name) DO UPDATE SET ";
    std::stringstream cols(kEntryColumns);
    std::string c;
    bool first = true;
    while (std::getline(cols, c, ',')) {
      c.erase(0, c.find_first_not_of(' '));
      if (c == "name") continue;
      s += (first ? "" : ", ") + c + " = EXCLUDED." + c;
      first = false;
    }
    s += ", updated_at = now()";
  }
  return s;
}

// An entry's status: a CSR is `requested`; a store entry is `in use` while a role binds it; a
// file-backed entry (kind 'file') while a role of the node that recorded it serves its file
// (fields.roles, rewritten by that node on every reload).
#define STATUS_SQL                                                                                         \
  "CASE WHEN c.cert_pem IS NULL THEN 'requested' "                                                         \
  "WHEN c.kind = 'file' THEN CASE WHEN jsonb_array_length(coalesce(c.fields->'roles', '[]'::jsonb)) > 0 " \
  "THEN 'in use' ELSE 'unused' END "                                                                       \
  "WHEN EXISTS (SELECT 1 FROM role_bindings b WHERE b.cert_name = c.name) THEN 'in use' ELSE 'unused' END"

const char* kSelectEntries =
    "SELECT json_build_object('name', c.name, 'kind', c.kind, "
    "'status', " STATUS_SQL ", "
    "'subject', c.subject, 'issuer', c.issuer, 'serial', c.serial, 'fingerprint', c.fingerprint, "
    "'spki', c.spki_sha256, 'key_type', c.key_type, 'key_bits', c.key_bits, "
    "'not_before', extract(epoch FROM c.not_before)::bigint, 'not_after', extract(epoch FROM c.not_after)::bigint, "
    "'sans', c.sans, 'chain_ok', c.chain_ok, 'chain_error', c.chain_error, 'key_matches', c.key_matches, "
    "'fields', c.fields, 'file_path', c.file_path, 'created_at', extract(epoch FROM c.created_at)::bigint, "
    "'cert_pem', c.cert_pem, 'chain_pem', c.chain_pem, 'csr_pem', c.csr_pem, 'key_sealed', c.key_pem, "
    "'bindings', (SELECT coalesce(json_agg(json_build_object('role', b.role, 'key_type', b.key_type, 'sni', b.sni, "
    "'generation', b.generation, 'file_path', b.file_path) ORDER BY b.role), '[]'::json) "
    "FROM role_bindings b WHERE b.cert_name = c.name))::text FROM certificates c ";

// Replaces every binding of the roles in $1 (JSON array of names) with those in $2 and tells
// the other nodes ($3: this node). One statement: the deleted and the upserted rows are disjoint.
const char* kReplaceBindings =
    "WITH want AS (SELECT b->>'role' AS role, b->>'key_type' AS key_type, b->>'sni' AS sni, b->>'entry' AS entry, "
    "(b->>'generation')::bigint AS generation, b->>'file_path' AS file_path FROM jsonb_array_elements($2::jsonb) b), "
    "del AS (DELETE FROM role_bindings r WHERE r.role IN (SELECT jsonb_array_elements_text($1::jsonb)) AND NOT EXISTS "
    "(SELECT 1 FROM want w WHERE w.role = r.role AND w.key_type = r.key_type AND w.sni = r.sni) RETURNING 1), "
    "up AS (INSERT INTO role_bindings (role, key_type, sni, cert_name, generation, file_path, updated_at) "
    "SELECT role, key_type, sni, entry, generation, file_path, now() FROM want "
    "ON CONFLICT (role, key_type, sni) DO UPDATE SET cert_name = EXCLUDED.cert_name, generation = EXCLUDED.generation, "
    "file_path = EXCLUDED.file_path, updated_at = now() RETURNING 1) "
    "SELECT (SELECT count(*) FROM del), (SELECT count(*) FROM up), "
    "pg_notify('postern', json_build_object('node', $3::text, 'kind', 'certs')::text)";

json binding_json(const CertBinding& b, bool secrets) {
  json j{{"role", b.role}, {"key_type", b.key_type}, {"sni", b.sni}, {"entry", b.entry},
         {"generation", b.generation}, {"file_path", b.file_path}, {"fingerprint", b.fingerprint}};
  if (secrets) j.update({{"cert_pem", b.cert_pem}, {"chain_pem", b.chain_pem}, {"key_sealed", b.key_sealed}});
  return j;
}

CertBinding binding_from(const json& j) {
  CertBinding b;
  b.role = str(j, "role");
  b.key_type = str(j, "key_type");
  b.sni = str(j, "sni");
  b.entry = str(j, "entry");
  b.generation = num(j, "generation");
  b.file_path = str(j, "file_path");
  b.cert_pem = str(j, "cert_pem");
  b.chain_pem = str(j, "chain_pem");
  b.key_sealed = str(j, "key_sealed");
  b.fingerprint = str(j, "fingerprint");
  return b;
}

// The file the config names for a role, as recorded with a binding: "" for the state
// directory's default files (the same on every node whatever its state directory), else the path.
std::string configured_file(tls::Role r, const Config& cfg) {
  std::string f = tls::role_files(r, cfg).cert;
  return f.rfind(cfg.state_dir + "/certs/default_", 0) == 0 ? "" : f;
}

bool write_file_atomic(const std::string& path, const std::string& text, mode_t mode) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool okw = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  okw = ::close(fd) == 0 && okw;
  ::chmod(tmp.c_str(), mode);
  return okw && ::rename(tmp.c_str(), path.c_str()) == 0;
}

std::vector<std::string> sans_of(const json& v) {
  std::vector<std::string> out;
  if (v.is_string()) {
    std::stringstream ss(v.get<std::string>());
    std::string s;
    while (std::getline(ss, s, ','))
      if (!s.empty()) out.push_back(s);
  } else if (v.is_array()) {
    for (auto& s : v)
      if (s.is_string()) out.push_back(s.get<std::string>());
  }
  return out;
}

certs::Subject subject_of(const json& b) {
  certs::Subject s;
  s.country = str(b, "country");
  s.state = str(b, "state");
  s.locality = str(b, "locality");
  s.organisation = str(b, "organisation").empty() ? str(b, "organization") : str(b, "organisation");
  s.unit = str(b, "unit");
  s.common_name = str(b, "cn").empty() ? str(b, "common_name") : str(b, "cn");
  s.email = str(b, "email");
  if (b.contains("sans")) s.sans = sans_of(b["sans"]);
  return s;
}

json fields_of(const certs::Subject& s, const std::string& key) {
  return {{"country", s.country}, {"state", s.state}, {"locality", s.locality}, {"organisation", s.organisation},
          {"unit", s.unit}, {"cn", s.common_name}, {"email", s.email}, {"sans", s.sans}, {"key", key}};
}

}  // namespace

struct ImportJob {
  certs::ImportInput in;
  certs::ParseResult pr;
  bool force = false;
  std::string name, file;
};

CertStore::CertStore(uv_loop_t* loop, mta::Runtime& rt, PgClient& db, std::string node, std::string state_dir, Raise raise)
    : loop_(loop), rt_(rt), db_(db), node_(std::move(node)), state_dir_(std::move(state_dir)), raise_(std::move(raise)) {
  trust_file_ = state_dir_ + "/admin-trust.pem";
}

CertStore::~CertStore() = default;

std::time_t CertStore::now() const { return std::chrono::system_clock::to_time_t(rt_.clock->wall()); }

void CertStore::off_loop(std::function<void()> work, std::function<void()> done) {
  struct Job {
    uv_work_t req;
    std::function<void()> work, done;
  };
  auto* j = new Job{{}, std::move(work), std::move(done)};
  j->req.data = j;
  int rc = uv_queue_work(loop_, &j->req, [](uv_work_t* r) { static_cast<Job*>(r->data)->work(); },
                         [](uv_work_t* r, int) {
                           auto* job = static_cast<Job*>(r->data);
                           job->done();
                           delete job;
                         });
  if (rc != 0) {  // no thread pool: run here (slow, but correct)
    j->work();
    j->done();
    delete j;
  }
}

void CertStore::start() {
  bool created = false;
  if (auto e = certs::load_or_create_node_key(state_dir_, key_, created); !e.empty())
    throw std::runtime_error("node key: " + e);
  if (created)
    spdlog::warn("certificate store: node key created in {}/node.key (nodes sharing a database must share this file)",
                 state_dir_);
  read_cache();
}

// --- bindings: publish, cache, trust file --------------------------------------------------

std::string CertStore::build_role(tls::Role r, const std::vector<CertBinding>& bs, const Config& cfg,
                                  tls::BuildResult& out) const {
  std::vector<tls::Identity> ids;
  std::vector<std::pair<std::string, std::vector<tls::Identity>>> sni;  // per-name sets (inbound only)
  for (auto& b : bs) {
    if (b.role != tls::role_name(r)) continue;
    std::vector<tls::Identity>* into = &ids;
    if (!b.sni.empty()) {
      auto it = std::find_if(sni.begin(), sni.end(), [&](const auto& e) { return e.first == b.sni; });
      into = &(it != sni.end() ? it->second : sni.emplace_back(b.sni, std::vector<tls::Identity>{}).second);
    }
    tls::Identity& id = into->emplace_back();
    id.cert_pem = b.cert_pem + b.chain_pem;
    id.source = b.entry;
    if (!certs::unseal(key_, b.key_sealed, id.key_pem))
      return "cannot open the private key of " + b.entry +
             " (sealed under another node key: nodes sharing a database must share node.key)";
  }
  if (ids.empty()) return "no certificate bound";
  auto f = tls::role_files(r, cfg);
  auto opt = rt_.tls.options(r, cfg.tls.ticket_key_rotation, f.ca);
  opt.now = now();
  out = sni.empty() ? tls::build_context(ids, opt) : tls::build_context_sni(ids, sni, opt);
  return out.set ? "" : out.error;
}

bool CertStore::serves(tls::Role r, const Config& cfg) const {
  std::string file = configured_file(r, cfg);
  return std::any_of(bindings_.begin(), bindings_.end(), [&](const CertBinding& b) {
    return b.role == tls::role_name(r) && b.sni.empty() && b.file_path == file;
  });
}

std::string CertStore::publish_role(tls::Role r, const Config& cfg) {
  tls::BuildResult br;
  auto& p = rt_.tls.role(r);
  std::string err = build_role(r, bindings_, cfg, br);
  if (err.empty()) err = p.publish(std::move(br));
  else p.publish(tls::BuildResult{nullptr, err});  // counted as a refused reload
  if (!err.empty()) {
    spdlog::error("reload role={} refused, keeping generation {}: {} (certificate store)", tls::role_name(r),
                  p.generation(), err);
    return err;
  }
  auto cur = p.current();
  spdlog::info("reload role={} generation={} entry={} fingerprint={} not_after={} (certificate store)", tls::role_name(r),
               cur->generation, esc(cur->cert_file), cur->fingerprint_sha256, cur->not_after);
  return "";
}

// SIGHUP / reload: a role bound to a default entry whose file an admin replaced serves the file
// (refused if it is bad: the role keeps what it had), and the entry takes it, on every node;
// otherwise the role is rebuilt from its binding.
std::string CertStore::reload_role(tls::Role r, const Config& cfg) {
  for (auto& b : bindings_) {
    if (b.role != tls::role_name(r) || !b.sni.empty() || (b.entry != "default_mta" && b.entry != "default_console"))
      continue;
    std::string crt = cfg.state_dir + "/certs/" + b.entry + ".crt", have;
    if (!tls::read_pem_file(crt, have).empty() || have == b.cert_pem + b.chain_pem) break;
    if (auto err = rt_.tls.reload(r, cfg); !err.empty()) return err;
    adopt_default_file(b.entry, cfg);
    return "";
  }
  return publish_role(r, cfg);
}

// The default entry `name` takes its (replaced, already served) files: here at once, in the
// database and on the other nodes once it is stored.
void CertStore::adopt_default_file(const std::string& name, const Config& cfg) {
  certs::ImportInput in;
  std::string dir = cfg.state_dir + "/certs/";
  if (!tls::read_pem_file(dir + name + ".crt", in.cert_pem).empty() ||
      !tls::read_pem_file(dir + name + ".key", in.key_pem.s).empty())
    return;
  auto pr = certs::parse_import(in);
  if (!pr.ok()) return;
  std::string sealed = certs::seal(key_, pr.m.key_pem.s);
  for (auto& b : bindings_)
    if (b.entry == name) {
      b.cert_pem = pr.m.cert_pem;
      b.chain_pem = pr.m.chain_pem;
      b.key_sealed = sealed;
      b.fingerprint = pr.m.meta.fingerprint;
      b.key_type = pr.m.meta.key_type;
    }
  write_cache();
  write_trust_file();
  json doc = entry_doc(name, pr.m.meta.self_signed ? "self-signed" : "imported", pr.m, sealed, json::object());
  std::string fp = pr.m.meta.fingerprint;
  db_.query(insert_sql(true), {json::array({doc}).dump()}, [this, name, fp](PgResult r) {
    if (!r.ok) {
      spdlog::warn("certificate store: {} took its replaced file here; the database could not store it: {}", name, r.error);
      return;
    }
    db_.query("SELECT pg_notify('postern', json_build_object('node', $1::text, 'kind', 'certs')::text)", {node_},
              [](PgResult) {});
    raise_("CERT_DEFAULT_FILE_ADOPTED", "info", "default entry " + name + " takes its replaced file (" + fp + ")", false);
  });
}

// Publishes every role whose bound certificates differ from what this node serves (the same
// certificates already served, e.g. the default files at first start, are left alone: no new
// generation, resumption unaffected).
void CertStore::apply_bindings(std::vector<CertBinding> next, const std::string& why) {
  auto cfg = rt_.config.load();
  std::vector<CertBinding> old = std::move(bindings_);
  bindings_ = std::move(next);
  sync_default_files(*cfg, old);
  for (tls::Role r : tls::kRoles) {
    if (!serves(r, *cfg)) continue;
    if (r == tls::Role::kInboundMta && !cfg->smtp.starttls) continue;
    std::set<std::string> bound, served;
    for (auto& b : bindings_)
      if (b.role == tls::role_name(r)) bound.insert(b.sni + "|" + b.fingerprint);
    if (auto cur = rt_.tls.current(r)) {
      for (auto& c : cur->certs) served.insert("|" + c.fingerprint_sha256);
      for (auto& [n, set] : cur->sni)
        if (set)
          for (auto& c : set->certs) served.insert(n + "|" + c.fingerprint_sha256);
    }
    if (bound == served) continue;
    std::string err = publish_role(r, *cfg);
    if (!err.empty())
      raise_("CERT_PUBLISH_FAILED", "error",
             std::string("role ") + tls::role_name(r) + " keeps its certificate (" + why + "): " + err, false);
  }
  write_cache();
  write_trust_file();
}

// The default entries are shared by every node on the database; each node's default files
// follow them (written before they are served), so a start from the files, and a client that
// trusts <state_dir>/certs/default_console.crt, see what the store serves.
// Only an entry that changed in the store is written: a file an admin replaced (and has not
// reloaded yet) is left alone.
void CertStore::sync_default_files(const Config& cfg, const std::vector<CertBinding>& old) const {
  std::set<std::string> done;
  for (auto& b : bindings_) {
    if ((b.entry != "default_mta" && b.entry != "default_console") || !done.insert(b.entry).second) continue;
    if (std::any_of(old.begin(), old.end(), [&](const CertBinding& o) { return o.entry == b.entry && o.cert_pem == b.cert_pem; }))
      continue;
    std::string crt = cfg.state_dir + "/certs/" + b.entry + ".crt", key = cfg.state_dir + "/certs/" + b.entry + ".key";
    std::string have;
    if (tls::read_pem_file(crt, have).empty() && have == b.cert_pem + b.chain_pem) continue;
    certs::Secret k;
    if (!certs::unseal(key_, b.key_sealed, k.s)) continue;  // publish_role says why
    if (write_file_atomic(key, k.s, 0600) && write_file_atomic(crt, b.cert_pem + b.chain_pem, 0644))
      spdlog::info("certificate store: {} follows the store's {} ({})", crt, b.entry, b.fingerprint);
    else
      spdlog::warn("certificate store: cannot rewrite {} for the store's {}", crt, b.entry);
  }
}

void CertStore::write_cache() const {
  json bs = json::array();
  for (auto& b : bindings_) bs.push_back(binding_json(b, true));
  std::string dir = state_dir_ + "/cache";
  std::error_code ec;
  fs::create_directories(dir, ec);
  json j{{"bindings", bs}, {"written_at", static_cast<int64_t>(std::time(nullptr))}, {"node", node_}};
  if (!write_file_atomic(dir + "/certs.json", j.dump() + "\n", 0600))
    spdlog::warn("certificate store: cannot write {}/certs.json", dir);
}

void CertStore::read_cache() {
  std::ifstream in(state_dir_ + "/cache/certs.json");
  if (!in) return;
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("bindings") || !j["bindings"].is_array()) {
    spdlog::warn("certificate store: {}/cache/certs.json does not parse; serving the files until the database answers",
                 state_dir_);
    return;
  }
  std::vector<CertBinding> bs;
  for (auto& b : j["bindings"]) bs.push_back(binding_from(b));
  spdlog::info("certificate store: {} bindings from the local cache", bs.size());
  apply_bindings(std::move(bs), "the local cache");
}

// posternctl pins the admin console's public key(s) from this file: rewritten on every change.
void CertStore::write_trust_file() const {
  std::string text;
  auto cfg = rt_.config.load();
  if (serves(tls::Role::kAdminConsole, *cfg)) {
    // What the console serves, not what the store says: a binding this node could not publish
    // (a key sealed under another node's key, say) must not make posternctl distrust the console.
    std::set<std::string> served;
    if (auto cur = rt_.tls.current(tls::Role::kAdminConsole))
      for (auto& c : cur->certs) served.insert(c.fingerprint_sha256);
    for (auto& b : bindings_)
      if (b.role == "admin_console" && b.sni.empty() && served.count(b.fingerprint)) text += b.cert_pem;
  } else if (!tls::read_pem_file(tls::role_files(tls::Role::kAdminConsole, *cfg).cert, text).empty()) {
    return;
  }
  if (text.empty()) return;
  std::ifstream in(trust_file_);
  std::stringstream cur;
  cur << in.rdbuf();
  if (cur.str() == text) return;
  if (!write_file_atomic(trust_file_, text, 0644)) spdlog::warn("certificate store: cannot write {}", trust_file_);
}

void CertStore::load_bindings(std::function<void(bool)> done) {
  db_.query(
      "SELECT json_build_object('role', b.role, 'key_type', b.key_type, 'sni', b.sni, 'entry', b.cert_name, "
      "'generation', b.generation, 'file_path', b.file_path, 'cert_pem', c.cert_pem, 'chain_pem', "
      "coalesce(c.chain_pem, ''), 'key_sealed', c.key_pem, 'fingerprint', c.fingerprint)::text "
      "FROM role_bindings b JOIN certificates c ON c.name = b.cert_name WHERE c.cert_pem IS NOT NULL "
      "ORDER BY b.role, b.key_type, b.sni",
      {}, [this, done](PgResult r) {
        if (!r.ok) return done(false);
        std::vector<CertBinding> bs;
        for (auto& row : r.rows) {
          auto j = json::parse(row[0], nullptr, false);
          if (!j.is_discarded()) bs.push_back(binding_from(j));
        }
        apply_bindings(std::move(bs), "the database");
        done(true);
      });
}

void CertStore::refresh_status() {
  db_.query("UPDATE certificates c SET status = " STATUS_SQL " WHERE status IS DISTINCT FROM " STATUS_SQL, {},
            [](PgResult) {});
}

void CertStore::sync_file_entries() {
  if (!db_.up()) return;  // on_db_up() calls again
  auto cfg = rt_.config.load();
  auto files = std::make_shared<std::vector<FileEntry>>();
  for (tls::Role r : tls::kRoles) {
    std::string f = configured_file(r, *cfg);
    if (f.empty() || serves(r, *cfg) || (r == tls::Role::kInboundMta && !cfg->smtp.starttls)) continue;
    auto it = std::find_if(files->begin(), files->end(), [&](const FileEntry& e) { return e.path == f; });
    if (it == files->end()) it = files->insert(files->end(), FileEntry{f, tls::role_files(r, *cfg).key, {}, {}});
    it->roles.push_back(tls::role_name(r));
  }
  off_loop(
      [files] {
        for (auto& e : *files) {
          certs::ImportInput in;
          if (!tls::read_pem_file(e.path, in.cert_pem).empty()) continue;
          tls::read_pem_file(e.key_path, in.key_pem.s);  // for key_matches only: never stored
          e.pr = certs::parse_import(in);
        }
      },
      [this, files] {
        db_.query("SELECT coalesce(json_agg(json_build_object('name', name, 'kind', kind, 'file_path', file_path, "
                  "'node', fields->>'node')), '[]')::text FROM certificates",
                  {}, [this, files](PgResult r) {
                    if (!r.ok || r.rows.empty()) return;
                    auto have = json::parse(r.rows[0][0], nullptr, false);
                    if (have.is_discarded()) return;
                    write_file_entries(*files, have);
                  });
      });
}

void CertStore::write_file_entries(const std::vector<FileEntry>& files, const json& have) {
  std::vector<std::string> taken;
  for (auto& h : have) taken.push_back(str(h, "name"));
  json docs = json::array(), gone = json::array();
  auto mine = [&](const json& h) { return str(h, "kind") == "file" && str(h, "node") == node_; };
  for (auto& f : files) {
    if (f.pr.m.meta.fingerprint.empty()) {
      spdlog::warn("certificate store: {} does not parse; its file-backed entry is left as it was", esc(f.path));
      continue;
    }
    std::string name;
    for (auto& h : have)
      if (mine(h) && str(h, "file_path") == f.path) name = str(h, "name");
    if (name.empty()) {
      std::string want = name_from_file(f.path);
      taken.push_back(name = free_name(want.empty() ? "file" : want, taken));
    }
    json doc = entry_doc(name, "file", f.pr.m, "", json{{"node", node_}, {"roles", f.roles}});
    doc["file_path"] = f.path;
    docs.push_back(doc);
  }
  for (auto& h : have)  // this node's file entries no role serves any more: kept, `unused`
    if (mine(h) && std::none_of(files.begin(), files.end(), [&](const FileEntry& f) { return f.path == str(h, "file_path"); }))
      gone.push_back(str(h, "name"));
  // The conflict target is only ever this node's own file entry (names are chosen free): an entry
  // of another kind that took the name meanwhile is left alone.
  db_.query(insert_sql(true) + " WHERE certificates.kind = 'file'", {docs.dump()}, [this, gone](PgResult r) {
    if (!r.ok) spdlog::warn("certificate store: file-backed entries not recorded: {}", r.error);
    db_.query("UPDATE certificates SET fields = jsonb_set(fields, '{roles}', '[]'::jsonb), updated_at = now() "
              "WHERE kind = 'file' AND name IN (SELECT jsonb_array_elements_text($1::jsonb)) "
              "AND fields->'roles' <> '[]'::jsonb",
              {gone.dump()}, [this](PgResult r2) {
                if (!r2.ok) spdlog::warn("certificate store: file-backed entries not updated: {}", r2.error);
                refresh_status();
              });
  });
}

void CertStore::on_db_up() {
  if (seeded_) return load_bindings([this](bool) { sync_file_entries(); });
  seed_defaults([this](bool ok) {
    seeded_ = ok;  // else tried again at the next connection
    load_bindings([this](bool) { sync_file_entries(); });
  });
}

void CertStore::on_notify() {
  spdlog::info("certificate store: bindings changed on another node, re-reading them");
  load_bindings([this](bool) { sync_file_entries(); });
}

// --- defaults at first start ---------------------------------------------------------------

// default_mta (inbound + outbound MTA) and default_console (admin + EUQ consoles) from the files
// posternd made before the control plane started; each role is bound only when it has no
// binding yet and the config still names the default file.
void CertStore::seed_defaults(std::function<void(bool)> done) {
  db_.query("SELECT (SELECT coalesce(json_agg(name), '[]') FROM certificates WHERE name IN ('default_mta', "
            "'default_console'))::text, (SELECT coalesce(json_agg(DISTINCT role), '[]') FROM role_bindings)::text",
            {}, [this, done](PgResult r) {
              if (!r.ok || r.rows.empty()) return done(false);
              auto have = json::parse(r.rows[0][0], nullptr, false), bound = json::parse(r.rows[0][1], nullptr, false);
              if (have.is_discarded() || bound.is_discarded()) return done(false);
              auto cfg = rt_.config.load();
              std::string dir = cfg->state_dir + "/certs/";
              if (!fs::exists(dir + "default_mta.crt"))
                if (auto e = tls::ensure_self_signed(dir + "default_mta.crt", dir + "default_mta.key", cfg->hostname);
                    !e.empty())
                  spdlog::error("certificate store: cannot make default_mta: {}", e);
              json docs = json::array(), roles = json::array(), want = json::array();
              for (std::string name : {"default_mta", "default_console"}) {
                bool exists = std::find(have.begin(), have.end(), name) != have.end();
                certs::ImportInput in;
                if (!tls::read_pem_file(dir + name + ".crt", in.cert_pem).empty() ||
                    !tls::read_pem_file(dir + name + ".key", in.key_pem.s).empty())
                  continue;
                auto pr = certs::parse_import(in);
                if (!pr.ok()) {
                  spdlog::error("certificate store: the default {} does not import: {}", name, pr.error);
                  continue;
                }
                if (!exists)
                  docs.push_back(entry_doc(name, "self-signed", pr.m, certs::seal(key_, pr.m.key_pem.s),
                                           {{"cn", cfg->hostname}}));
                bool mta = name == "default_mta";
                for (tls::Role role : tls::kRoles) {
                  bool mine = mta == (role == tls::Role::kInboundMta || role == tls::Role::kOutboundMta);
                  std::string rn = tls::role_name(role);
                  if (!mine || std::find(bound.begin(), bound.end(), rn) != bound.end() ||
                      tls::role_files(role, *cfg).cert != dir + name + ".crt")
                    continue;
                  roles.push_back(rn);
                  want.push_back({{"role", rn}, {"key_type", pr.m.meta.key_type}, {"sni", ""}, {"entry", name},
                                  {"generation", 1}, {"file_path", ""}});
                }
              }
              if (!docs.empty()) {
                db_.query(insert_sql(false) + " ON CONFLICT (name) DO NOTHING", {docs.dump()}, [](PgResult ir) {
                  if (!ir.ok) spdlog::error("certificate store: cannot store the default entries: {}", ir.error);
                });
                spdlog::info("certificate store: {} default entries stored", docs.size());
              }
              if (want.empty()) return done(true);
              db_.query(kReplaceBindings, {roles.dump(), want.dump(), node_}, [this, done](PgResult br) {
                if (!br.ok) spdlog::error("certificate store: cannot bind the defaults: {}", br.error);
                refresh_status();
                done(br.ok);
              });
            });
}

// --- the API -------------------------------------------------------------------------------

void CertStore::fetch(const std::string& name, std::function<void(bool, std::string, json)> cb) {
  db_.query(std::string(kSelectEntries) + "WHERE c.name = $1", {name}, [cb, name](PgResult r) {
    if (!r.ok) return cb(false, r.error, json());
    if (r.rows.empty()) return cb(true, "", json());
    auto j = json::parse(r.rows[0][0], nullptr, false);
    cb(!j.is_discarded(), j.is_discarded() ? "bad row" : "", j.is_discarded() ? json() : j);
  });
}

void CertStore::with_names(std::function<void(bool, std::vector<std::string>)> cb) {
  db_.query("SELECT name FROM certificates", {}, [cb](PgResult r) {
    std::vector<std::string> names;
    for (auto& row : r.rows) names.push_back(row[0]);
    cb(r.ok, names);
  });
}

namespace {

// What an admin sees about an entry (never the key).
json public_view(const json& e, std::time_t now, bool pem) {
  json v{{"name", str(e, "name")}, {"kind", str(e, "kind")}, {"status", str(e, "status")}};
  bool has_cert = !str(e, "cert_pem").empty();
  for (const char* k : {"subject", "issuer", "serial", "fingerprint", "key_type", "file_path"}) v[k] = str(e, k);
  v["key_bits"] = num(e, "key_bits");
  v["sans"] = e.contains("sans") && e["sans"].is_array() ? e["sans"] : json::array();
  v["fields"] = e.contains("fields") && e["fields"].is_object() ? e["fields"] : json::object();
  v["created_at"] = certs::iso_time(num(e, "created_at"));
  v["has_key"] = !str(e, "key_sealed").empty();
  json roles = json::array();
  if (e.contains("bindings") && e["bindings"].is_array())
    for (auto& b : e["bindings"]) roles.push_back(str(b, "sni").empty() ? str(b, "role") : str(b, "role") + ":" + str(b, "sni"));
  if (str(e, "kind") == "file" && e.contains("fields") && e["fields"].is_object() && e["fields"].contains("roles") &&
      e["fields"]["roles"].is_array())
    for (auto& r : e["fields"]["roles"])
      if (r.is_string()) roles.push_back(r);
  v["roles"] = roles;
  if (has_cert) {
    certs::CertMeta m;
    m.not_before = num(e, "not_before");
    m.not_after = num(e, "not_after");
    std::string why;
    certs::Refusal r = certs::check_dates(m, now, why);
    bool chain_ok = e.value("chain_ok", true) == true, key_ok = e.value("key_matches", false) == true;
    if (r == certs::Refusal::kNone && !chain_ok) why = str(e, "chain_error");
    if (r == certs::Refusal::kNone && chain_ok && !key_ok) why = "the private key does not match (or is missing)";
    v.update({{"not_before", certs::iso_time(m.not_before)}, {"not_after", certs::iso_time(m.not_after)},
              {"chain_length", count_certs(str(e, "chain_pem"))}, {"chain_ok", chain_ok}, {"key_matches", key_ok},
              {"valid", why.empty()}, {"invalid_reason", why.empty() ? json(nullptr) : json(why)}});
  } else {
    v.update({{"valid", false}, {"invalid_reason", "a CSR waiting for its certificate"}});
  }
  if (pem) {
    v["cert_pem"] = str(e, "cert_pem");
    v["chain_pem"] = str(e, "chain_pem");
    v["csr_pem"] = str(e, "csr_pem");
  }
  return v;
}

certs::Material material_of(const json& e, const certs::NodeKey& k, bool& key_ok) {
  certs::Material m;
  m.cert_pem = str(e, "cert_pem");
  m.chain_pem = str(e, "chain_pem");
  std::string sealed = str(e, "key_sealed");
  key_ok = sealed.empty() || certs::unseal(k, sealed, m.key_pem.s);
  return m;
}

}  // namespace

void CertStore::handle(const HttpRequest& req, const std::vector<std::string>& p, Responder respond) {
  const std::string& m = req.method;
  json body = json::object();
  if (m == "POST" && !req.body.empty()) {
    body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return respond(fail(400, "the request body must be a JSON object"));
  }
  if (p.size() == 3) {
    if (m == "GET") return list(req, respond);
    return respond(fail(405, "method not allowed"));
  }
  const std::string& a = p[3];
  if (p.size() == 4 && m == "POST") {
    if (a == "csr") return create(true, body, respond);
    if (a == "self-signed") return create(false, body, respond);
    if (a == "import") return import(body, respond);
    if (a == "backup") return backup(body, respond);
    if (a == "restore") return restore(body, respond);
    if (a == "regenerate-defaults") return regenerate(body, respond);
  }
  if (!valid_name(a)) return respond(fail(400, "bad certificate name (1-64 of A-Z a-z 0-9 . _ -): " + esc(a, 80)));
  if (p.size() == 4 && m == "GET") return show(a, req, respond);
  if (p.size() == 4 && m == "DELETE") return remove(a, respond);
  if (p.size() == 5 && p[4] == "export" && (m == "GET" || m == "POST")) return export_entry(a, body, respond);
  if (p.size() == 5 && p[4] == "assign" && m == "POST") return assign(a, body, respond);
  respond(fail(p.size() <= 5 ? 405 : 404, p.size() <= 5 ? "method not allowed" : "no such endpoint"));
}

void CertStore::list(const HttpRequest& req, Responder respond) {
  bool pem = req.query.count("pem") && req.query.at("pem") == "1";
  db_.query(std::string(kSelectEntries) + "ORDER BY c.created_at, c.name", {}, [this, respond, pem](PgResult r) {
    if (!r.ok) return respond(db_fail(r));
    json out = json::array();
    for (auto& row : r.rows) {
      auto j = json::parse(row[0], nullptr, false);
      if (!j.is_discarded()) out.push_back(public_view(j, now(), pem));
    }
    respond(ok(out));
  });
}

void CertStore::show(const std::string& name, const HttpRequest& req, Responder respond) {
  bool pem = req.query.count("pem") && req.query.at("pem") == "1";
  fetch(name, [this, name, pem, respond](bool okq, std::string err, json e) {
    if (!okq) return respond(fail(503, "database: " + err));
    if (e.is_null()) return respond(fail(404, "no such certificate: " + name));
    respond(ok(public_view(e, now(), pem)));
  });
}

void CertStore::insert_entry(json doc, const std::string& event, const std::string& msg, Responder respond, bool upsert) {
  json arr = json::array({doc});
  db_.query(insert_sql(upsert), {arr.dump()}, [this, doc, event, msg, respond](PgResult r) {
    if (!r.ok) {
      if (r.error.find("duplicate key") != std::string::npos)
        return respond(fail(409, "a certificate named " + str(doc, "name") + " was just created elsewhere: try again"));
      return respond(db_fail(r));
    }
    raise_(event, "info", msg, false);
    fetch(str(doc, "name"), [this, doc, msg, respond](bool, std::string, json e) {
      json v = e.is_null() ? json{{"name", str(doc, "name")}} : public_view(e, now(), false);
      v["message"] = msg;
      if (!str(doc, "csr_pem").empty()) v["csr_pem"] = str(doc, "csr_pem");
      respond(ok(v));
    });
  });
}

void CertStore::create(bool csr, const json& body, Responder respond) {
  certs::Subject s = subject_of(body);
  std::string key_name = str(body, "key").empty() ? "rsa2048" : str(body, "key");
  certs::KeySpec ks;
  if (!certs::parse_key_spec(key_name, ks)) return respond(fail(400, "key must be rsa2048, rsa4096 or ec-p256"));
  if (auto e = certs::check_subject(s); !e.empty()) return respond(fail(400, e));
  int days = body.contains("days") && body["days"].is_number_integer() ? body["days"].get<int>() : 825;
  if (days < 1 || days > 3650) return respond(fail(400, "days must be 1 to 3650"));
  std::string want = str(body, "name").empty() ? to_name(s.common_name) : str(body, "name");
  if (!valid_name(want)) return respond(fail(400, "bad certificate name (1-64 of A-Z a-z 0-9 . _ -): " + esc(want, 80)));
  with_names([=, this](bool okq, std::vector<std::string> names) {
    if (!okq) return respond(fail(503, "database unavailable"));
    std::string name = free_name(want, names);
    auto made = std::make_shared<certs::Made>();
    std::time_t t = now();
    off_loop([made, s, ks, csr, days, t] { *made = csr ? certs::make_csr(s, ks) : certs::make_self_signed(s, ks, days, t); },
             [=, this] {
               if (!made->error.empty()) return respond(fail(400, made->error));
               certs::Material m;
               std::string csr_pem;
               if (csr) {
                 csr_pem = made->pem;
               } else {
                 certs::ImportInput in;
                 in.cert_pem = made->pem;
                 in.key_pem = made->key_pem;
                 auto pr = certs::parse_import(in);
                 if (!pr.ok()) return respond(fail(500, pr.error));
                 m = std::move(pr.m);
               }
               json doc = entry_doc(name, csr ? "csr" : "self-signed", m, certs::seal(key_, made->key_pem.s),
                                    fields_of(s, certs::key_spec_name(ks)), csr_pem);
               if (csr) doc["spki"] = certs::spki_of_csr(csr_pem);
               std::string msg = name != want ? renamed_message(name)
                                              : std::string(csr ? "CSR " : "self-signed certificate ") + name + " created";
               insert_entry(doc, csr ? "CERT_CSR_CREATED" : "CERT_SELF_SIGNED_CREATED", msg, respond);
             });
  });
}

void CertStore::import(const json& body, Responder respond) {
  auto job = std::make_shared<ImportJob>();
  job->in.cert_pem = str(body, "cert_pem");
  job->in.key_pem.s = str(body, "key_pem");
  job->in.passphrase.s = str(body, "passphrase");
  job->force = body.value("force", false) == true;
  job->name = str(body, "name");
  job->file = str(body, "filename");
  if (!str(body, "pkcs12").empty() && !certs::base64_decode(str(body, "pkcs12"), job->in.pkcs12_der))
    return respond(fail(400, "pkcs12 must be base64"));
  if (job->in.cert_pem.empty() && job->in.pkcs12_der.empty())
    return respond(fail(400, "cert_pem or pkcs12 is required"));
  if (!job->name.empty() && !valid_name(job->name))
    return respond(fail(400, "bad certificate name (1-64 of A-Z a-z 0-9 . _ -): " + esc(job->name, 80)));
  off_loop([job] { job->pr = certs::parse_import(job->in); }, [this, job, respond] {
    auto refuse = [this, respond](const std::string& why, certs::Refusal r) {
      raise_("CERT_IMPORT_REFUSED", "warning", "certificate import refused: " + why, false);
      respond(fail(422, why, certs::reason_code(r)));
    };
    if (!job->pr.ok()) return refuse(job->pr.error, job->pr.refusal);
    std::string why;
    if (auto r = certs::check_dates(job->pr.m.meta, now(), why); r != certs::Refusal::kNone && !job->force)
      return refuse(why + " (force: true stores it anyway, unassignable)", r);
    // A certificate for a CSR made here completes that entry.
    db_.query(std::string(kSelectEntries) + "WHERE c.cert_pem IS NULL AND c.spki_sha256 = $1",
              {job->pr.m.meta.spki_sha256}, [this, job, respond, refuse](PgResult r) {
                if (!r.ok) return respond(db_fail(r));
                if (!r.rows.empty()) {
                  auto e = json::parse(r.rows[0][0], nullptr, false);
                  if (!e.is_discarded()) return complete_request(e, job, respond);
                }
                if (!job->pr.m.meta.has_key)
                  return refuse("no private key: give the key (or a PKCS#12 file), or import the certificate issued "
                                "for a CSR made here",
                                certs::Refusal::kNoKey);
                std::string want = !job->name.empty() ? job->name
                                   : !job->file.empty() ? name_from_file(job->file)
                                                        : to_name(job->pr.m.meta.subject.substr(
                                                              job->pr.m.meta.subject.find("CN=") == std::string::npos
                                                                  ? 0
                                                                  : job->pr.m.meta.subject.find("CN=") + 3));
                if (want.empty()) want = "imported";
                with_names([this, job, want, respond](bool okq, std::vector<std::string> names) {
                  if (!okq) return respond(fail(503, "database unavailable"));
                  std::string name = free_name(want, names);
                  json doc = entry_doc(name, "imported", job->pr.m, certs::seal(key_, job->pr.m.key_pem.s), json::object());
                  std::string msg = name != want ? renamed_message(name)
                                                 : "certificate " + name + " imported (" + job->pr.m.meta.subject + ")";
                  insert_entry(doc, "CERT_IMPORTED", msg, respond);
                });
              });
  });
}

void CertStore::complete_request(json req_entry, std::shared_ptr<ImportJob> job, Responder respond) {
  std::string name = str(req_entry, "name");
  certs::Material m = std::move(job->pr.m);
  bool key_ok = false;
  certs::Material have = material_of(req_entry, key_, key_ok);
  if (!key_ok) return respond(fail(500, "cannot open the private key of " + name + " (another node key?)"));
  m.key_pem = have.key_pem;
  std::string err;
  if (!certs::describe(m.cert_pem, m.chain_pem, m.key_pem.s, m.meta, err)) return respond(fail(422, err));
  json doc = entry_doc(name, "csr", m, str(req_entry, "key_sealed"), req_entry.value("fields", json::object()),
                       str(req_entry, "csr_pem"));
  std::string msg = "the certificate completes the request " + name + " (requested -> unused)";
  if (!job->name.empty() && job->name != name) msg = renamed_message(name);
  db_.query(insert_sql(true) + " WHERE certificates.cert_pem IS NULL", {json::array({doc}).dump()},
            [this, doc, msg, respond](PgResult r) {
              if (!r.ok) return respond(db_fail(r));
              raise_("CERT_IMPORTED", "info", msg, false);
              refresh_status();
              fetch(str(doc, "name"), [this, msg, respond](bool, std::string, json e) {
                json v = public_view(e, now(), false);
                v["message"] = msg;
                v["completed"] = true;
                respond(ok(v));
              });
            });
}

void CertStore::export_entry(const std::string& name, const json& body, Responder respond) {
  std::string password = str(body, "password"), format = str(body, "format");
  if (format.empty()) format = "pkcs12";
  if (format != "pkcs12" && format != "pkcs8" && format != "pem")
    return respond(fail(400, "format must be pkcs12, pkcs8 or pem"));
  fetch(name, [=, this](bool okq, std::string err, json e) {
    if (!okq) return respond(fail(503, "database: " + err));
    if (e.is_null()) return respond(fail(404, "no such certificate: " + name));
    if (str(e, "cert_pem").empty()) return respond(ok({{"name", name}, {"csr_pem", str(e, "csr_pem")}}));
    bool key_ok = false;
    auto m = std::make_shared<certs::Material>(material_of(e, key_, key_ok));
    if (password.empty() || format == "pem") {
      raise_("CERT_EXPORTED", "info", "certificate " + name + " exported (certificate and chain)", false);
      return respond(ok({{"name", name}, {"cert_pem", certs::export_pem(*m)}}));
    }
    if (!key_ok) return respond(fail(500, "cannot open the private key of " + name + " (another node key?)"));
    auto out = std::make_shared<std::pair<std::string, std::string>>();  // bytes, error
    off_loop([m, out, password, format, name] {
      out->first = format == "pkcs12" ? certs::export_pkcs12(*m, password, name, out->second)
                                      : certs::export_encrypted_key(*m, password, out->second);
    }, [=, this] {
      if (out->first.empty()) return respond(fail(400, out->second));
      raise_("CERT_EXPORTED", "warning", "certificate " + name + " exported with its private key (" + format + ")", false);
      json j{{"name", name}, {"cert_pem", certs::export_pem(*m)}};
      if (format == "pkcs12") j["pkcs12"] = certs::base64_encode(out->first);
      else j["key_pem"] = out->first;
      respond(ok(j));
    });
  });
}

void CertStore::assign(const std::string& name, const json& body, Responder respond) {
  std::vector<tls::Role> roles;
  std::string rs;
  if (!body.contains("roles") || !body["roles"].is_array() || body["roles"].empty())
    return respond(fail(400, "roles is required: inbound_mta, outbound_mta, admin_console, euq_console"));
  for (auto& v : body["roles"]) {
    tls::Role r;
    if (!v.is_string() || !parse_role(v.get<std::string>(), r))
      return respond(fail(400, "unknown role " + esc(v.dump(), 80) + ": inbound_mta, outbound_mta, admin_console, euq_console"));
    if (std::find(roles.begin(), roles.end(), r) == roles.end()) roles.push_back(r);
  }
  for (auto r : roles) rs += (rs.empty() ? "" : ", ") + std::string(tls::role_name(r));
  bool add = body.value("add", false) == true;
  // A per-name binding (SNI) serves clients that ask for that host name; the inbound role only.
  std::string sni = ascii_lower(str(body, "sni"));
  if (!sni.empty() && sni.back() == '.') sni.pop_back();
  if (!sni.empty()) {
    bool name_ok = sni.size() <= 253 && sni.find("..") == std::string::npos && sni.front() != '.' &&
                   std::all_of(sni.begin(), sni.end(), [](char c) {
                     return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '*';
                   });
    if (!name_ok) return respond(fail(400, "bad SNI name " + esc(sni, 80) + " (a host name such as mx.example.test)"));
    if (roles.size() != 1 || roles[0] != tls::Role::kInboundMta)
      return respond(fail(400, "SNI names are for the inbound role only (--role inbound)"));
  }
  fetch(name, [=, this](bool okq, std::string err, json e) {
    if (!okq) return respond(fail(503, "database: " + err));
    if (e.is_null()) return respond(fail(404, "no such certificate: " + name));
    auto refuse = [this, respond, name, rs](const std::string& why, const std::string& code) {
      raise_("CERT_ASSIGN_REFUSED", "warning", "certificate " + name + " refused for " + rs + ": " + why +
                                                    " (the roles keep what they had)", false);
      respond(fail(409, "certificate " + name + " refused for " + rs + ": " + why, code));
    };
    if (str(e, "cert_pem").empty()) return refuse("it is a CSR waiting for its certificate (status requested)", "requested");
    if (str(e, "kind") == "file")
      return refuse("it is file-backed (" + esc(str(e, "file_path")) + "): a role serves it when the configuration "
                    "names that file; import the file to bind it from the store", "file_backed");
    bool key_ok = false;
    certs::Material m = material_of(e, key_, key_ok);
    if (!key_ok) return refuse("cannot open its private key (sealed under another node key: nodes sharing a database "
                               "must share node.key)", "key_sealed_elsewhere");
    std::string why;
    if (auto r = certs::validate(m, now(), why); r != certs::Refusal::kNone) return refuse(why, certs::reason_code(r));
    auto cfg = rt_.config.load();
    std::vector<CertBinding> next = bindings_;
    json role_names = json::array(), want = json::array();
    for (auto r : roles) {
      std::string rn = tls::role_name(r);
      int64_t gen = 0;
      for (auto& b : next)
        if (b.role == rn) gen = std::max(gen, b.generation);
      std::erase_if(next, [&](const CertBinding& b) {
        return b.role == rn && b.sni == sni && (!add || b.key_type == str(e, "key_type"));
      });
      CertBinding nb{rn, str(e, "key_type"), sni, name, configured_file(r, *cfg), gen + 1,
                     m.cert_pem, m.chain_pem, str(e, "key_sealed"), str(e, "fingerprint")};
      next.push_back(nb);
      role_names.push_back(rn);
    }
    for (auto& b : next)
      if (std::find(role_names.begin(), role_names.end(), b.role) != role_names.end()) want.push_back(binding_json(b, false));
    auto built = std::make_shared<std::vector<std::pair<tls::Role, tls::BuildResult>>>();
    for (auto r : roles) {
      tls::BuildResult br;
      if (auto be = build_role(r, next, *cfg, br); !be.empty()) return refuse(be, "build_failed");
      built->emplace_back(r, std::move(br));
    }
    db_.query(kReplaceBindings, {role_names.dump(), want.dump(), node_}, [=, this](PgResult r) mutable {
      if (!r.ok) return respond(db_fail(r));
      json out = json::array();
      for (auto& [role, br] : *built) {
        auto& p = rt_.tls.role(role);
        p.publish(std::move(br));
        auto cur = p.current();
        spdlog::info("certificate store: role={} generation={} entry={} fingerprint={} (assigned)", tls::role_name(role),
                     cur->generation, name, cur->fingerprint_sha256);
        out.push_back({{"role", tls::role_name(role)}, {"generation", cur->generation},
                       {"fingerprint", cur->fingerprint_sha256}});
      }
      bindings_ = std::move(next);
      write_cache();
      write_trust_file();
      refresh_status();
      raise_("CERT_ASSIGNED", "info", "certificate " + name + " (" + str(e, "fingerprint") + ") assigned to " + rs +
                                          (add ? " beside the other key type" : ""), false);
      respond(ok({{"name", name}, {"roles", out}, {"add", add}}));
    });
  });
}

void CertStore::remove(const std::string& name, Responder respond) {
  fetch(name, [=, this](bool okq, std::string err, json e) {
    if (!okq) return respond(fail(503, "database: " + err));
    if (e.is_null()) return respond(fail(404, "no such certificate: " + name));
    if (e.contains("bindings") && !e["bindings"].empty()) {
      std::string roles;
      for (auto& b : e["bindings"]) roles += (roles.empty() ? "" : ", ") + str(b, "role");
      return respond(fail(409, "certificate " + name + " is in use by " + roles + ": assign another one first", "in_use"));
    }
    if (str(e, "status") == "in use")  // a file-backed entry whose file a role serves
      return respond(fail(409, "certificate " + name + " is in use: the configuration names its file " +
                                   esc(str(e, "file_path")) + " for " + public_view(e, now(), false)["roles"].dump(),
                          "in_use"));
    db_.query("DELETE FROM certificates c WHERE c.name = $1 AND NOT EXISTS (SELECT 1 FROM role_bindings b WHERE "
              "b.cert_name = c.name)", {name}, [=, this](PgResult r) {
      if (!r.ok) return respond(db_fail(r));
      raise_("CERT_DELETED", "info", "certificate " + name + " deleted", false);
      respond(ok({{"deleted", name}}));
    });
  });
}

void CertStore::backup(const json& body, Responder respond) {
  std::string password = str(body, "password");
  if (password.size() < 8) return respond(fail(400, "a backup password of at least 8 characters is required"));
  db_.query(std::string(kSelectEntries) + "ORDER BY c.created_at, c.name", {}, [=, this](PgResult r) {
    if (!r.ok) return respond(db_fail(r));
    auto payload = std::make_shared<json>(json{{"format", "postern-certs"}, {"version", 1}, {"node", node_},
                                               {"created_at", static_cast<int64_t>(std::time(nullptr))}});
    json entries = json::array(), bindings = json::array();
    for (auto& row : r.rows) {
      auto e = json::parse(row[0], nullptr, false);
      if (e.is_discarded()) continue;
      std::string key;
      if (!str(e, "key_sealed").empty() && !certs::unseal(key_, str(e, "key_sealed"), key))
        return respond(fail(500, "cannot open the private key of " + str(e, "name") + " (another node key?)"));
      for (auto& b : e["bindings"])
        bindings.push_back({{"role", str(b, "role")}, {"key_type", str(b, "key_type")}, {"sni", str(b, "sni")},
                            {"entry", str(e, "name")}, {"generation", num(b, "generation")},
                            {"file_path", str(b, "file_path")}});
      e.erase("key_sealed");
      e.erase("bindings");
      e.erase("status");
      e["key_pem"] = key;
      certs::wipe(key);
      entries.push_back(std::move(e));
    }
    size_t ne = entries.size(), nb = bindings.size();
    (*payload)["entries"] = std::move(entries);
    (*payload)["bindings"] = std::move(bindings);
    auto out = std::make_shared<std::pair<std::string, std::string>>();
    off_loop([payload, out, password] {
      std::string text = payload->dump();
      out->first = certs::encrypt_backup(text, password, out->second);
      certs::wipe(text);
    }, [=, this] {
      if (out->first.empty()) return respond(fail(500, out->second));
      raise_("CERT_BACKUP", "info", "certificate store backed up: " + std::to_string(ne) + " entries, " +
                                        std::to_string(nb) + " bindings", false);
      respond(ok({{"file", certs::base64_encode(out->first)}, {"entries", ne}, {"bindings", nb}}));
    });
  });
}

void CertStore::restore(const json& body, Responder respond) {
  std::string password = str(body, "password"), file;
  if (!certs::base64_decode(str(body, "file"), file) || file.empty())
    return respond(fail(400, "file (the backup, base64) is required"));
  auto out = std::make_shared<std::pair<std::string, std::string>>();
  auto ok_flag = std::make_shared<bool>(false);
  off_loop([=] { *ok_flag = certs::decrypt_backup(file, password, out->first, out->second); }, [=, this] {
    if (!*ok_flag) return respond(fail(422, out->second, "bad_backup"));
    auto p = json::parse(out->first, nullptr, false);
    certs::wipe(out->first);
    if (p.is_discarded() || str(p, "format") != "postern-certs" || !p["entries"].is_array() || !p["bindings"].is_array())
      return respond(fail(422, "the backup's contents do not parse", "bad_backup"));
    json docs = json::array();
    std::set<std::string> names;
    for (auto& e : p["entries"]) {
      std::string name = str(e, "name");
      if (!valid_name(name)) return respond(fail(422, "bad entry name in the backup: " + esc(name, 80), "bad_backup"));
      certs::Material m;
      m.cert_pem = str(e, "cert_pem");
      m.chain_pem = str(e, "chain_pem");
      m.key_pem.s = str(e, "key_pem");
      std::string err;
      if (!m.cert_pem.empty() && !certs::describe(m.cert_pem, m.chain_pem, m.key_pem.s, m.meta, err))
        return respond(fail(422, "entry " + name + ": " + err, "bad_backup"));
      json doc = entry_doc(name, str(e, "kind"), m, m.key_pem.s.empty() ? "" : certs::seal(key_, m.key_pem.s),
                           e.value("fields", json::object()), str(e, "csr_pem"));
      if (m.cert_pem.empty()) doc["spki"] = certs::spki_of_csr(str(e, "csr_pem"));
      if (!str(e, "file_path").empty()) doc["file_path"] = str(e, "file_path");
      docs.push_back(doc);
      names.insert(name);
    }
    json roles = json::array(), want = json::array();
    for (auto& b : p["bindings"]) {
      tls::Role r;
      if (!parse_role(str(b, "role"), r) || tls::role_name(r) != str(b, "role") || !names.count(str(b, "entry")))
        return respond(fail(422, "a binding in the backup names an unknown role or entry", "bad_backup"));
      want.push_back(b);
    }
    for (tls::Role r : tls::kRoles) roles.push_back(tls::role_name(r));
    size_t ne = docs.size(), nb = want.size();
    db_.query(insert_sql(true), {docs.dump()}, [=, this](PgResult ir) {
      if (!ir.ok) return respond(db_fail(ir));
      db_.query(kReplaceBindings, {roles.dump(), want.dump(), node_}, [=, this](PgResult br) {
        if (!br.ok) return respond(db_fail(br));
        refresh_status();
        load_bindings([=, this](bool) {
          raise_("CERT_RESTORED", "warning", "certificate store restored from a backup: " + std::to_string(ne) +
                                                 " entries, " + std::to_string(nb) + " bindings", false);
          respond(ok({{"restored", true}, {"entries", ne}, {"bindings", nb}}));
        });
      });
    });
  });
}

// seed 002 -c: new default certificates; the roles bound to them serve the new ones at once.
void CertStore::regenerate(const json& body, Responder respond) {
  std::string which = str(body, "which").empty() ? "both" : str(body, "which");
  if (which != "mta" && which != "console" && which != "both")
    return respond(fail(400, "which must be mta, console or both"));
  auto cfg = rt_.config.load();
  std::vector<std::string> names;
  if (which != "console") names.push_back("default_mta");
  if (which != "mta") names.push_back("default_console");
  auto made = std::make_shared<std::vector<certs::Made>>(names.size());
  std::time_t t = now();
  std::string host = cfg->hostname;
  off_loop([made, names, host, t] {
    for (size_t i = 0; i < names.size(); ++i) {
      certs::Subject s;
      s.common_name = host;
      s.sans = {"DNS:" + host};
      if (names[i] == "default_console") s.sans.push_back("IP:127.0.0.1");
      (*made)[i] = certs::make_self_signed(s, certs::KeySpec::kEcP256, 825, t);
    }
  }, [=, this] {
    json docs = json::array();
    std::string dir = cfg->state_dir + "/certs/";
    for (size_t i = 0; i < names.size(); ++i) {
      auto& mk = (*made)[i];
      if (!mk.error.empty()) return respond(fail(500, mk.error));
      certs::ImportInput in;
      in.cert_pem = mk.pem;
      in.key_pem = mk.key_pem;
      auto pr = certs::parse_import(in);
      if (!pr.ok()) return respond(fail(500, pr.error));
      // The files too: posternd falls back to them and a fresh node starts from them.
      if (!write_file_atomic(dir + names[i] + ".key", mk.key_pem.s, 0600) ||
          !write_file_atomic(dir + names[i] + ".crt", mk.pem, 0644))
        return respond(fail(500, "cannot write " + dir + names[i] + ".*"));
      docs.push_back(entry_doc(names[i], "self-signed", pr.m, certs::seal(key_, pr.m.key_pem.s), {{"cn", host}}));
    }
    db_.query(insert_sql(true), {docs.dump()}, [=, this](PgResult r) {
      if (!r.ok) return respond(db_fail(r));
      db_.query("SELECT pg_notify('postern', json_build_object('node', $1::text, 'kind', 'certs')::text)", {node_},
                [](PgResult) {});
      load_bindings([=, this](bool) {
        json out = json::array();
        for (auto& d : docs) out.push_back({{"name", str(d, "name")}, {"fingerprint", str(d, "fingerprint")}});
        std::string list;
        for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
        raise_("CERT_REGENERATED", "warning", "default certificates regenerated: " + list, false);
        respond(ok({{"regenerated", out}}));
      });
    });
  });
}

}  // namespace postern::admin
