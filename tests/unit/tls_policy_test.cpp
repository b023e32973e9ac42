// Table-driven tests of the per-destination outbound TLS level (policy/tls_policy.h).
#include <gtest/gtest.h>

#include "conf/config.h"
#include "policy/tls_policy.h"

using namespace postern;

TEST(TlsPolicy, Levels) {
  OutboundConfig out;
  out.tls = TlsLevel::kMay;
  out.tls_policy = {{"bank.example", TlsLevel::kVerify},
                    {".bank.example", TlsLevel::kEncrypt},
                    {".example", TlsLevel::kNone},
                    {"plain.partner.test", TlsLevel::kNone}};
  struct Case { const char* domain; TlsLevel want; } cases[] = {
      {"bank.example", TlsLevel::kVerify},        // exact
      {"BANK.example.", TlsLevel::kVerify},       // case and trailing dot
      {"mx.bank.example", TlsLevel::kEncrypt},    // nearest ".parent"
      {"a.b.bank.example", TlsLevel::kEncrypt},
      {"other.example", TlsLevel::kNone},         // the farther ".example"
      {"example", TlsLevel::kMay},                // ".example" is only its subdomains
      {"xbank.example", TlsLevel::kNone},         // not a subdomain of bank.example
      {"plain.partner.test", TlsLevel::kNone},
      {"mx.plain.partner.test", TlsLevel::kMay},  // an exact entry covers no subdomain
      {"partner.test", TlsLevel::kMay},
      {"", TlsLevel::kMay},
  };
  for (auto& c : cases)
    EXPECT_EQ(policy::outbound_tls_level(out, c.domain), c.want) << c.domain;
  out.tls = TlsLevel::kEncrypt;
  EXPECT_EQ(policy::outbound_tls_level(out, "anything.test"), TlsLevel::kEncrypt);
}

TEST(TlsPolicy, FromTheConfigFile) {
  Config c = parse_config(R"(
[outbound]
tls = "encrypt"
[outbound.tls_policy]
"Bank.Example." = "verify"
".Corp.Example" = "none"
)", "t.toml");
  EXPECT_EQ(policy::outbound_tls_level(c.outbound, "bank.example"), TlsLevel::kVerify);
  EXPECT_EQ(policy::outbound_tls_level(c.outbound, "hq.corp.example"), TlsLevel::kNone);
  EXPECT_EQ(policy::outbound_tls_level(c.outbound, "else.example"), TlsLevel::kEncrypt);
  for (const char* bad : {"\".\" = \"may\"", "\"[10.0.0.1]:25\" = \"may\"", "\"a b\" = \"may\"",
                          "\"x.example\" = \"sometimes\""}) {
    try {
      parse_config(std::string("[outbound.tls_policy]\n") + bad + "\n", "t.toml");
      ADD_FAILURE() << bad;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("outbound.tls_policy."), std::string::npos) << e.what();
    }
  }
}
