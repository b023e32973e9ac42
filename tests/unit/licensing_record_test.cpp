// licensing_record_test.cpp — signed license records: a record verifies with its key; a tampered
// payload, a swapped signature and a record signed by another key are refused.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "licensing/activation_code.h"
#include "licensing/license_record.h"

using namespace postern::licensing;

namespace {
LicenseRecord sample() {
  LicenseRecord r;
  r.code = make_code(LicenseKind::kAntivirus, "IM", 9, 9);
  r.kind = LicenseKind::kAntivirus;
  r.expires = *parse_date("2027-03-31");
  r.serial = 9;
  r.issued_at = 1'700'000'000;
  r.signed_at = 1'800'000'000;
  return r;
}
}  // namespace

TEST(LicensingRecord, SignVerifyAndPem) {
  std::string err;
  Key k = generate_key(err);
  ASSERT_TRUE(k) << err;
  std::string doc = sign_record(sample(), k.get(), err);
  ASSERT_FALSE(doc.empty()) << err;
  Key pub = public_key_from_pem(public_key_pem(k.get()), err);
  ASSERT_TRUE(pub) << err;
  std::string why;
  auto r = verify_record(doc, pub.get(), why);
  ASSERT_TRUE(r) << why;
  EXPECT_EQ(r->code, sample().code);
  EXPECT_EQ(format_date(r->expires), "2027-03-31");
  EXPECT_EQ(r->document, doc);
  Key again = private_key_from_pem(private_key_pem(k.get()), err);
  ASSERT_TRUE(again) << err;
  EXPECT_TRUE(verify_record(sign_record(sample(), again.get(), err), pub.get(), why));
  EXPECT_FALSE(public_key_from_pem("not pem", err));
}

TEST(LicensingRecord, TamperedAndOtherKeyRefused) {
  std::string err, why;
  Key k = generate_key(err), other = generate_key(err);
  std::string doc = sign_record(sample(), k.get(), err);
  auto j = nlohmann::json::parse(doc);
  std::string payload = j["payload"];
  auto pos = payload.find("2027-03-31");
  ASSERT_NE(pos, std::string::npos);
  payload.replace(pos, 10, "2099-03-31");  // a longer license, by hand
  j["payload"] = payload;
  EXPECT_FALSE(verify_record(j.dump(), k.get(), why));
  EXPECT_NE(why.find("does not verify"), std::string::npos);
  EXPECT_FALSE(verify_record(doc, other.get(), why));  // signed by a key that is not pinned
  EXPECT_FALSE(verify_record(sign_record(sample(), other.get(), err), k.get(), why));
  EXPECT_FALSE(verify_record("{}", k.get(), why));
  EXPECT_FALSE(verify_record("garbage", k.get(), why));
  EXPECT_FALSE(verify_record(doc, nullptr, why));
  EXPECT_FALSE(verify_record(std::string(kMaxRecordSize + 1, ' '), k.get(), why));
  // A correctly signed record whose license does not match its code's kind is refused too.
  LicenseRecord bad = sample();
  bad.kind = LicenseKind::kDlp;
  EXPECT_FALSE(verify_record(sign_record(bad, k.get(), err), k.get(), why));
  EXPECT_NE(why.find("does not match"), std::string::npos);
}
