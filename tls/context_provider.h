// context_provider.h — per-role TLS contexts, swapped atomically (hot reload).
//
// A ContextSet is immutable once published: the SSL_CTX built from one certificate and key, with
// what an admin needs to see about it (fingerprint, notAfter, generation). Building happens off
// the data path and checks everything (parse, key match, dates); a failed build leaves the
// current set in place. A session copies the shared_ptr when it creates its SSL, so sessions in
// flight finish on the set they started with and the old set dies with its last user.
// Security-sensitive: private keys are read here, never by the protocol code.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <memory>
#include <string>

#include "base/snapshot.h"

namespace postern::tls {

struct ContextSet {
  ~ContextSet();
  SSL_CTX* ctx = nullptr;
  std::string cert_file;
  std::string fingerprint_sha256;  // hex, colon separated
  std::string subject;
  std::string not_after;  // ISO 8601
  uint64_t generation = 0;
};

enum class Role { kInboundMta, kOutboundMta, kAdminConsole, kEuqConsole };
const char* role_name(Role r);

// Everything OpenSSL left on its error queue, folded into one line.
std::string openssl_errors();

struct BuildResult {
  std::shared_ptr<ContextSet> set;
  std::string error;  // non-empty when set is null
};

// Builds a server (or client, for the outbound role) context from PEM files.
// Client contexts also load the CA store used by outbound policy "verify" (ca_file, or the
// system's default paths when empty).
BuildResult build_context(const std::string& cert_file, const std::string& key_file, bool server,
                          const std::string& ca_file = "");

class ContextProvider {
 public:
  explicit ContextProvider(Role role) : role_(role) {}
  Role role() const { return role_; }
  std::shared_ptr<const ContextSet> current() const { return snap_.load(); }
  // Builds and publishes; on failure keeps the old set and returns the reason.
  std::string reload(const std::string& cert_file, const std::string& key_file,
                     const std::string& ca_file = "");
  uint64_t reloads() const { return reloads_.load(); }
  uint64_t reload_failures() const { return failures_.load(); }

 private:
  Role role_;
  postern::Snapshot<ContextSet> snap_;
  std::atomic<uint64_t> next_gen_{1};
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> failures_{0};
};

// Creates a self-signed ECDSA P-256 certificate and key (0600) when the files do not exist yet.
// Returns an error text or "".
// extra_san: more subjectAltName entries, e.g. "IP:127.0.0.1".
std::string ensure_self_signed(const std::string& cert_file, const std::string& key_file,
                               const std::string& common_name, int days = 825, const std::string& extra_san = "");

}  // namespace postern::tls
