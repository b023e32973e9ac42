// licensing_code_test.cpp — activation codes: what is made parses back; a changed symbol, a wrong
// prefix, an AS- code on antivirus and any code on encryption are refused.
#include <gtest/gtest.h>

#include "licensing/activation_code.h"

using namespace postern::licensing;

TEST(LicensingCode, MadeCodesParseBack) {
  std::string c = make_code(LicenseKind::kAntispam, "AS", 123456789, 0x2ABCDEF);
  ASSERT_EQ(c.size(), 26u);
  EXPECT_EQ(c.substr(0, 3), "AS-");
  auto p = parse_code(c);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->kind, LicenseKind::kAntispam);
  EXPECT_EQ(p->serial, 123456789u);
  EXPECT_EQ(p->random, 0x2ABCDEFu);
  EXPECT_EQ(p->text, c);
  std::string lower = c;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_TRUE(parse_code("  " + lower + "\n"));  // case and surrounding space do not matter
  EXPECT_TRUE(code_valid_for(c, LicenseKind::kAntispam));
  EXPECT_TRUE(code_valid_for(c, LicenseKind::kReputation));
}

TEST(LicensingCode, EverySingleChangedSymbolIsRefused) {
  const std::string alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  std::string c = make_code(LicenseKind::kAntivirus, "IM", 42, 777);
  ASSERT_TRUE(parse_code(c));
  int tried = 0;
  for (size_t i = 3; i < c.size(); ++i) {
    if (c[i] == '-') continue;
    for (char s : alphabet) {
      if (s == c[i]) continue;
      std::string t = c;
      t[i] = s;
      EXPECT_FALSE(parse_code(t)) << t;
      ++tried;
    }
    if (i + 1 < c.size() && c[i + 1] != '-' && c[i] != c[i + 1]) {  // neighbours swapped
      std::string t = c;
      std::swap(t[i], t[i + 1]);
      EXPECT_FALSE(parse_code(t)) << t;
    }
  }
  EXPECT_EQ(tried, 20 * 31);
}

TEST(LicensingCode, PrefixAndKindRules) {
  std::string im_av = make_code(LicenseKind::kAntivirus, "IM", 1, 1);
  std::string as_as = make_code(LicenseKind::kAntispam, "AS", 2, 2);
  std::string im_as = make_code(LicenseKind::kAntispam, "IM", 3, 3);
  std::string dl = make_code(LicenseKind::kDlp, "DL", 4, 4);
  EXPECT_TRUE(code_valid_for(im_av, LicenseKind::kAntivirus));
  EXPECT_FALSE(code_valid_for(as_as, LicenseKind::kAntivirus));  // AS- on antivirus
  EXPECT_FALSE(code_valid_for(im_as, LicenseKind::kAntivirus));  // an antispam code
  EXPECT_TRUE(code_valid_for(im_as, LicenseKind::kAntispam));
  EXPECT_TRUE(code_valid_for(dl, LicenseKind::kDlp));
  EXPECT_FALSE(code_valid_for(dl, LicenseKind::kPrefilter));
  for (auto* c : {&im_av, &as_as, &im_as, &dl}) EXPECT_FALSE(code_valid_for(*c, LicenseKind::kEncryption));
  // The prefix is covered by the check symbol: IM- written over AS- is refused.
  std::string swapped = "IM" + as_as.substr(2);
  EXPECT_FALSE(parse_code(swapped));
  EXPECT_FALSE(parse_code("XX" + as_as.substr(2)));
  EXPECT_FALSE(parse_code(""));
  EXPECT_FALSE(parse_code(as_as.substr(0, 25)));
  EXPECT_FALSE(parse_code(as_as + "0"));
  std::string nohyphen = as_as;
  nohyphen[8] = '0';
  EXPECT_FALSE(parse_code(nohyphen));
  EXPECT_EQ(std::string(kCodeRefused), "The activation code is incorrect. Check the code and try again.");
}
