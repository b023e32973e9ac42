#include "tls/session_cache.h"

namespace postern::tls {

SessionCache::~SessionCache() {
  for (auto& [k, v] : map_) SSL_SESSION_free(v.first);
}

SSL_SESSION* SessionCache::get(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return nullptr;
  SSL_SESSION_up_ref(it->second.first);
  return it->second.first;
}

void SessionCache::put(const std::string& key, SSL_SESSION* s) {
  if (!s) return;
  if (!SSL_SESSION_is_resumable(s)) {
    SSL_SESSION_free(s);
    return;
  }
  std::lock_guard lk(mu_);
  if (auto it = map_.find(key); it != map_.end()) {
    SSL_SESSION_free(it->second.first);
    order_.erase(it->second.second);
    map_.erase(it);
  }
  order_.push_back(key);
  map_[key] = {s, std::prev(order_.end())};
  while (map_.size() > max_) {
    auto old = map_.find(order_.front());
    SSL_SESSION_free(old->second.first);
    map_.erase(old);
    order_.pop_front();
  }
}

size_t SessionCache::size() const {
  std::lock_guard lk(mu_);
  return map_.size();
}

}  // namespace postern::tls
