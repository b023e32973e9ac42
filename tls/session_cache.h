// session_cache.h — TLS client sessions to resume, shared by every worker loop. Keyed by the
// caller (outbound: next-hop address, host name, policy and context generation, so a session is
// only offered where it was made), bounded (oldest out first), thread-safe. Holds its own
// reference on each SSL_SESSION.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace postern::tls {

class SessionCache {
 public:
  explicit SessionCache(size_t max_entries = 1000) : max_(max_entries) {}
  ~SessionCache();
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;

  // A new reference the caller frees (SSL_SESSION_free), or nullptr.
  SSL_SESSION* get(const std::string& key);
  // Takes the caller's reference; keeps only resumable sessions.
  void put(const std::string& key, SSL_SESSION* s);
  size_t size() const;

 private:
  size_t max_;
  mutable std::mutex mu_;
  std::list<std::string> order_;  // oldest first
  std::unordered_map<std::string, std::pair<SSL_SESSION*, std::list<std::string>::iterator>> map_;
};

}  // namespace postern::tls
