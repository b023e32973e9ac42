// licensing_config_test.cpp — the licensing config keys: server.timezone and [license], with
// their defaults and refusals that name the key.
#include <gtest/gtest.h>

#include "conf/config.h"

using namespace postern;

namespace {
std::string refusal(const std::string& toml) {
  try {
    parse_config(toml, "t.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(LicensingConfig, DefaultsAndValues) {
  auto c = parse_config("", "t.toml");
  EXPECT_EQ(c.timezone, "UTC");
  EXPECT_EQ(c.license.server, "");
  EXPECT_EQ(c.license.public_key_file, "");
  EXPECT_EQ(c.license.admin_email, "");
  auto d = parse_config(R"(
[server]
timezone = "+09:00"
[license]
server = "http://127.0.0.1:8800"
public_key_file = "/etc/postern/vendor.pub"
proxy = "http://proxy.example:3128"
admin_email = "postmaster@example.test"
)", "t.toml");
  EXPECT_EQ(d.timezone, "+09:00");
  EXPECT_EQ(d.license.server, "http://127.0.0.1:8800");
  EXPECT_EQ(d.license.proxy, "http://proxy.example:3128");
  EXPECT_EQ(d.license.admin_email, "postmaster@example.test");
}

TEST(LicensingConfig, BadValuesNameTheKey) {
  EXPECT_NE(refusal("[server]\ntimezone = \"Asia/Tokyo\"\n").find("server.timezone"), std::string::npos);
  EXPECT_NE(refusal("[server]\ntimezone = \"+15:00\"\n").find("server.timezone"), std::string::npos);
  EXPECT_NE(refusal("[license]\nserver = \"ftp://x\"\n").find("license.server"), std::string::npos);
  EXPECT_NE(refusal("[license]\nproxy = \"nonsense\"\n").find("license.proxy"), std::string::npos);
  EXPECT_NE(refusal("[license]\nadmin_email = \"no at sign\"\n").find("license.admin_email"), std::string::npos);
  EXPECT_NE(refusal("[license]\nadmin_email = \"a@b>\"\n").find("license.admin_email"), std::string::npos);
  EXPECT_NE(refusal("[license]\nbogus = 1\n").find("license"), std::string::npos);
}
