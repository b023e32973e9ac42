#include <gtest/gtest.h>
#include <sys/socket.h>

#include "conf/config.h"

using namespace postern;

TEST(Config, Defaults) {
  auto c = parse_config("", "t.toml");
  EXPECT_EQ(c.smtp.listen.size(), 1u);
  EXPECT_EQ(c.smtp.listen[0].port, 2525);
  EXPECT_EQ(c.smtp.max_message_size, 52428800u);
  EXPECT_EQ(c.queue.min_backoff, std::chrono::minutes(5));
}

TEST(Config, Parses) {
  auto c = parse_config(R"(
[server]
hostname = "mx.example.org"
workers = 2
[smtp]
listen = ["127.0.0.1:2600", "[::1]:2600"]
max_recipients = 10
idle_timeout = "30s"
bare_lf = "normalize"
[relay]
domains = ["Example.ORG"]
networks = ["10.0.0.0/8", "2001:db8::/32"]
[routes]
"example.org" = "[127.0.0.1]:2526"
[outbound]
tls = "encrypt"
[outbound.tls_policy]
"bank.example" = "verify"
[queue]
delay_warning = ""
sync = "file"
)", "t.toml");
  EXPECT_EQ(c.hostname, "mx.example.org");
  EXPECT_EQ(c.smtp.listen[1].host, "::1");
  EXPECT_EQ(c.smtp.idle_timeout, std::chrono::seconds(30));
  EXPECT_EQ(c.smtp.bare_lf, BareLfPolicy::kNormalize);
  EXPECT_EQ(c.relay.domains[0], "example.org");
  EXPECT_EQ(c.relay.networks.size(), 2u);
  EXPECT_EQ(c.routes.at("example.org").port, 2526);
  EXPECT_FALSE(c.routes.at("example.org").mx);
  EXPECT_EQ(c.outbound.tls, TlsLevel::kEncrypt);
  EXPECT_EQ(c.outbound.tls_policy.at("bank.example"), TlsLevel::kVerify);
  EXPECT_EQ(c.queue.delay_warning.count(), 0);
  EXPECT_TRUE(c.queue.sync_per_file);
}

TEST(Config, BadKeysAreNamed) {
  struct Case { const char* toml; const char* key; } cases[] = {
      {"[smtp]\nmax_recipent = 5\n", "smtp.max_recipent"},
      {"[smtp]\nmax_recipients = \"five\"\n", "smtp.max_recipients"},
      {"[smtp]\nlisten = [\"nowhere\"]\n", "smtp.listen"},
      {"[smtp]\nidle_timeout = \"5 minutes\"\n", "smtp.idle_timeout"},
      {"[relay]\nnetworks = [\"10.0.0.0/33\"]\n", "relay.networks"},
      {"[outbound]\ntls = \"sometimes\"\n", "outbound.tls"},
      {"[routes]\n\"a.example\" = \"[]:25\"\n", "routes.a.example"},
      {"[bogus]\nx = 1\n", "bogus"},
      {"[queue]\nmin_backoff = \"2h\"\nmax_backoff = \"1h\"\n", "queue.max_backoff"},
      {"[queue]\nsync = \"fast\"\n", "queue.sync"},
  };
  for (auto& c : cases) {
    try {
      parse_config(c.toml, "t.toml");
      ADD_FAILURE() << "accepted: " << c.toml;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(c.key), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_config("[smtp\n", "t.toml"), ConfigError);
}

TEST(Config, Networks) {
  Network n;
  ASSERT_TRUE(parse_network("192.168.0.0/16", n));
  unsigned char in[4] = {192, 168, 4, 5}, out[4] = {192, 169, 0, 1};
  EXPECT_TRUE(network_contains(n, in, AF_INET));
  EXPECT_FALSE(network_contains(n, out, AF_INET));
  ASSERT_TRUE(parse_network("10.1.2.3", n));
  EXPECT_EQ(n.prefix, 32);
}

TEST(Config, TlsTicketsAndHttpClient) {
  auto d = parse_config("", "t.toml");
  EXPECT_EQ(d.tls.ticket_key_rotation, std::chrono::hours(12));
  EXPECT_EQ(d.http_client.proxy, "");
  auto c = parse_config(R"(
[tls]
ticket_key_rotation = "30m"
[http_client]
proxy = "http://user:pw@proxy.example:3128"
ca_file = "/etc/ssl/certs/ca-certificates.crt"
)", "t.toml");
  EXPECT_EQ(c.tls.ticket_key_rotation, std::chrono::minutes(30));
  EXPECT_EQ(c.http_client.proxy, "http://user:pw@proxy.example:3128");
  EXPECT_EQ(c.http_client.ca_file, "/etc/ssl/certs/ca-certificates.crt");
  EXPECT_EQ(parse_config("[tls]\nticket_key_rotation = \"\"\n", "t.toml").tls.ticket_key_rotation.count(), 0);
  EXPECT_EQ(parse_config("[http_client]\nproxy = \"direct\"\n", "t.toml").http_client.proxy, "direct");
  EXPECT_EQ(parse_config("[http_client]\nproxy = \"socks5h://[::1]:1080/\"\n", "t.toml").http_client.proxy,
            "socks5h://[::1]:1080/");
  struct Case { const char* toml; const char* key; } bad[] = {
      {"[tls]\nticket_key_rotation = \"30s\"\n", "tls.ticket_key_rotation"},
      {"[tls]\nticket_key_rotation = \"8d\"\n", "tls.ticket_key_rotation"},
      {"[tls]\nticket_key_rotation = 5\n", "tls.ticket_key_rotation"},
      {"[tls]\nticket_rotation = \"1h\"\n", "tls.ticket_rotation"},
      {"[http_client]\nproxy = \"proxy.example:3128\"\n", "http_client.proxy"},
      {"[http_client]\nproxy = \"ftp://proxy.example\"\n", "http_client.proxy"},
      {"[http_client]\nproxy = \"http://\"\n", "http_client.proxy"},
      {"[http_client]\nproxy = \"http://a b\"\n", "http_client.proxy"},
      {"[http_client]\ntimeout = \"5s\"\n", "http_client.timeout"},
  };
  for (auto& b : bad) {
    try {
      parse_config(b.toml, "t.toml");
      ADD_FAILURE() << "accepted: " << b.toml;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(b.key), std::string::npos) << e.what();
    }
  }
}
