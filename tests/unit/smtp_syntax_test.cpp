// Table-driven tests of the SMTP command and path parser.
#include <gtest/gtest.h>

#include "mta/server/smtp_syntax.h"

using namespace postern::smtp;

TEST(SmtpSyntax, Verbs) {
  struct Case { const char* line; Verb verb; const char* arg; } cases[] = {
      {"EHLO client.example", Verb::kEhlo, "client.example"},
      {"ehlo   spaced ", Verb::kEhlo, "spaced"},
      {"MAIL FROM:<a@b.c>", Verb::kMail, "FROM:<a@b.c>"},
      {"data", Verb::kData, ""},
      {"StartTLS", Verb::kStarttls, ""},
      {"BDAT 10 LAST", Verb::kBdat, "10 LAST"},
      {"XYZZY", Verb::kUnknown, ""},
      {"", Verb::kUnknown, ""},
      {"MAILFROM:<a@b>", Verb::kUnknown, ""},
  };
  for (auto& c : cases) {
    auto cl = parse_command(c.line);
    EXPECT_EQ(cl.verb, c.verb) << c.line;
    EXPECT_EQ(cl.arg, c.arg) << c.line;
  }
}

TEST(SmtpSyntax, Paths) {
  struct Case { const char* arg; bool utf8; PathError err; const char* addr; bool null_path; } cases[] = {
      {"FROM:<user@Example.COM>", false, PathError::kOk, "user@example.com", false},
      {"FROM: <user@example.com>", false, PathError::kOk, "user@example.com", false},
      {"FROM:<>", false, PathError::kOk, "", true},
      {"FROM:<@relay.a,@relay.b:user@example.com>", false, PathError::kOk, "user@example.com", false},
      {"FROM:<\"john smith\"@example.com>", false, PathError::kOk, "\"john smith\"@example.com", false},
      {"FROM:<\"a>b\"@example.com>", false, PathError::kOk, "\"a>b\"@example.com", false},
      {"FROM:<user@[192.0.2.1]>", false, PathError::kOk, "user@[192.0.2.1]", false},
      {"FROM:<user@example.com.>", false, PathError::kOk, "user@example.com", false},
      {"FROM:user@example.com", false, PathError::kSyntax, "", false},
      {"FROM:<user@example.com", false, PathError::kSyntax, "", false},
      {"FROM:<user>", false, PathError::kSyntax, "", false},
      {"FROM:<a..b@example.com>", false, PathError::kSyntax, "", false},
      {"FROM:<a@exa mple.com>", false, PathError::kSyntax, "", false},
      {"FROM:<a@>", false, PathError::kSyntax, "", false},
      {"TO:<a@b>", false, PathError::kSyntax, "", false},
      {"FROM:<usér@example.com>", false, PathError::kNonAscii, "", false},
      {"FROM:<usér@exämple.com>", true, PathError::kOk, "usér@exämple.com", false},
  };
  for (auto& c : cases) {
    auto pp = parse_path_arg(c.arg, "FROM", c.utf8);
    EXPECT_EQ(pp.error, c.err) << c.arg;
    if (c.err == PathError::kOk) {
      EXPECT_EQ(pp.box.str(), c.addr) << c.arg;
      EXPECT_EQ(pp.null_path, c.null_path) << c.arg;
    }
  }
}

TEST(SmtpSyntax, PostmasterAndRoutes) {
  auto pm = parse_path_arg("TO:<Postmaster>", "TO", false);
  EXPECT_EQ(pm.error, PathError::kOk);
  EXPECT_TRUE(pm.postmaster);
  auto sr = parse_path_arg("TO:<@evil.example:user@example.test>", "TO", false);
  EXPECT_TRUE(sr.box.source_route);
}

TEST(SmtpSyntax, Params) {
  auto pp = parse_path_arg("FROM:<a@b.c> SIZE=100 body=8bitmime SMTPUTF8", "FROM", true);
  ASSERT_EQ(pp.error, PathError::kOk);
  ASSERT_EQ(pp.params.size(), 3u);
  EXPECT_EQ(pp.params[0].key, "SIZE");
  EXPECT_EQ(pp.params[0].value, "100");
  EXPECT_EQ(pp.params[1].key, "BODY");
  EXPECT_EQ(pp.params[2].key, "SMTPUTF8");
  EXPECT_FALSE(pp.params[2].has_value);
  EXPECT_TRUE(pp.params_ok);
  auto dup = parse_path_arg("FROM:<a@b.c> SIZE=1 SIZE=2", "FROM", false);
  EXPECT_FALSE(dup.params_ok);
  auto glued = parse_path_arg("FROM:<a@b.c>SIZE=1", "FROM", false);
  EXPECT_EQ(glued.error, PathError::kSyntax);
}

TEST(SmtpSyntax, Xtext) {
  EXPECT_TRUE(valid_xtext("abc+2Bdef"));
  EXPECT_TRUE(valid_xtext(""));
  EXPECT_FALSE(valid_xtext("a+2"));
  EXPECT_FALSE(valid_xtext("a+ZZ"));
  EXPECT_FALSE(valid_xtext("a=b"));
  EXPECT_FALSE(valid_xtext("a b"));
}
