// context_provider.h — TLS contexts built from PEM bytes (or files), and one role's current set.
//
// A ContextSet is immutable once published: one SSL_CTX holding one certificate per key type
// (an RSA and an ECDSA one may sit side by side; OpenSSL picks per client), with what an admin
// needs to see about each (fingerprint, subject, notAfter) and a generation number. Building
// happens off the data path and checks everything (parse, key match, chain, dates); a failed
// build leaves the current set in place. A session copies the shared_ptr when it creates its
// SSL, so sessions in flight finish on the set they started with and the old set dies with its
// last user.
// Server contexts carry a session-id context derived from the role and the certificates'
// fingerprints: a session (ticket or cache) made under one certificate is never resumed under
// another, while a reload of the same certificate keeps resumption (the ticket keys are shared,
// see ticket_keys.h).
// Security-sensitive: private keys are parsed here (never by the protocol code), encrypted keys
// are opened only with the passphrase given (never a terminal prompt), and key bytes read from
// files are wiped after use.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/snapshot.h"

namespace postern::tls {

class TicketKeys;

enum class Role { kInboundMta, kOutboundMta, kAdminConsole, kEuqConsole };
inline constexpr Role kRoles[] = {Role::kInboundMta, Role::kOutboundMta, Role::kAdminConsole, Role::kEuqConsole};
const char* role_name(Role r);

// One certificate of a set, as an admin sees it.
struct CertInfo {
  std::string source;              // where it came from: a file path or a store entry's name
  std::string key_type;            // "RSA-2048", "EC-P-256", ...
  std::string fingerprint_sha256;  // hex, colon separated
  std::string subject;
  std::string not_before, not_after;  // ISO 8601
  std::time_t not_before_unix = 0, not_after_unix = 0;
  size_t chain_length = 0;            // intermediates sent after it
};

// Per-role handshake counters, kept by an info callback on every context the role builds (the
// SNI sets' included), so every listener and the outbound side count the same way.
struct RoleStats {
  std::atomic<uint64_t> handshakes{0};          // completed (full or resumed)
  std::atomic<uint64_t> handshake_failures{0};  // started and never completed
};

struct ContextSet {
  ContextSet() = default;
  ContextSet(const ContextSet&) = delete;
  ContextSet& operator=(const ContextSet&) = delete;
  ~ContextSet();
  SSL_CTX* ctx = nullptr;
  std::vector<CertInfo> certs;  // empty: a client context without a client certificate
  // The first certificate's, for display (empty when there is none).
  std::string cert_file;
  std::string fingerprint_sha256;
  std::string subject;
  std::string not_after;
  uint64_t generation = 0;
  std::string origin;  // who published it: "file:PATH", "store:NAME", ... (for display and logs)
  std::shared_ptr<TicketKeys> tickets;  // keeps the keys the ctx's ticket callback uses alive
  std::shared_ptr<RoleStats> stats;     // the role's counters the ctx's info callback updates
  // Server only: per-SNI-name sets ("mx.example.com" or "*.example.com", lower case), chosen in
  // the servername callback of `ctx`; a client naming no host or another one gets this set.
  std::vector<std::pair<std::string, std::shared_ptr<const ContextSet>>> sni;
  // The set serving `server_name` (this one when no SNI set matches). Case-insensitive; a
  // wildcard covers exactly one label.
  const ContextSet& for_name(std::string_view server_name) const;
};

// Everything OpenSSL left on its error queue, folded into one line.
std::string openssl_errors();

// One certificate to serve: PEM text, the leaf first, then its intermediates; the private key
// as PEM (PKCS#1 "RSA PRIVATE KEY", "EC PRIVATE KEY", PKCS#8, or encrypted PKCS#8 / legacy
// encrypted PEM with `passphrase`).
struct Identity {
  std::string cert_pem;
  std::string key_pem;
  std::string passphrase;
  std::string source;  // for messages and display
  ~Identity();         // wipes key_pem and passphrase
};

struct ContextOptions {
  bool server = true;
  Role role = Role::kInboundMta;  // server: part of the session-id context
  std::string ca_file;            // client: CA store for policy "verify" ("" = the system's)
  std::shared_ptr<TicketKeys> tickets;  // server: null = no session tickets
  std::chrono::seconds session_lifetime{12 * 3600};  // ticket lifetime hint and cache timeout
  std::time_t now = 0;  // the clock for the validity checks; 0 = the system clock
  std::shared_ptr<RoleStats> stats;  // null: not counted
};

struct BuildResult {
  std::shared_ptr<ContextSet> set;
  std::string error;  // non-empty when set is null
};

// Builds a context serving `ids` (a server needs at least one; a client may have none). Two
// certificates of the same key type are refused, as are expired and not-yet-valid ones.
BuildResult build_context(const std::vector<Identity>& ids, const ContextOptions& opt);
// The same from PEM files (cert_file holds the leaf and its chain). A client may pass "" for both.
BuildResult build_context_files(const std::string& cert_file, const std::string& key_file,
                                const ContextOptions& opt);
// Builds a server set from a default set of identities and per-SNI-name sets, all or nothing:
// a bad name (not a host name or "*.host"), a name given twice or any set that fails to build
// refuses the whole. The SNI sets share the options (role, tickets, stats) of the default.
BuildResult build_context_sni(const std::vector<Identity>& ids,
                              const std::vector<std::pair<std::string, std::vector<Identity>>>& sni,
                              const ContextOptions& opt);
// Reads a file of at most 1 MiB. "" on success, else the error.
std::string read_pem_file(const std::string& path, std::string& out);

// One role's current set: published atomically, the old one kept on a failed build.
class ContextProvider {
 public:
  explicit ContextProvider(Role role) : role_(role) {}
  Role role() const { return role_; }
  std::shared_ptr<const ContextSet> current() const { return snap_.load(); }
  // Publishes a successful build with the next generation number; on a failed one keeps the
  // old set, counts the failure and returns the reason.
  std::string publish(BuildResult br);
  uint64_t generation() const;  // the current set's (0 before the first)
  uint64_t reloads() const { return reloads_.load(); }
  uint64_t reload_failures() const { return failures_.load(); }
  std::string last_error() const;  // the last refusal's reason ("" if none since the last success)

 private:
  Role role_;
  postern::Snapshot<ContextSet> snap_;
  std::atomic<uint64_t> next_gen_{1};
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> failures_{0};
  mutable std::mutex err_mu_;
  std::string last_error_;
};

// Outbound sessions are resumed per next hop, but only under the session context they were made
// under: the client set's generation (a replaced client certificate or CA store starts afresh)
// and, for policy "verify", the name that was verified. Sets that context on `ssl` (sessions it
// makes inherit it) and offers `cached` only when it matches: a session made without checking
// the server (policy may/encrypt), or for another name, is never resumed where "verify" applies,
// since resumption skips the certificate check. Returns true when `cached` was offered.
bool offer_client_session(SSL* ssl, const ContextSet& set, const std::string& verified_name, SSL_SESSION* cached);

// Creates a self-signed ECDSA P-256 certificate and key (0600) when the files do not exist yet.
// Its whole validity (notBefore is backdated an hour for clock skew) stays within `days`, so
// the default 825 stays inside the CA/Browser Forum's limit. Returns an error text or "".
// extra_san: more subjectAltName entries, e.g. "IP:127.0.0.1".
std::string ensure_self_signed(const std::string& cert_file, const std::string& key_file,
                               const std::string& common_name, int days = 825, const std::string& extra_san = "",
                               std::time_t now = 0);

}  // namespace postern::tls
