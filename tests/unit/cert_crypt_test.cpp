// cert_crypt_test.cpp — the node key file (0600, made once, reused), sealing under it, and the
// backup format (scrypt + AES-256-GCM): round trip, wrong password, a flipped byte, hostile
// KDF parameters.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "certs/cert_crypt.h"
#include "tests/unit/test_certs.h"

namespace postern::certs {
namespace {

TEST(CertCrypt, NodeKeyIsMadeOnceWithMode0600) {
  std::string dir = testcerts::make_temp_dir();
  NodeKey a, b;
  bool created = false;
  ASSERT_EQ(load_or_create_node_key(dir, a, created), "");
  EXPECT_TRUE(created);
  struct stat st {};
  ASSERT_EQ(stat((dir + "/node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(load_or_create_node_key(dir, b, created), "");
  EXPECT_FALSE(created);
  EXPECT_EQ(std::memcmp(a.bytes, b.bytes, 32), 0);
  chmod((dir + "/node.key").c_str(), 0644);
  EXPECT_NE(load_or_create_node_key(dir, b, created).find("chmod 600"), std::string::npos);
  std::ofstream(dir + "/node.key", std::ios::trunc) << "short\n";
  chmod((dir + "/node.key").c_str(), 0600);
  EXPECT_NE(load_or_create_node_key(dir, b, created).find("does not hold a node key"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(CertCrypt, SealedKeysOpenOnlyUnderTheirNodeKey) {
  NodeKey k, other;
  for (int i = 0; i < 32; ++i) {
    k.bytes[i] = static_cast<unsigned char>(i);
    other.bytes[i] = static_cast<unsigned char>(i + 1);
  }
  std::string secret = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
  std::string s1 = seal(k, secret), s2 = seal(k, secret);
  ASSERT_EQ(s1.rfind("pk1:", 0), 0u);
  EXPECT_NE(s1, s2);  // a fresh nonce each time
  EXPECT_EQ(s1.find("PRIVATE KEY"), std::string::npos);
  std::string out;
  ASSERT_TRUE(unseal(k, s1, out));
  EXPECT_EQ(out, secret);
  EXPECT_FALSE(unseal(other, s1, out));
  EXPECT_TRUE(out.empty());
  std::string tampered = s1;
  tampered[10] = tampered[10] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(unseal(k, tampered, out));
  EXPECT_FALSE(unseal(k, "plain", out));
}

TEST(CertCrypt, BackupRoundTripAndRefusals) {
  std::string json = R"({"entries":[{"name":"a","key_pem":"secret"}]})";
  std::string err;
  KdfParams fast{12, 8, 1};
  std::string file = encrypt_backup(json, "correct horse", err, fast);
  ASSERT_FALSE(file.empty()) << err;
  EXPECT_EQ(file.compare(0, 8, "PSTNCRTB"), 0);
  EXPECT_EQ(file.find("secret"), std::string::npos);
  std::string out;
  ASSERT_TRUE(decrypt_backup(file, "correct horse", out, err)) << err;
  EXPECT_EQ(out, json);
  EXPECT_FALSE(decrypt_backup(file, "wrong horse!", out, err));
  EXPECT_EQ(err, "wrong password or damaged backup file");
  for (size_t at : {size_t{13}, size_t{30}, file.size() - 1}) {  // salt, ciphertext, tag
    std::string bad = file;
    bad[at] ^= 1;
    EXPECT_FALSE(decrypt_backup(bad, "correct horse", out, err)) << at;
  }
  std::string header_changed = file;
  header_changed[11] = 9;  // r: part of the AAD
  EXPECT_FALSE(decrypt_backup(header_changed, "correct horse", out, err));
  std::string hostile = file;
  hostile[10] = 40;  // N = 2^40
  EXPECT_FALSE(decrypt_backup(hostile, "correct horse", out, err));
  EXPECT_EQ(err, "the backup's key-derivation parameters are out of range");
  EXPECT_FALSE(decrypt_backup("PK\x03\x04 zip", "x", out, err));
  EXPECT_EQ(err, "not a Postern certificate backup");
  EXPECT_TRUE(encrypt_backup(json, "short", err).empty());
  // The default parameters (what posternd writes) also round-trip.
  file = encrypt_backup(json, "correct horse", err);
  EXPECT_EQ(file[10], 16);
  ASSERT_TRUE(decrypt_backup(file, "correct horse", out, err)) << err;
}

}  // namespace
}  // namespace postern::certs
