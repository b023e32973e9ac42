// verify_cache.h — answers of recipient verification (relay.verify_recipients), shared by every
// worker: "the next hop accepted <address>" (kept relay.verify_positive_ttl) or "refused it with
// this reply" (relay.verify_negative_ttl). Answers of an unreachable next hop are not kept: the
// next RCPT asks again. Thread-safe (one mutex: an RCPT takes it once), bounded in entries (the
// oldest goes first) so that a flood of made-up recipients cannot grow it without end.
// Time is the caller's (the injected clock's unix seconds).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>

namespace postern::policy {

class VerifyCache {
 public:
  static constexpr size_t kDefaultMaxEntries = 100000;
  explicit VerifyCache(size_t max_entries = kDefaultMaxEntries) : max_(max_entries) {}

  struct Answer {
    bool exists = false;
    std::string detail;   // the refusal, for the 550 reply
    int64_t expires = 0;  // unix seconds
  };
  // The address's answer if one is kept and not expired at `now`. Addresses are compared
  // with the domain lower-cased and the local part as given.
  bool get(const std::string& address, int64_t now, Answer& out);
  void put(const std::string& address, Answer a);
  size_t size() const;
  void clear();

 private:
  mutable std::mutex mu_;
  size_t max_;
  std::unordered_map<std::string, Answer> map_;
  std::deque<std::string> order_;  // insertion order, for eviction (may hold keys re-put since)
};

}  // namespace postern::policy
