// Tests of recipient verification's answer cache (policy/verify_cache.h).
#include <gtest/gtest.h>

#include "policy/verify_cache.h"

using postern::policy::VerifyCache;

TEST(VerifyCache, AnswersUntilTheyExpireAndTheDomainIgnoresCase) {
  VerifyCache c;
  c.put("Alice@Example.TEST", {true, "", 1000});
  c.put("bob@example.test", {false, "550 5.1.1 no such user", 500});
  VerifyCache::Answer a;
  ASSERT_TRUE(c.get("Alice@example.test", 999, a));
  EXPECT_TRUE(a.exists);
  EXPECT_FALSE(c.get("alice@example.test", 999, a));  // local parts are case-sensitive (RFC 5321 2.4)
  ASSERT_TRUE(c.get("bob@EXAMPLE.test", 10, a));
  EXPECT_FALSE(a.exists);
  EXPECT_EQ(a.detail, "550 5.1.1 no such user");
  EXPECT_FALSE(c.get("bob@example.test", 500, a));  // expired: gone
  EXPECT_EQ(c.size(), 1u);
}

TEST(VerifyCache, BoundedOldestFirst) {
  VerifyCache c(3);
  for (int i = 0; i < 10; ++i) c.put("u" + std::to_string(i) + "@example.test", {true, "", 100});
  EXPECT_EQ(c.size(), 3u);
  VerifyCache::Answer a;
  EXPECT_FALSE(c.get("u0@example.test", 1, a));
  EXPECT_TRUE(c.get("u9@example.test", 1, a));
  // Entries that expired and were erased on lookup do not pile up in the order kept.
  for (int i = 0; i < 1000; ++i) {
    std::string k = "e" + std::to_string(i) + "@example.test";
    c.put(k, {true, "", 1});
    c.get(k, 5, a);
  }
  EXPECT_LE(c.size(), 3u);
}
