// context_provider.cpp — see context_provider.h. Security-sensitive: PEM parsing of hostile or
// mistaken uploads (every OpenSSL result checked, errors folded into one message), the
// passphrase callback (never a prompt), the session-id context that pins resumption to the
// certificates, and the self-signed defaults.
#include "tls/context_provider.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tls/ticket_keys.h"

namespace postern::tls {
namespace {

constexpr size_t kMaxPemFile = 1 << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct ChainFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
struct FileCloser {
  void operator()(FILE* f) const {
    if (f) std::fclose(f);
  }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using ChainPtr = std::unique_ptr<STACK_OF(X509), ChainFree>;

std::string asn1_time_iso(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::time_t asn1_time_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return timegm(&tm);
}

BioPtr mem_bio(const std::string& s) { return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))); }

bool pem_end_of_input() {
  unsigned long e = ERR_peek_last_error();
  return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

// The passphrase is handed to OpenSSL only through this callback: no terminal prompt, ever.
int passphrase_cb(char* buf, int size, int, void* u) {
  const auto* pass = static_cast<const std::string*>(u);
  if (pass->empty() || static_cast<int>(pass->size()) > size) return 0;
  std::memcpy(buf, pass->data(), pass->size());
  return static_cast<int>(pass->size());
}

std::string hex_fingerprint(X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1) return "";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, i ? ":%02X" : "%02X", md[i]);
    out += b;
  }
  return out;
}

std::string key_type(EVP_PKEY* k) {
  int id = EVP_PKEY_get_base_id(k);
  if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) return "RSA-" + std::to_string(EVP_PKEY_get_bits(k));
  if (id == EVP_PKEY_EC) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) == 1)
      return std::string("EC-") + group;
    return "EC";
  }
  const char* sn = OBJ_nid2sn(id);
  return sn ? sn : "unknown";
}

// The class of a key for "one certificate per key type": RSA and RSA-PSS share OpenSSL's slot.
int key_slot(EVP_PKEY* k) {
  int id = EVP_PKEY_get_base_id(k);
  return id == EVP_PKEY_RSA_PSS ? EVP_PKEY_RSA : id;
}

struct Parsed {
  X509Ptr leaf;
  ChainPtr chain{sk_X509_new_null()};
  PkeyPtr key;
};

std::string parse_certs(const Identity& id, Parsed& p) {
  auto bio = mem_bio(id.cert_pem);
  if (!bio || !p.chain) return "out of memory";
  p.leaf.reset(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!p.leaf) return "no PEM certificate in " + id.source + ": " + openssl_errors();
  for (;;) {
    X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!x) break;
    if (sk_X509_push(p.chain.get(), x.get()) <= 0) return "out of memory";
    x.release();
  }
  if (!pem_end_of_input()) return "cannot parse the chain in " + id.source + ": " + openssl_errors();
  ERR_clear_error();
  return "";
}

std::string parse_key(const Identity& id, Parsed& p) {
  if (id.key_pem.empty()) return "no private key given for " + id.source;
  auto bio = mem_bio(id.key_pem);
  if (!bio) return "out of memory";
  p.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, passphrase_cb, const_cast<std::string*>(&id.passphrase)));
  if (p.key) return "";
  bool encrypted = id.key_pem.find("ENCRYPTED") != std::string::npos;
  if (encrypted && id.passphrase.empty()) {
    ERR_clear_error();
    return "the private key for " + id.source + " is encrypted and no passphrase was given";
  }
  return "cannot read the private key for " + id.source + (encrypted ? " (wrong passphrase?)" : "") + ": " +
         openssl_errors();
}

std::string check_dates(const Identity& id, X509* x, std::time_t now) {
  std::time_t t = now ? now : std::time(nullptr);
  if (X509_cmp_time(X509_get0_notAfter(x), &t) <= 0)
    return "certificate " + id.source + " has expired (notAfter " + asn1_time_iso(X509_get0_notAfter(x)) + ")";
  if (X509_cmp_time(X509_get0_notBefore(x), &t) >= 0)
    return "certificate " + id.source + " is not valid yet (notBefore " + asn1_time_iso(X509_get0_notBefore(x)) + ")";
  return "";
}

