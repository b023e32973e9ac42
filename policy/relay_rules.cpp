// relay_rules.cpp — the relay decision. See the header for what is security-sensitive.
#include "policy/relay_rules.h"

namespace postern::policy {

bool accepted(RelayVerdict v) {
  return v == RelayVerdict::kPostmaster || v == RelayVerdict::kTrustedClient || v == RelayVerdict::kLocalDomain;
}

const char* verdict_name(RelayVerdict v) {
  switch (v) {
    case RelayVerdict::kPostmaster: return "postmaster";
    case RelayVerdict::kTrustedClient: return "trusted_client";
    case RelayVerdict::kLocalDomain: return "local_domain";
    case RelayVerdict::kSenderRouting: return "sender_routing";
    case RelayVerdict::kForeignDomain: return "foreign_domain";
  }
  return "?";
}

bool client_in(const std::vector<Network>& nets, ClientAddress client) {
  if (!client.addr) return false;
  for (auto& net : nets)
    if (network_contains(net, client.addr, client.family)) return true;
  return false;
}

bool domain_listed(const std::vector<std::string>& domains, std::string_view domain) {
  if (domain.empty()) return false;
  for (auto& d : domains) {
    if (d == domain) return true;
    if (d.size() > 1 && d[0] == '.' && domain.size() > d.size() &&
        domain.compare(domain.size() - d.size(), d.size(), d) == 0)
      return true;
  }
  return false;
}

bool has_sender_routing(const RcptAddress& r) {
  return r.source_route || r.local.find_first_of("%!@") != std::string_view::npos;
}

RelayVerdict relay_decision(const RelayConfig& relay, ClientAddress client, const RcptAddress& r) {
  if (r.postmaster) return RelayVerdict::kPostmaster;
  if (client_in(relay.networks, client)) return RelayVerdict::kTrustedClient;
  if (has_sender_routing(r)) return RelayVerdict::kSenderRouting;
  if (domain_listed(relay.domains, r.domain)) return RelayVerdict::kLocalDomain;
  return RelayVerdict::kForeignDomain;
}

}  // namespace postern::policy
