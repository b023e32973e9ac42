// euq_token_test.cpp — the EUQ console's signed links (admin/euq_token.h) and posternd's own
// mail text (admin/local_mail.h).
#include <gtest/gtest.h>

#include <vector>

#include "admin/euq_token.h"
#include "admin/local_mail.h"
#include "conf/config.h"

namespace postern::admin {
namespace {

const std::string kKey = std::string(64, 'k');

TEST(EuqToken, RoundTripCarriesRecipientPurposeExpiryNonceAndId) {
  std::string tok = euq_sign(kKey, {"release", "alice@example.test", 1000, "", "25ABC"});
  std::string why;
  auto t = euq_verify(kKey, tok, "release", 999, why);
  ASSERT_TRUE(t) << why;
  EXPECT_EQ(t->recipient, "alice@example.test");
  EXPECT_EQ(t->qid, "25ABC");
  EXPECT_EQ(t->expires, 1000);
  EXPECT_EQ(t->nonce.size(), 32u);
  // Two tokens for the same thing differ by their nonce.
  EXPECT_NE(tok, euq_sign(kKey, {"release", "alice@example.test", 1000, "", "25ABC"}));
}

TEST(EuqToken, RefusesExpiredWrongPurposeOtherKeyAndTampering) {
  std::string tok = euq_sign(kKey, {"signin", "alice@example.test", 1000, "", ""});
  std::string why;
  EXPECT_FALSE(euq_verify(kKey, tok, "signin", 1000, why));
  EXPECT_EQ(why, "expired");
  EXPECT_FALSE(euq_verify(kKey, tok, "session", 10, why));
  EXPECT_EQ(why, "wrong purpose");
  EXPECT_FALSE(euq_verify(std::string(64, 'x'), tok, "signin", 10, why));
  EXPECT_EQ(why, "bad signature");
  // Another recipient in the payload, the old signature kept.
  auto dot = tok.find('.');
  auto payload = *base64url_decode(tok.substr(0, dot));
  auto at = payload.find("alice");
  payload.replace(at, 5, "carol");
  EXPECT_FALSE(euq_verify(kKey, base64url(payload) + tok.substr(dot), "signin", 10, why));
  EXPECT_EQ(why, "bad signature");
  for (const std::string& bad : std::vector<std::string>{"", ".", "abc", "a.b.c", "%%%.%%%", std::string(kMaxEuqToken + 1, 'A') + ".x"}) {
    EXPECT_FALSE(euq_verify(kKey, bad, "signin", 10, why)) << bad;
  }
  EXPECT_FALSE(euq_verify("", tok, "signin", 10, why));
}

TEST(EuqToken, Base64UrlRoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t n = 0; n <= all.size(); n += 37) {
    auto back = base64url_decode(base64url(all.substr(0, n)));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, all.substr(0, n));
  }
  EXPECT_EQ(base64url("\xff\xfe"), "__4");
  EXPECT_FALSE(base64url_decode("ab+c"));
}

TEST(LocalMail, HeadersAreOneLineAndBodyIsCrlf) {
  LocalMail m;
  m.to = "alice@example.test";
  m.subject = "two\r\nBcc: evil@example.test";
  m.body = "line one\nline two";
  m.tag = "euq";
  m.headers = {{"X-Postern-EUQ", "signin"}};
  std::string t = local_mail_text(m, "mx.example.test", "25QID", 1796000000);
  auto head = t.substr(0, t.find("\r\n\r\n") + 2);
  EXPECT_EQ(head.find("\r\nBcc:"), std::string::npos) << head;
  EXPECT_NE(head.find("Subject: two  Bcc: evil@example.test\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Auto-Submitted: auto-generated\r\n"), std::string::npos);
  EXPECT_NE(head.find("X-Postern-EUQ: signin\r\n"), std::string::npos);
  EXPECT_NE(head.find("Message-ID: <euq.25QID."), std::string::npos);
  EXPECT_EQ(t.substr(t.find("\r\n\r\n") + 4), "line one\r\nline two\r\n");
}

TEST(EuqConfig, DefaultsKeysAndRefusals) {
  Config d = parse_config("", "t.toml");
  EXPECT_EQ(d.euq.digest_time, "08:00");
  EXPECT_EQ(d.euq.link_lifetime, std::chrono::minutes(15));
  EXPECT_EQ(d.euq.retention, std::chrono::hours(24 * 30));
  Config c = parse_config("[euq]\npublic_url = \"https://q.example.com\"\ndigest_time = \"\"\nretention = \"\"\n"
                          "link_lifetime = \"5m\"\nsignin_limit_per_address = 2\n", "t.toml");
  EXPECT_EQ(c.euq.public_url, "https://q.example.com");
  EXPECT_EQ(c.euq.digest_time, "");
  EXPECT_EQ(c.euq.retention.count(), 0);
  EXPECT_EQ(c.euq.link_lifetime, std::chrono::minutes(5));
  EXPECT_EQ(c.euq.signin_limit_per_address, 2u);
  for (const char* bad : {"[euq]\ndigest_time = \"8:00\"\n", "[euq]\ndigest_time = \"24:00\"\n",
                          "[euq]\npublic_url = \"http://q.example.com\"\n", "[euq]\nsignin_limit_per_ip = 0\n",
                          "[euq]\nlink_lifetime = \"\"\n", "[euq]\nno_such_key = 1\n"})
    EXPECT_THROW(parse_config(bad, "t.toml"), ConfigError) << bad;
}

}  // namespace
}  // namespace postern::admin