CertInfo describe(const Identity& id, const Parsed& p) {
  CertInfo ci;
  ci.source = id.source;
  ci.key_type = key_type(p.key.get());
  ci.fingerprint_sha256 = hex_fingerprint(p.leaf.get());
  char subj[512];
  X509_NAME_oneline(X509_get_subject_name(p.leaf.get()), subj, sizeof subj);
  ci.subject = subj;
  ci.not_before = asn1_time_iso(X509_get0_notBefore(p.leaf.get()));
  ci.not_after = asn1_time_iso(X509_get0_notAfter(p.leaf.get()));
  ci.not_before_unix = asn1_time_unix(X509_get0_notBefore(p.leaf.get()));
  ci.not_after_unix = asn1_time_unix(X509_get0_notAfter(p.leaf.get()));
  ci.chain_length = static_cast<size_t>(sk_X509_num(p.chain.get()));
  return ci;
}

// Parses, checks and installs one certificate with its chain and key.
std::string add_identity(SSL_CTX* ctx, const Identity& id, std::time_t now, std::vector<int>& slots,
                         std::vector<CertInfo>& out) {
  Parsed p;
  if (auto e = parse_certs(id, p); !e.empty()) return e;
  if (auto e = parse_key(id, p); !e.empty()) return e;
  if (X509_check_private_key(p.leaf.get(), p.key.get()) != 1) {
    ERR_clear_error();
    return "the private key does not match certificate " + id.source;
  }
  if (auto e = check_dates(id, p.leaf.get(), now); !e.empty()) return e;
  int slot = key_slot(p.key.get());
  if (std::find(slots.begin(), slots.end(), slot) != slots.end())
    return "two certificates with " + key_type(p.key.get()) + " keys (one per key type): " + id.source;
  if (SSL_CTX_use_cert_and_key(ctx, p.leaf.get(), p.key.get(), p.chain.get(), 1) != 1)
    return "certificate " + id.source + " refused: " + openssl_errors();
  slots.push_back(slot);
  out.push_back(describe(id, p));
  return "";
}

// A digest of the role and the certificates: OpenSSL resumes a session (from its cache or a
// ticket) only under the same session-id context, so never across a change of certificate.
std::string set_session_context(SSL_CTX* ctx, Role role, const std::vector<CertInfo>& certs) {
  std::vector<std::string> fps;
  for (auto& c : certs) fps.push_back(c.fingerprint_sha256);
  std::sort(fps.begin(), fps.end());
  std::string text = std::string("postern/") + role_name(role);
  for (auto& f : fps) text += "/" + f;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(text.data(), text.size(), md, &n, EVP_sha256(), nullptr) != 1 ||
      SSL_CTX_set_session_id_context(ctx, md, std::min<unsigned>(n, SSL_MAX_SID_CTX_LENGTH)) != 1)
    return "cannot set the session-id context: " + openssl_errors();
  return "";
}

std::string configure(SSL_CTX* ctx, const ContextOptions& opt) {
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return "cannot set TLS 1.2 minimum: " + openssl_errors();
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  if (!opt.server) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    int ok = opt.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                                 : SSL_CTX_load_verify_locations(ctx, opt.ca_file.c_str(), nullptr);
    if (ok != 1) return "cannot load CA store " + opt.ca_file + ": " + openssl_errors();
    return "";
  }
  SSL_CTX_set_timeout(ctx, static_cast<long>(std::max<int64_t>(opt.session_lifetime.count(), 1)));
  if (!opt.tickets) {  // no tickets at all: neither TLS 1.2's nor TLS 1.3's (stateful ones included)
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (SSL_CTX_set_num_tickets(ctx, 0) != 1) return "cannot turn session tickets off: " + openssl_errors();
    return "";
  }
  return opt.tickets->attach(ctx);
}

// --- per-role handshake counting -----------------------------------------------------------------
// The SSL_CTX carries its role's RoleStats; each SSL carries, while its handshake runs, a pointer
// to them (then kDone). An SSL freed while the pointer is still there never finished: a failure.
char kDone;

int ctx_stats_index() {
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

void ssl_state_free(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  if (ptr && ptr != &kDone) static_cast<RoleStats*>(ptr)->handshake_failures.fetch_add(1, std::memory_order_relaxed);
}

int ssl_state_index() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, ssl_state_free);
  return idx;
}

