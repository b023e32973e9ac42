// licensing_vendor_test.cpp — the vendor's database file: what is saved loads back, a missing
// file is empty, and a malformed or hand-broken file is refused rather than guessed at.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "licensing/activation_code.h"
#include "licensing/vendor_db.h"

using namespace postern::licensing;
namespace fs = std::filesystem;

namespace {
std::string tmp_path() {
  auto p = fs::temp_directory_path() / ("postern-vendor-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove(p);
  return p.string();
}
}  // namespace

TEST(LicensingVendorDb, RoundTripAndMissingFile) {
  std::string path = tmp_path();
  VendorDb db;
  EXPECT_EQ(VendorDb::load(path, db), "");
  EXPECT_TRUE(db.codes.empty());
  std::string code = make_code(LicenseKind::kDlp, "DL", 7, 99);
  db.next_serial = 8;
  db.codes[code] = {LicenseKind::kDlp, *parse_date("2028-02-29"), 7, 1'800'000'000, 0};
  ASSERT_EQ(db.save(path), "");
  VendorDb back;
  ASSERT_EQ(VendorDb::load(path, back), "");
  EXPECT_EQ(back.next_serial, 8u);
  ASSERT_EQ(back.codes.count(code), 1u);
  EXPECT_EQ(format_date(back.codes[code].expires), "2028-02-29");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove(path);
}

TEST(LicensingVendorDb, BrokenFilesAreRefused) {
  std::string path = tmp_path();
  std::string code = make_code(LicenseKind::kAntivirus, "IM", 1, 1);
  for (std::string text :
       {std::string("not json"), std::string(R"({"format":"other","next_serial":1,"codes":{}})"),
        R"({"format":"postern-license-db-1","next_serial":1,"codes":{")" + code +
            R"(":{"license":"dlp","expires":"2027-01-01"}}})",
        R"({"format":"postern-license-db-1","next_serial":1,"codes":{")" + code +
            R"(":{"license":"antivirus","expires":"2027-13-01"}}})",
        R"({"format":"postern-license-db-1","next_serial":1,"codes":{")" + code +
            R"(":{"license":"antivirus","expires":"2027-01-01","serial":"seven"}}})",  // a wrong type: no throw
        std::string(R"({"format":"postern-license-db-1","next_serial":1,"codes":{"IM-00000-00000-00000-00000":{}}})")}) {
    std::ofstream(path, std::ios::trunc) << text;
    VendorDb db;
    EXPECT_NE(VendorDb::load(path, db), "") << text;
  }
  fs::remove(path);
}
