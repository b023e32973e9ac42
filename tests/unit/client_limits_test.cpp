// Tests of the per-client limit exemptions and the greeting pause (policy/client_limits.h),
// and of the configuration keys behind them.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include "policy/client_limits.h"

using namespace postern;
using namespace postern::policy;

namespace {
struct Addr {
  unsigned char bytes[16] = {};
  int family = 0;
  explicit Addr(const char* ip) {
    family = inet_pton(AF_INET, ip, bytes) == 1 ? AF_INET : (inet_pton(AF_INET6, ip, bytes) == 1 ? AF_INET6 : 0);
  }
  ClientAddress view() const { return {bytes, family}; }
};

Config cfg(const std::string& toml) { return parse_config(toml, "t.toml"); }

std::string config_error(const std::string& toml) {
  try {
    cfg(toml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(ClientLimits, SessionLimitExemptions) {
  struct Case { const char* toml; const char* ip; bool exempt; } cases[] = {
      // Default: the relay networks (like Postfix's smtpd_client_event_limit_exceptions = $mynetworks).
      {"[relay]\nnetworks = [\"10.0.0.0/8\"]\n", "10.9.9.9", true},
      {"[relay]\nnetworks = [\"10.0.0.0/8\"]\n", "192.0.2.1", false},
      {"", "127.0.0.1", true},  // relay.networks defaults to 127.0.0.0/8
      {"[smtp]\nsession_limit_exceptions = []\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n", "10.9.9.9", false},
      {"[smtp]\nsession_limit_exceptions = [\"192.0.2.0/24\"]\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n", "192.0.2.1", true},
      {"[smtp]\nsession_limit_exceptions = [\"192.0.2.0/24\"]\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n", "10.9.9.9", false},
      {"[smtp]\nsession_limit_exceptions = [\"relay.networks\", \"2001:db8::/32\"]\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
       "2001:db8::1", true},
      {"[smtp]\nsession_limit_exceptions = [\"relay.networks\", \"2001:db8::/32\"]\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n",
       "10.0.0.1", true},
  };
  for (auto& c : cases) {
    Addr a(c.ip);
    EXPECT_EQ(session_limit_exempt(cfg(c.toml), a.view()), c.exempt) << c.toml << c.ip;
  }
  EXPECT_NE(config_error("[smtp]\nsession_limit_exceptions = [\"nonsense\"]\n").find("smtp.session_limit_exceptions"),
            std::string::npos);
}

TEST(ClientLimits, GreetPause) {
  Addr outside("192.0.2.1"), inside("10.1.1.1");
  Config off = cfg("[relay]\nnetworks = [\"10.0.0.0/8\"]\n");
  EXPECT_EQ(off.smtp.greet_pause.count(), 0);
  EXPECT_FALSE(greet_pause_applies(off, outside.view()));
  Config on = cfg("[smtp]\ngreet_pause = \"6s\"\n[relay]\nnetworks = [\"10.0.0.0/8\"]\n");
  EXPECT_EQ(on.smtp.greet_pause, std::chrono::seconds(6));
  EXPECT_TRUE(greet_pause_applies(on, outside.view()));
  EXPECT_FALSE(greet_pause_applies(on, inside.view()));  // trusted clients are not delayed
  EXPECT_EQ(cfg("[smtp]\ngreet_pause = \"\"\n").smtp.greet_pause.count(), 0);
  EXPECT_NE(config_error("[smtp]\ngreet_pause = \"10m\"\n").find("smtp.greet_pause"), std::string::npos);
  EXPECT_NE(config_error("[smtp]\ngreet_pause = \"soon\"\n").find("smtp.greet_pause"), std::string::npos);
}

TEST(ClientLimits, SmtpKeysOfIssue9) {
  Config d = cfg("");
  EXPECT_TRUE(d.smtp.forbid_unauth_pipelining);
  EXPECT_EQ(d.smtp.max_header_size, 102400u);
  EXPECT_EQ(d.smtp.long_lines, LongLinePolicy::kFold);
  EXPECT_EQ(d.smtp.max_hops, 30u);
  Config c = cfg("[smtp]\nforbid_unauth_pipelining = false\nmax_header_size = 4096\nlong_lines = \"reject\"\nmax_hops = 12\n");
  EXPECT_FALSE(c.smtp.forbid_unauth_pipelining);
  EXPECT_EQ(c.smtp.max_header_size, 4096u);
  EXPECT_EQ(c.smtp.long_lines, LongLinePolicy::kReject);
  EXPECT_EQ(c.smtp.max_hops, 12u);
  EXPECT_EQ(cfg("[smtp]\nlong_lines = \"accept\"\n").smtp.long_lines, LongLinePolicy::kAccept);
  for (auto [toml, key] : {std::pair{"[smtp]\nlong_lines = \"wrap\"\n", "smtp.long_lines"},
                           std::pair{"[smtp]\nmax_hops = 0\n", "smtp.max_hops"},
                           std::pair{"[smtp]\nmax_header_size = 10\n", "smtp.max_header_size"},
                           std::pair{"[smtp]\nforbid_unauth_pipelining = 1\n", "smtp.forbid_unauth_pipelining"}})
    EXPECT_NE(config_error(toml).find(key), std::string::npos) << toml;
}