// TLS 1.3 may report HANDSHAKE_DONE again after post-handshake messages: counted once per SSL.
void info_cb(const SSL* cs, int where, int) {
  if (!(where & (SSL_CB_HANDSHAKE_START | SSL_CB_HANDSHAKE_DONE))) return;
  SSL* s = const_cast<SSL*>(cs);
  void* st = SSL_get_ex_data(s, ssl_state_index());
  if (where & SSL_CB_HANDSHAKE_START) {
    auto* rs = static_cast<RoleStats*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ctx_stats_index()));
    if (!st && rs) SSL_set_ex_data(s, ssl_state_index(), rs);
    return;
  }
  if (st && st != &kDone) {
    static_cast<RoleStats*>(st)->handshakes.fetch_add(1, std::memory_order_relaxed);
    SSL_set_ex_data(s, ssl_state_index(), &kDone);
  }
}

std::string attach_stats(SSL_CTX* ctx, const std::shared_ptr<RoleStats>& stats) {
  if (!stats) return "";
  if (ctx_stats_index() < 0 || ssl_state_index() < 0 || SSL_CTX_set_ex_data(ctx, ctx_stats_index(), stats.get()) != 1)
    return "cannot attach the handshake counters: " + openssl_errors();
  SSL_CTX_set_info_callback(ctx, info_cb);
  return "";
}

// --- SNI -------------------------------------------------------------------------------------------

// The name as sent, lower-cased, without a trailing dot; "" when it is not a host name.
std::string normal_host(std::string_view n, bool allow_wildcard) {
  if (!n.empty() && n.back() == '.') n.remove_suffix(1);
  std::string out;
  bool wild = allow_wildcard && n.size() > 2 && n.substr(0, 2) == "*.";
  if (wild) n.remove_prefix(2);
  if (n.empty() || n.size() > 253) return "";
  size_t label = 0;
  for (char ch : n) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '.') {
      if (label == 0) return "";
      label = 0;
    } else if (std::isalnum(c) || c == '-') {
      if (++label > 63) return "";
    } else {
      return "";
    }
    out.push_back(static_cast<char>(std::tolower(c)));
  }
  if (label == 0) return "";
  return wild ? "*." + out : out;
}

// Runs on a worker thread during the ClientHello: switches the SSL to the set for the name sent.
// `arg` is the default set, which the SSL's owner keeps alive (and with it the SNI sets).
int servername_cb(SSL* ssl, int*, void* arg) {
  const auto* set = static_cast<const ContextSet*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  const ContextSet& pick = set->for_name(name);
  if (&pick != set && SSL_set_SSL_CTX(ssl, pick.ctx) == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

const ContextSet& ContextSet::for_name(std::string_view server_name) const {
  if (sni.empty()) return *this;
  std::string n = normal_host(server_name, false);
  if (n.empty()) return *this;
  for (auto& [name, set] : sni)
    if (name == n) return *set;
  auto dot = n.find('.');
  if (dot == std::string::npos || dot == 0) return *this;
  std::string wild = "*" + n.substr(dot);
  for (auto& [name, set] : sni)
    if (name == wild) return *set;
  return *this;
}

Identity::~Identity() {
  if (!key_pem.empty()) OPENSSL_cleanse(key_pem.data(), key_pem.size());
  if (!passphrase.empty()) OPENSSL_cleanse(passphrase.data(), passphrase.size());
}

ContextSet::~ContextSet() {
  if (ctx) SSL_CTX_free(ctx);
}

const char* role_name(Role r) {
  switch (r) {
    case Role::kInboundMta: return "inbound_mta";
    case Role::kOutboundMta: return "outbound_mta";
    case Role::kAdminConsole: return "admin_console";
    case Role::kEuqConsole: return "euq_console";
  }
  return "?";
}

std::string openssl_errors() {
  std::string r;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!r.empty()) r += "; ";
    r += buf;
  }
  return r.empty() ? "unknown OpenSSL error" : r;
}

