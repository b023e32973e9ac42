// verify_cache.cpp — see verify_cache.h.
#include "policy/verify_cache.h"

#include "base/text.h"

namespace postern::policy {
namespace {

std::string key_of(const std::string& address) {
  auto at = address.rfind('@');
  if (at == std::string::npos) return address;
  return address.substr(0, at + 1) + ascii_lower(address.substr(at + 1));
}

}  // namespace

bool VerifyCache::get(const std::string& address, int64_t now, Answer& out) {
  std::lock_guard lk(mu_);
  auto it = map_.find(key_of(address));
  if (it == map_.end()) return false;
  if (it->second.expires <= now) {
    map_.erase(it);
    return false;
  }
  out = it->second;
  return true;
}

void VerifyCache::put(const std::string& address, Answer a) {
  std::lock_guard lk(mu_);
  std::string k = key_of(address);
  auto [it, fresh] = map_.insert_or_assign(k, std::move(a));
  if (fresh) order_.push_back(std::move(k));
  // The oldest go first; a key in order_ whose entry expired and was erased is skipped.
  while (map_.size() > max_ && !order_.empty()) {
    map_.erase(order_.front());
    order_.pop_front();
  }
  if (order_.size() > 2 * max_ + 16) {  // erased-on-expiry keys pile up: rebuild the order
    std::deque<std::string> keep;
    for (auto& key : order_)
      if (map_.count(key)) keep.push_back(key);
    order_.swap(keep);
  }
}

size_t VerifyCache::size() const {
  std::lock_guard lk(mu_);
  return map_.size();
}

void VerifyCache::clear() {
  std::lock_guard lk(mu_);
  map_.clear();
  order_.clear();
}

}  // namespace postern::policy
