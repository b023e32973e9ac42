// esc(): a peer-supplied string can never make a second log line or carry terminal escapes.
#include <gtest/gtest.h>

#include "base/log.h"

using postern::esc;

TEST(LogEsc, Cases) {
  struct {
    std::string in, want;
  } cases[] = {
      {"plain text", "plain text"},
      {"451 4.3.0 soft\rqueue_id=FAKE2 status=sent", "451 4.3.0 soft\\x0dqueue_id=FAKE2 status=sent"},
      {"a\nb", "a\\x0ab"},
      {std::string("nul\0byte", 8), "nul\\x00byte"},
      {"\x1b[31mred", "\\x1b[31mred"},
      {"back\\slash", "back\\\\slash"},
      {"caf\xc3\xa9", "caf\xc3\xa9"},        // valid UTF-8 stays
      {"bad\xc3(", "bad\\xc3("},            // a broken sequence does not
      {"\xed\xa0\x80", "\\xed\\xa0\\x80"},   // a UTF-16 surrogate is not UTF-8
      {"del\x7f", "del\\x7f"},
  };
  for (auto& c : cases) EXPECT_EQ(esc(c.in), c.want) << c.in;
  EXPECT_EQ(esc(std::string(600, 'a'), 512), std::string(512, 'a') + "...");
}