BuildResult build_context(const std::vector<Identity>& ids, const ContextOptions& opt) {
  ERR_clear_error();
  if (opt.server && ids.empty()) return {nullptr, "no certificate given"};
  SSL_CTX* ctx = SSL_CTX_new(opt.server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return {nullptr, "SSL_CTX_new: " + openssl_errors()};
  auto set = std::make_shared<ContextSet>();
  set->ctx = ctx;
  set->tickets = opt.server ? opt.tickets : nullptr;
  set->stats = opt.stats;
  if (auto e = configure(ctx, opt); !e.empty()) return {nullptr, e};
  if (auto e = attach_stats(ctx, opt.stats); !e.empty()) return {nullptr, e};
  std::vector<int> slots;
  for (auto& id : ids)
    if (auto e = add_identity(ctx, id, opt.now, slots, set->certs); !e.empty()) return {nullptr, e};
  if (opt.server)
    if (auto e = set_session_context(ctx, opt.role, set->certs); !e.empty()) return {nullptr, e};
  if (!set->certs.empty()) {
    const CertInfo& c = set->certs.front();
    set->cert_file = c.source;
    set->fingerprint_sha256 = c.fingerprint_sha256;
    set->subject = c.subject;
    set->not_after = c.not_after;
  }
  return {set, ""};
}

BuildResult build_context_sni(const std::vector<Identity>& ids,
                              const std::vector<std::pair<std::string, std::vector<Identity>>>& sni,
                              const ContextOptions& opt) {
  if (!sni.empty() && !opt.server) return {nullptr, "SNI names are for server roles only"};
  BuildResult def = build_context(ids, opt);
  if (!def.set || sni.empty()) return def;
  std::vector<std::pair<std::string, std::shared_ptr<const ContextSet>>> sets;
  for (auto& [raw, sids] : sni) {
    std::string name = normal_host(raw, true);
    if (name.empty()) return {nullptr, "bad SNI name '" + raw.substr(0, 255) + "' (a host name or *.host name)"};
    for (auto& [have, set] : sets)
      if (have == name) return {nullptr, "SNI name " + name + " given twice"};
    BuildResult br = build_context(sids, opt);
    if (!br.set) return {nullptr, "SNI " + name + ": " + br.error};
    sets.emplace_back(name, std::move(br.set));
  }
  def.set->sni = std::move(sets);
  SSL_CTX_set_tlsext_servername_callback(def.set->ctx, servername_cb);
  if (SSL_CTX_set_tlsext_servername_arg(def.set->ctx, def.set.get()) != 1)
    return {nullptr, "cannot install the SNI callback: " + openssl_errors()};
  return def;
}

std::string read_pem_file(const std::string& path, std::string& out) {
  out.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open " + path + ": " + std::strerror(errno);
  out.resize(kMaxPemFile + 1);
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  auto n = static_cast<size_t>(in.gcount());
  if (in.bad()) {
    OPENSSL_cleanse(out.data(), out.size());
    out.clear();
    return "cannot read " + path;
  }
  if (n > kMaxPemFile) {
    OPENSSL_cleanse(out.data(), out.size());
    out.clear();
    return path + " is larger than 1 MiB: not a PEM certificate or key";
  }
  out.resize(n);
  return "";
}

BuildResult build_context_files(const std::string& cert_file, const std::string& key_file,
                                const ContextOptions& opt) {
  std::vector<Identity> ids;
  if (!cert_file.empty() || opt.server) {
    Identity& id = ids.emplace_back();
    id.source = cert_file;
    if (auto e = read_pem_file(cert_file, id.cert_pem); !e.empty()) return {nullptr, "cannot load certificate: " + e};
    if (auto e = read_pem_file(key_file, id.key_pem); !e.empty()) return {nullptr, "cannot load private key: " + e};
  }
  return build_context(ids, opt);
}

std::string ContextProvider::publish(BuildResult br) {
  if (!br.set) {
    failures_.fetch_add(1);
    std::lock_guard lk(err_mu_);
    last_error_ = br.error.empty() ? "unknown error" : br.error;
    return last_error_;
  }
  br.set->generation = next_gen_.fetch_add(1);
  snap_.publish(std::move(br.set));
  reloads_.fetch_add(1);
  std::lock_guard lk(err_mu_);
  last_error_.clear();
  return "";
}

uint64_t ContextProvider::generation() const {
  auto c = current();
  return c ? c->generation : 0;
}

std::string ContextProvider::last_error() const {
  std::lock_guard lk(err_mu_);
  return last_error_;
}

bool offer_client_session(SSL* ssl, const ContextSet& set, const std::string& verified_name, SSL_SESSION* cached) {
  std::string text = "postern/outbound/" + std::to_string(set.generation) + "/" +
                     (verified_name.empty() ? std::string("unverified") : "verify:" + verified_name);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(text.data(), text.size(), md, &n, EVP_sha256(), nullptr) != 1) return false;
  n = std::min<unsigned>(n, SSL_MAX_SID_CTX_LENGTH);
  if (SSL_set_session_id_context(ssl, md, n) != 1) return false;
  if (!cached) return false;
  unsigned int len = 0;
  const unsigned char* have = SSL_SESSION_get0_id_context(cached, &len);
  if (len != n || std::memcmp(have, md, n) != 0) return false;
  return SSL_set_session(ssl, cached) == 1;
}

