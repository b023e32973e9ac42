// Table-driven tests of the relay rules (policy/relay_rules.h): who may relay to what.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include "policy/relay_rules.h"

using namespace postern;
using namespace postern::policy;

namespace {

RelayConfig relay_config() {
  RelayConfig r;
  r.domains = {"example.test", ".sub.example.org"};
  r.networks.clear();
  for (const char* n : {"10.0.0.0/8", "2001:db8:1::/48"}) {
    Network net;
    EXPECT_TRUE(parse_network(n, net));
    r.networks.push_back(net);
  }
  return r;
}

struct Addr {
  unsigned char bytes[16] = {};
  int family = 0;
  explicit Addr(const char* ip) {
    family = inet_pton(AF_INET, ip, bytes) == 1 ? AF_INET : (inet_pton(AF_INET6, ip, bytes) == 1 ? AF_INET6 : 0);
  }
  ClientAddress view() const { return {bytes, family}; }
};

}  // namespace

TEST(RelayRules, Decisions) {
  struct Case {
    const char* ip;
    const char* local;
    const char* domain;
    bool source_route;
    bool postmaster;
    RelayVerdict want;
  } cases[] = {
      {"192.0.2.7", "user", "example.test", false, false, RelayVerdict::kLocalDomain},
      {"192.0.2.7", "user", "other.example", false, false, RelayVerdict::kForeignDomain},
      {"192.0.2.7", "user", "sub.example.test", false, false, RelayVerdict::kForeignDomain},  // exact entry
      {"192.0.2.7", "user", "a.sub.example.org", false, false, RelayVerdict::kLocalDomain},   // ".parent"
      {"192.0.2.7", "user", "b.a.sub.example.org", false, false, RelayVerdict::kLocalDomain},
      {"192.0.2.7", "user", "sub.example.org", false, false, RelayVerdict::kForeignDomain},   // not itself
      {"192.0.2.7", "user", "xsub.example.org", false, false, RelayVerdict::kForeignDomain},
      {"192.0.2.7", "user", "[192.0.2.1]", false, false, RelayVerdict::kForeignDomain},
      {"192.0.2.7", "user%other.example", "example.test", false, false, RelayVerdict::kSenderRouting},
      {"192.0.2.7", "other.example!user", "example.test", false, false, RelayVerdict::kSenderRouting},
      {"192.0.2.7", "\"user@other.example\"", "example.test", false, false, RelayVerdict::kSenderRouting},
      {"192.0.2.7", "\"user\\@other.example\"", "example.test", false, false, RelayVerdict::kSenderRouting},
      {"192.0.2.7", "user", "example.test", true, false, RelayVerdict::kSenderRouting},
      {"192.0.2.7", "\"john smith\"", "example.test", false, false, RelayVerdict::kLocalDomain},
      {"192.0.2.7", "postmaster", "", false, true, RelayVerdict::kPostmaster},
      {"10.1.2.3", "user", "other.example", false, false, RelayVerdict::kTrustedClient},
      {"10.1.2.3", "user%other.example", "example.test", false, false, RelayVerdict::kTrustedClient},
      {"10.1.2.3", "user", "example.test", true, false, RelayVerdict::kTrustedClient},
      {"11.1.2.3", "user", "other.example", false, false, RelayVerdict::kForeignDomain},
      {"2001:db8:1:ff::5", "user", "other.example", false, false, RelayVerdict::kTrustedClient},
      {"2001:db8:2::5", "user", "other.example", false, false, RelayVerdict::kForeignDomain},
      {"::ffff:10.1.2.3", "user", "other.example", false, false, RelayVerdict::kForeignDomain},  // v6 family
  };
  RelayConfig cfg = relay_config();
  for (auto& c : cases) {
    Addr a(c.ip);
    ASSERT_NE(a.family, 0) << c.ip;
    RcptAddress r{c.local, c.domain, c.source_route, c.postmaster};
    RelayVerdict v = relay_decision(cfg, a.view(), r);
    EXPECT_EQ(v, c.want) << c.ip << " " << c.local << "@" << c.domain << " -> " << verdict_name(v);
    EXPECT_EQ(accepted(v), c.want == RelayVerdict::kLocalDomain || c.want == RelayVerdict::kTrustedClient ||
                               c.want == RelayVerdict::kPostmaster);
  }
}

TEST(RelayRules, NoDomainsNoNetworksRelaysNothing) {
  RelayConfig empty;
  empty.domains.clear();
  empty.networks.clear();
  Addr a("127.0.0.1");
  EXPECT_EQ(relay_decision(empty, a.view(), {"u", "example.test", false, false}), RelayVerdict::kForeignDomain);
  EXPECT_EQ(relay_decision(empty, a.view(), {"u", "", false, false}), RelayVerdict::kForeignDomain);
  EXPECT_EQ(relay_decision(empty, {nullptr, 0}, {"postmaster", "", false, true}), RelayVerdict::kPostmaster);
  EXPECT_FALSE(domain_listed({"."}, "x"));  // a bare "." lists nothing
}
