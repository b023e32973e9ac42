// tls_policy.cpp — per-destination outbound TLS level. See the header.
#include "policy/tls_policy.h"

#include "base/text.h"

#include <cctype>
#include <string>

namespace postern::policy {

TlsLevel outbound_tls_level(const OutboundConfig& out, std::string_view domain) {
  std::string d = ascii_lower(domain);
  if (!d.empty() && d.back() == '.') d.pop_back();
  if (d.empty()) return out.tls;
  if (auto it = out.tls_policy.find(d); it != out.tls_policy.end()) return it->second;
  // ".parent" entries, nearest first: "a.b.c" tries ".b.c", then ".c".
  for (size_t dot = d.find('.'); dot != std::string::npos; dot = d.find('.', dot + 1)) {
    if (auto it = out.tls_policy.find(d.substr(dot)); it != out.tls_policy.end()) return it->second;
  }
  return out.tls;
}

}  // namespace postern::policy