namespace {

// Subject, issuer, validity and extensions of a self-signed certificate; "" or the error.
std::string fill_self_signed(X509* x, EVP_PKEY* pkey, const std::string& cn, int days, const std::string& extra_san,
                             std::time_t now) {
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return "no random serial number: " + openssl_errors();
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != nullptr;
  BN_free(bn);
  // notBefore an hour back (clock skew); notAfter so that the whole period, both ends
  // included (RFC 5280 4.1.2.5), is at most `days` days.
  std::time_t t = now ? now : std::time(nullptr);
  ok = ok && X509_set_version(x, 2) == 1 && X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &t) &&
       X509_time_adj_ex(X509_getm_notAfter(x), days, -3600 - 1, &t) && X509_set_pubkey(x, pkey) == 1;
  X509_NAME* name = X509_get_subject_name(x);
  ok = ok &&
       X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Postern"), -1, -1, 0) &&
       X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) &&
       X509_set_issuer_name(x, name) == 1;
  if (!ok) return "cannot fill in the certificate: " + openssl_errors();
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  std::string san = "DNS:" + cn + (extra_san.empty() ? "" : "," + extra_san);
  for (auto [nid, val] : {std::pair{NID_subject_alt_name, san.c_str()},
                          std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                          std::pair{NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                          std::pair{NID_ext_key_usage, "serverAuth,clientAuth"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, val);
    if (!ext) return std::string("bad extension ") + OBJ_nid2sn(nid) + ": " + openssl_errors();
    bool added = X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    if (!added) return "cannot add an extension: " + openssl_errors();
  }
  if (X509_sign(x, pkey, EVP_sha256()) == 0) return "signing failed: " + openssl_errors();
  return "";
}

std::string write_self_signed(const std::string& cert_file, const std::string& key_file, X509* x, EVP_PKEY* pkey) {
  namespace fs = std::filesystem;
  std::string tmp_key = key_file + ".tmp";
  int fd = ::open(tmp_key.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::unique_ptr<FILE, FileCloser> kf(fd >= 0 ? fdopen(fd, "w") : nullptr);
  if (!kf && fd >= 0) ::close(fd);
  if (!kf || PEM_write_PrivateKey(kf.get(), pkey, nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      std::fflush(kf.get()) != 0)
    return "cannot write " + tmp_key;
  kf.reset();
  std::string tmp_cert = cert_file + ".tmp";
  std::unique_ptr<FILE, FileCloser> cf(std::fopen(tmp_cert.c_str(), "w"));
  if (!cf || PEM_write_X509(cf.get(), x) != 1 || std::fflush(cf.get()) != 0) return "cannot write " + tmp_cert;
  cf.reset();
  std::error_code ec;
  fs::rename(tmp_key, key_file, ec);
  if (!ec) fs::rename(tmp_cert, cert_file, ec);
  return ec ? "cannot install certificate: " + ec.message() : "";
}

}  // namespace

std::string ensure_self_signed(const std::string& cert_file, const std::string& key_file,
                               const std::string& common_name, int days, const std::string& extra_san,
                               std::time_t now) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(cert_file, ec) && fs::exists(key_file, ec)) return "";
  fs::create_directories(fs::path(cert_file).parent_path(), ec);
  fs::create_directories(fs::path(key_file).parent_path(), ec);
  ERR_clear_error();
  PkeyPtr pkey(EVP_EC_gen("P-256"));
  if (!pkey) return "key generation failed: " + openssl_errors();
  X509Ptr x(X509_new());
  if (!x) return "X509_new: " + openssl_errors();
  std::string err = fill_self_signed(x.get(), pkey.get(), common_name, days, extra_san, now);
  if (err.empty()) err = write_self_signed(cert_file, key_file, x.get(), pkey.get());
  return err;
}

}  // namespace postern::tls
