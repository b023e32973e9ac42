// Tests of the recipient map: loading (conf/recipient_table.h), lookup (policy/recipient_map.h)
// and the session's 550 5.1.1 at RCPT.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "policy/recipient_map.h"

using namespace postern;
using namespace postern::policy;
namespace fs = std::filesystem;

namespace {

struct TmpDir {
  fs::path p;
  TmpDir() {
    p = fs::temp_directory_path() / ("postern-rmap-" + std::to_string(::getpid()) + "-" +
                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(p);
    fs::create_directories(p);
  }
  ~TmpDir() { fs::remove_all(p); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(p / name, std::ios::binary) << text;
    return (p / name).string();
  }
};

Config load(const std::string& relay_extra) {
  return parse_config("[relay]\ndomains = [\"example.test\", \".corp.test\", \"open.test\"]\n" + relay_extra, "t.toml");
}

std::string error_of(const std::string& relay_extra) {
  try {
    load(relay_extra);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(RecipientMap, OneFile) {
  TmpDir t;
  std::string path = t.write("recipients", "# the users\nalice@example.test\nBob@Example.Test   # mixed case\n"
                                           "\n  carol@hq.corp.test\n@open.test\n");
  Config c = load("recipient_map = \"" + path + "\"\nrecipient_delimiter = \"+\"\n");
  ASSERT_TRUE(c.relay.recipients);
  struct Case { const char* local; const char* domain; RecipientVerdict want; } cases[] = {
      {"alice", "example.test", RecipientVerdict::kKnown},
      {"ALICE", "example.test", RecipientVerdict::kKnown},
      {"bob", "example.test", RecipientVerdict::kKnown},
      {"alice+lists", "example.test", RecipientVerdict::kKnown},  // subaddress: then as alice@
      {"+alice", "example.test", RecipientVerdict::kUnknown},
      {"mallory", "example.test", RecipientVerdict::kUnknown},
      {"carol", "hq.corp.test", RecipientVerdict::kKnown},
      {"carol", "eu.corp.test", RecipientVerdict::kUnknown},
      {"anyone", "open.test", RecipientVerdict::kKnown},            // "@open.test"
      {"postmaster", "example.test", RecipientVerdict::kKnown},     // RFC 5321 4.5.1
      {"PostMaster", "eu.corp.test", RecipientVerdict::kKnown},
      {"alice", "elsewhere.example", RecipientVerdict::kNotChecked},  // not our domain
  };
  for (auto& k : cases)
    EXPECT_EQ(recipient_lookup(c.relay, k.local, k.domain), k.want) << k.local << "@" << k.domain;
  Config off = load("");
  EXPECT_EQ(recipient_lookup(off.relay, "mallory", "example.test"), RecipientVerdict::kNotChecked);
  Config nodelim = load("recipient_map = \"" + path + "\"\n");
  EXPECT_EQ(recipient_lookup(nodelim.relay, "alice+lists", "example.test"), RecipientVerdict::kUnknown);
}

TEST(RecipientMap, DirectoryOfDomainFiles) {
  TmpDir t;
  fs::create_directories(t.p / "map");
  t.write("map/example.test", "alice\nbob@example.test\n");
  t.write("map/open.test", "@\n");
  t.write("map/hq.corp.test", "");           // a domain with no users
  t.write("map/.hidden", "mallory\n");       // skipped
  t.write("map/example.test~", "mallory\n"); // an editor's backup: skipped
  Config c = load("recipient_map = \"" + (t.p / "map").string() + "\"\n");
  EXPECT_EQ(recipient_lookup(c.relay, "alice", "example.test"), RecipientVerdict::kKnown);
  EXPECT_EQ(recipient_lookup(c.relay, "bob", "example.test"), RecipientVerdict::kKnown);
  EXPECT_EQ(recipient_lookup(c.relay, "mallory", "example.test"), RecipientVerdict::kUnknown);
  EXPECT_EQ(recipient_lookup(c.relay, "x", "open.test"), RecipientVerdict::kKnown);
  EXPECT_EQ(recipient_lookup(c.relay, "x", "hq.corp.test"), RecipientVerdict::kUnknown);
  EXPECT_EQ(recipient_lookup(c.relay, "x", "eu.corp.test"), RecipientVerdict::kUnknown);  // no file: no users
  EXPECT_EQ(c.relay.recipients->files, 3u);
}

TEST(RecipientMap, BadMapsAreRefusedNamingTheKey) {
  TmpDir t;
  for (auto [text, why] : {std::pair{"alice\n", "not an address"}, std::pair{"a b@example.test\n", "one address"},
                           std::pair{"alice@\n", "no domain"}}) {
    std::string path = t.write("bad", text);
    std::string e = error_of("recipient_map = \"" + path + "\"\n");
    EXPECT_NE(e.find("relay.recipient_map"), std::string::npos) << e;
    EXPECT_NE(e.find(why), std::string::npos) << e;
    EXPECT_NE(e.find(":1"), std::string::npos) << e;  // the line
  }
  EXPECT_NE(error_of("recipient_map = \"" + (t.p / "missing").string() + "\"\n").find("no such file"), std::string::npos);
  EXPECT_NE(t.write("long", std::string(2000, 'a') + "@example.test\n"), "");
  EXPECT_NE(error_of("recipient_map = \"" + (t.p / "long").string() + "\"\n").find("longer than"), std::string::npos);
  EXPECT_NE(error_of("recipient_delimiter = \"@\"\n").find("relay.recipient_delimiter"), std::string::npos);
}

TEST(RecipientMap, FingerprintChangesWithTheFiles) {
  TmpDir t;
  std::string path = t.write("recipients", "alice@example.test\n");
  std::string a = recipient_map_fingerprint(path);
  EXPECT_NE(a, "");
  EXPECT_EQ(recipient_map_fingerprint(path), a);
  t.write("recipients", "alice@example.test\nbob@example.test\n");
  EXPECT_NE(recipient_map_fingerprint(path), a);
  std::string d = recipient_map_fingerprint(t.p.string());
  t.write("another", "x@example.test\n");
  EXPECT_NE(recipient_map_fingerprint(t.p.string()), d);
  EXPECT_EQ(recipient_map_fingerprint(""), "");
  EXPECT_EQ(recipient_map_fingerprint((t.p / "nothing").string()), "");
}

TEST(RecipientMap, WatchFiresOnceAChangeHoldsStill) {
  TmpDir t;
  std::string path = t.write("map", "a@example.test\n");
  RecipientMapWatch w;
  EXPECT_FALSE(w.poll(path));  // the first poll only learns the map
  EXPECT_FALSE(w.poll(path));
  t.write("map", "a@example.test\nb@example.test\n");
  EXPECT_FALSE(w.poll(path));  // changed: wait one poll for it to hold still
  EXPECT_TRUE(w.poll(path));
  EXPECT_FALSE(w.poll(path));  // once
  t.write("map", "a@example.test\nb@example.test\nc@example.test\n");
  EXPECT_FALSE(w.poll(path));
  t.write("map", "a@example.test\nb@example.test\nc@example.test\nd@example.test\n");
  EXPECT_FALSE(w.poll(path));  // still being written
  EXPECT_TRUE(w.poll(path));
  w.reset(path);  // a reload read it: no change
  EXPECT_FALSE(w.poll(path));
  std::string other = t.write("other", "x@example.test\n");
  EXPECT_FALSE(w.poll(other));  // a new path: the reload that set it read it
  EXPECT_FALSE(w.poll(""));
  EXPECT_FALSE(w.poll(""));
}
