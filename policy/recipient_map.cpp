// recipient_map.cpp — recipient lookup in the loaded map. See the header.
#include "policy/recipient_map.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "policy/relay_rules.h"

namespace postern::policy {
namespace {

std::string lower_ascii(std::string_view v) {
  std::string s(v);
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace

RecipientVerdict recipient_lookup(const RelayConfig& relay, std::string_view local, std::string_view domain) {
  if (!relay.recipients || !domain_listed(relay.domains, domain)) return RecipientVerdict::kNotChecked;
  const RecipientTable& t = *relay.recipients;
  std::string dom = lower_ascii(domain);
  std::string loc = lower_ascii(local);
  if (loc == "postmaster" || t.catch_all.count(dom)) return RecipientVerdict::kKnown;
  if (t.addresses.count(loc + "@" + dom)) return RecipientVerdict::kKnown;
  if (!relay.recipient_delimiter.empty() && !loc.empty() && loc.front() != '"') {
    size_t cut = loc.find_first_of(relay.recipient_delimiter);
    if (cut != std::string::npos && cut > 0 && t.addresses.count(loc.substr(0, cut) + "@" + dom))
      return RecipientVerdict::kKnown;
  }
  return RecipientVerdict::kUnknown;
}

std::string recipient_map_fingerprint(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) return "";
  std::error_code ec;
  auto one = [&](const fs::path& p) {
    auto size = fs::file_size(p, ec);
    auto time = fs::last_write_time(p, ec);
    return p.filename().string() + ":" + std::to_string(ec ? 0 : size) + ":" +
           std::to_string(ec ? 0 : time.time_since_epoch().count()) + ";";
  };
  if (!fs::is_directory(path, ec)) return fs::exists(path, ec) ? one(path) : "";
  std::vector<fs::path> entries;
  for (auto& e : fs::directory_iterator(path, ec)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());
  std::string fp = one(path);
  for (auto& e : entries) fp += one(e);
  return fp;
}

void RecipientMapWatch::reset(const std::string& path) {
  path_ = path;
  seen_ = recipient_map_fingerprint(path);
  pending_.clear();
  started_ = true;
}

bool RecipientMapWatch::poll(const std::string& path) {
  if (!started_ || path != path_) {
    reset(path);
    return false;
  }
  if (path.empty()) return false;
  std::string fp = recipient_map_fingerprint(path);
  if (fp == seen_) {
    pending_.clear();
    return false;
  }
  if (fp != pending_) {  // changed since the last poll: wait until it holds still
    pending_ = fp;
    return false;
  }
  seen_ = fp;
  pending_.clear();
  return true;
}

}  // namespace postern::policy
