#include "tls/context_provider.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <mutex>

namespace postern::tls {
namespace {

// Session-ticket keys live outside the context generations, so resumption survives a reload.
const unsigned char* ticket_keys() {
  static unsigned char keys[80];
  static std::once_flag once;
  std::call_once(once, [] { RAND_bytes(keys, sizeof keys); });
  return keys;
}

std::string asn1_time_iso(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct FileCloser {
  void operator()(FILE* f) const { if (f) std::fclose(f); }
};

}  // namespace

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

BuildResult build_context(const std::string& cert_file, const std::string& key_file, bool server,
                          const std::string& ca_file) {
  ERR_clear_error();
  BuildResult br;
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return {nullptr, "SSL_CTX_new: " + openssl_errors()};
  auto set = std::make_shared<ContextSet>();
  set->ctx = ctx;
  set->cert_file = cert_file;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  if (server) {
    SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>("postern"), 7);
    SSL_CTX_ctrl(ctx, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, 80,
                 const_cast<unsigned char*>(ticket_keys()));
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    int ok = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                             : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
    if (ok != 1) return {nullptr, "cannot load CA store " + ca_file + ": " + openssl_errors()};
  }
  if (cert_file.empty()) return {set, ""};  // client without a certificate
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
    return {nullptr, "cannot load certificate " + cert_file + ": " + openssl_errors()};
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return {nullptr, "cannot load private key " + key_file + ": " + openssl_errors()};
  if (SSL_CTX_check_private_key(ctx) != 1)
    return {nullptr, "private key " + key_file + " does not match certificate " + cert_file};
  X509* x = SSL_CTX_get0_certificate(ctx);
  if (!x) return {nullptr, "no certificate in " + cert_file};
  if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0)
    return {nullptr, "certificate " + cert_file + " has expired (notAfter " +
                         asn1_time_iso(X509_get0_notAfter(x)) + ")"};
  if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
    return {nullptr, "certificate " + cert_file + " is not valid yet (notBefore " +
                         asn1_time_iso(X509_get0_notBefore(x)) + ")"};
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(x, EVP_sha256(), md, &n);
  for (unsigned i = 0; i < n; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, i ? ":%02X" : "%02X", md[i]);
    set->fingerprint_sha256 += b;
  }
  set->not_after = asn1_time_iso(X509_get0_notAfter(x));
  char subj[512];
  X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
  set->subject = subj;
  return {set, ""};
}

std::string ContextProvider::reload(const std::string& cert_file, const std::string& key_file,
                                    const std::string& ca_file) {
  BuildResult br = build_context(cert_file, key_file, role_ != Role::kOutboundMta, ca_file);
  if (!br.set) {
    failures_.fetch_add(1);
    return br.error;
  }
  br.set->generation = next_gen_.fetch_add(1);
  snap_.publish(std::move(br.set));
  reloads_.fetch_add(1);
  return "";
}

std::string ensure_self_signed(const std::string& cert_file, const std::string& key_file,
                               const std::string& common_name, int days, const std::string& extra_san) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(cert_file, ec) && fs::exists(key_file, ec)) return "";
  fs::create_directories(fs::path(cert_file).parent_path(), ec);
  fs::create_directories(fs::path(key_file).parent_path(), ec);
  ERR_clear_error();
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  if (!pkey) return "key generation failed: " + openssl_errors();
  X509* x = X509_new();
  std::string err;
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  BN_free(bn);
  X509_set_version(x, 2);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), static_cast<long>(days) * 86400);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Postern"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  std::string san = "DNS:" + common_name + (extra_san.empty() ? "" : "," + extra_san);
  for (auto [nid, val] : {std::pair{NID_subject_alt_name, san.c_str()},
                          std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                          std::pair{NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                          std::pair{NID_ext_key_usage, "serverAuth,clientAuth"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, val);
    if (ext) {
      X509_add_ext(x, ext, -1);
      X509_EXTENSION_free(ext);
    }
  }
  if (X509_sign(x, pkey, EVP_sha256()) == 0) err = "signing failed: " + openssl_errors();
  if (err.empty()) {
    std::string tmp_key = key_file + ".tmp";
    int fd = ::open(tmp_key.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::unique_ptr<FILE, FileCloser> kf(fd >= 0 ? fdopen(fd, "w") : nullptr);
    if (!kf || PEM_write_PrivateKey(kf.get(), pkey, nullptr, nullptr, 0, nullptr, nullptr) != 1)
      err = "cannot write " + tmp_key;
    kf.reset();
    std::string tmp_cert = cert_file + ".tmp";
    std::unique_ptr<FILE, FileCloser> cf(std::fopen(tmp_cert.c_str(), "w"));
    if (err.empty() && (!cf || PEM_write_X509(cf.get(), x) != 1)) err = "cannot write " + tmp_cert;
    cf.reset();
    if (err.empty()) {
      fs::rename(tmp_key, key_file, ec);
      if (!ec) fs::rename(tmp_cert, cert_file, ec);
      if (ec) err = "cannot install certificate: " + ec.message();
    }
  }
  X509_free(x);
  EVP_PKEY_free(pkey);
  return err;
}

}  // namespace postern::tls
