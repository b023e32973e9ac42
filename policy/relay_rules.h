// relay_rules.h — who may send mail to which recipient through Postern: never an open relay.
//
// Pure functions over the relay configuration, the client's address and the parsed recipient;
// table-tested in tests/unit/relay_rules_test.cpp. The SMTP session asks relay_decision() at RCPT.
//
// Security-sensitive: this is the decision whether Postern relays. A client in relay.networks may
// send anywhere; anyone else only to relay.domains, and never with sender-specified routing
// (source routes, %-hack, bang paths, a quoted local part holding '@'), even to our own domains,
// because a downstream server might honour it and relay on.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace postern::policy {

// The client as the relay rules see it: its address bytes (4 or 16) and family.
struct ClientAddress {
  const unsigned char* addr = nullptr;
  int family = 0;  // AF_INET or AF_INET6
};

// A recipient as the SMTP parser gave it.
struct RcptAddress {
  std::string_view local;    // as written, quotes and backslashes included
  std::string_view domain;   // lowercased, no trailing dot
  bool source_route = false; // "<@a,@b:user@c>" was given
  bool postmaster = false;   // "<postmaster>" without a domain
};

enum class RelayVerdict {
  kPostmaster,     // accepted: <postmaster> is always accepted (RFC 5321 4.5.1)
  kTrustedClient,  // accepted: the client is in relay.networks
  kLocalDomain,    // accepted: the domain is one of relay.domains
  kSenderRouting,  // refused: source route, %-hack, bang path or quoted '@', untrusted client
  kForeignDomain,  // refused: not one of our domains, untrusted client
};

bool accepted(RelayVerdict v);
const char* verdict_name(RelayVerdict v);  // for log lines: "postmaster", "trusted", ...

// The client's address lies in one of the networks.
bool client_in(const std::vector<Network>& nets, ClientAddress client);
// `domain` is one of `domains`: an exact entry, or an entry ".parent" of which it is a subdomain.
bool domain_listed(const std::vector<std::string>& domains, std::string_view domain);
// The recipient asks for routing by the sender (source route, '%', '!', or '@' in a quoted local part).
bool has_sender_routing(const RcptAddress& r);

RelayVerdict relay_decision(const RelayConfig& relay, ClientAddress client, const RcptAddress& r);

}  // namespace postern::policy
