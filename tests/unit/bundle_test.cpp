// bundle_test.cpp — pattern bundles: manifest parsing, CMS signature and chain (good, bad,
// other root, expired and not-yet-valid signer under an injected time), file checks, rollback
// rules (older, same version other content, signature-only refresh), the installed store's
// switch, and the offline bundle file's refusals (absolute path, "..", links, caps, truncation).
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "scan/bundle.h"
#include "scan/bundle_archive.h"
#include "scan/bundle_sign.h"
#include "scan/bundle_store.h"

namespace fs = std::filesystem;
using namespace postern::scan;

namespace {

constexpr int64_t kNow = 1'800'000'000;
constexpr int64_t kDay = 86400;

struct Pki {
  CertAndKey root, signer, signer2, expired, future, other_root, other_signer;
  Pki() {
    root = make_pattern_root("test root", kNow - 10 * kDay, kNow + 3650 * kDay);
    signer = make_pattern_signer(root.cert_pem, root.key_pem, "signer", kNow - kDay, kNow + 365 * kDay);
    signer2 = make_pattern_signer(root.cert_pem, root.key_pem, "signer 2", kNow - kDay, kNow + 730 * kDay);
    expired = make_pattern_signer(root.cert_pem, root.key_pem, "old signer", kNow - 9 * kDay, kNow - kDay);
    future = make_pattern_signer(root.cert_pem, root.key_pem, "future signer", kNow + kDay, kNow + 9 * kDay);
    other_root = make_pattern_root("other root", kNow - kDay, kNow + 3650 * kDay);
    other_signer = make_pattern_signer(other_root.cert_pem, other_root.key_pem, "other", kNow - kDay, kNow + 365 * kDay);
  }
};
const Pki& pki() {
  static Pki p;
  return p;
}

const std::string kHdb = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n";
const std::string kNdb = "Postern.Test.Body:0:*:706f737465726e\n";

Manifest manifest(uint64_t version, const std::string& hdb = kHdb) {
  Manifest m;
  m.version = version;
  m.issued_at = kNow - 100;
  m.files = {{"a.hdb", hdb.size(), sha256_hex(hdb)}, {"b.ndb", kNdb.size(), sha256_hex(kNdb)}};
  m.samples = {{"eicar", "X5O!P%@AP", "Eicar-Test-Signature"}};
  return m;
}

std::string sign(const std::string& m, const CertAndKey& s) {
  std::string err, sig = sign_manifest(m, s.cert_pem, s.key_pem, err);
  EXPECT_FALSE(sig.empty()) << err;
  return sig;
}

void write(const std::string& p, const std::string& d) { std::ofstream(p, std::ios::binary) << d; }

// A staged bundle directory: manifest, signature by `s`, and the files.
std::string stage(BundleStore& store, const Manifest& m, const CertAndKey& s, const std::string& hdb = kHdb) {
  std::string why, dir = store.make_staging(why);
  std::string mj = manifest_json(m);
  write(dir + "/manifest.json", mj);
  write(dir + "/manifest.sig", sign(mj, s));
  write(dir + "/a.hdb", hdb);
  write(dir + "/b.ndb", kNdb);
  return dir;
}

struct TempDir {
  std::string path;
  TempDir() {
    path = (fs::temp_directory_path() / ("bundle_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++))).string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int n = 0;
    return n;
  }
};

}  // namespace

TEST(BundleManifest, ParsesWhatTheVendorToolWrites) {
  Manifest m;
  ASSERT_TRUE(parse_manifest(manifest_json(manifest(7)), m).ok());
  EXPECT_EQ(m.version, 7u);
  ASSERT_EQ(m.files.size(), 2u);
  EXPECT_EQ(m.files[0].name, "a.hdb");
  ASSERT_EQ(m.samples.size(), 1u);
  EXPECT_EQ(m.samples[0].content, "X5O!P%@AP");
  EXPECT_EQ(m.content_id(), manifest(7).content_id());
}

TEST(BundleManifest, RefusesBadInput) {
  Manifest m;
  struct Case {
    std::string text;
    BundleError want;
  } cases[] = {
      {"not json", BundleError::kManifest},
      {"[]", BundleError::kManifest},
      {R"({"format":2,"version":1,"issued_at":1,"files":[{"name":"a.hdb","size":1,"sha256":"00"}]})", BundleError::kManifest},
      {R"({"format":1,"version":"1","issued_at":1,"files":[]})", BundleError::kManifest},
      {R"({"format":1,"version":-3,"issued_at":1,"files":[]})", BundleError::kManifest},
      {R"({"format":1,"version":1,"issued_at":1,"files":[]})", BundleError::kManifest},
      {R"({"format":1,"version":1,"issued_at":1,"files":[{"name":"a.hdb","size":1}]})", BundleError::kManifest},
      {R"({"format":1,"version":1,"issued_at":1,"files":[{"name":"a.hdb","size":1,"sha256":"xyz"}]})", BundleError::kManifest},
      {R"({"format":1,"version":1,"issued_at":1,"files":[{"name":"../x.hdb","size":1,"sha256":"00"}]})", BundleError::kFileName},
      {R"({"format":1,"version":1,"issued_at":1,"files":[{"name":"/etc/a.hdb","size":1,"sha256":"00"}]})", BundleError::kFileName},
      {R"({"format":1,"version":1,"issued_at":1,"files":[{"name":"run.sh","size":1,"sha256":"00"}]})", BundleError::kFileName},
      {R"({"format":1,"version":1,"issued_at":1,"files":[{"name":".hdb","size":1,"sha256":"00"}]})", BundleError::kFileName},
      {std::string(R"({"format":1,"version":1,"issued_at":1,"files":[{"name":"a.hdb","size":1,"sha256":")") +
           std::string(64, 'a') + R"("}],"samples":[{"name":"s","content":"!!!","expect":"X"}]})",
       BundleError::kManifest},
      {std::string(kMaxManifestSize + 1, ' '), BundleError::kManifest},
  };
  for (auto& c : cases) EXPECT_EQ(parse_manifest(c.text, m).code, c.want) << c.text.substr(0, 120);
}

TEST(BundleManifest, FileNames) {
  for (const char* ok : {"main.hdb", "daily.ndb", "x-1_2.ldb", "rules.yar", "a.hsb", "local.ign2"})
    EXPECT_TRUE(valid_file_name(ok)) << ok;
  for (const char* bad : {"", "a", "..", "../a.hdb", "a/b.hdb", ".a.hdb", "a.sh", "a..hdb", "a.hdb ", "a.cvd"})
    EXPECT_FALSE(valid_file_name(bad)) << bad;
}

TEST(BundleSignature, GoodBadAndOtherRoot) {
  auto& p = pki();
  std::string m = manifest_json(manifest(1));
  SignerInfo s;
  EXPECT_TRUE(verify_signature(m, sign(m, p.signer), p.root.cert_pem, kNow, true, s).ok());
  EXPECT_EQ(s.not_after, kNow + 365 * kDay);
  // One byte of the manifest changed.
  std::string tampered = m;
  tampered[tampered.find("\"version\": 1") + 11] = '2';
  EXPECT_EQ(verify_signature(tampered, sign(m, p.signer), p.root.cert_pem, kNow, true, s).code, BundleError::kSignature);
  // Garbage signature, none, and a signer from another root.
  EXPECT_EQ(verify_signature(m, "garbage", p.root.cert_pem, kNow, true, s).code, BundleError::kSignature);
  EXPECT_EQ(verify_signature(m, "", p.root.cert_pem, kNow, true, s).code, BundleError::kSignature);
  EXPECT_EQ(verify_signature(m, sign(m, p.other_signer), p.root.cert_pem, kNow, true, s).code, BundleError::kSignature);
  // No root pinned.
  EXPECT_EQ(verify_signature(m, sign(m, p.signer), "", kNow, true, s).code, BundleError::kSignature);
  // The root itself cannot sign bundles (a CA is not a signing certificate).
  EXPECT_EQ(verify_signature(m, sign(m, p.root), p.root.cert_pem, kNow, true, s).code, BundleError::kSignature);
}

TEST(BundleSignature, ExpiredAndNotYetValidSignerUnderTheInjectedClock) {
  auto& p = pki();
  std::string m = manifest_json(manifest(1));
  SignerInfo s;
  EXPECT_EQ(verify_signature(m, sign(m, p.expired), p.root.cert_pem, kNow, true, s).code, BundleError::kCertExpired);
  EXPECT_EQ(verify_signature(m, sign(m, p.future), p.root.cert_pem, kNow, true, s).code, BundleError::kCertExpired);
  // The same good signer, a year and a day later.
  EXPECT_EQ(verify_signature(m, sign(m, p.signer), p.root.cert_pem, kNow + 366 * kDay, true, s).code,
            BundleError::kCertExpired);
  // Without time checks (start-up check of an accepted bundle) the expired signer still verifies.
  EXPECT_TRUE(verify_signature(m, sign(m, p.expired), p.root.cert_pem, kNow, false, s).ok());
  // An expired signer from another root is still a signature failure, not an expiry.
  EXPECT_EQ(verify_signature(m, sign(m, p.other_signer), p.root.cert_pem, kNow, false, s).code, BundleError::kSignature);
}

TEST(BundleStore, InstallsAndRefusesRollback) {
  auto& p = pki();
  TempDir t;
  BundleStore store(t.path);
  Verified v;
  std::string dir = stage(store, manifest(5), p.signer);
  ASSERT_TRUE(store.verify_staged(dir, p.root.cert_pem, kNow, v).ok());
  EXPECT_EQ(v.decision, Decision::kInstall);
  std::string vdir;
  ASSERT_TRUE(store.prepare(dir, v, vdir).ok());
  ASSERT_TRUE(store.commit(vdir, v, kNow).ok());
  EXPECT_EQ(store.current_dir(), vdir);
  ASSERT_TRUE(store.state());
  EXPECT_EQ(store.state()->version, 5u);

  // Older version: refused; same version with other content: refused.
  Verified o;
  EXPECT_EQ(store.verify_staged(stage(store, manifest(4), p.signer), p.root.cert_pem, kNow, o).code, BundleError::kOlderVersion);
  std::string other = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:12:Other\n";
  EXPECT_EQ(store.verify_staged(stage(store, manifest(5, other), p.signer, other), p.root.cert_pem, kNow, o).code,
            BundleError::kSameVersionChanged);
  // The same bundle again: up to date.
  ASSERT_TRUE(store.verify_staged(stage(store, manifest(5), p.signer), p.root.cert_pem, kNow, o).ok());
  // Same version, same files, a new signature by a new signer: a signature-only refresh.
  Verified r;
  std::string rdir = stage(store, manifest(5), p.signer2);
  ASSERT_TRUE(store.verify_staged(rdir, p.root.cert_pem, kNow, r).ok());
  EXPECT_EQ(r.decision, Decision::kSignatureRefresh);
  std::string rv;
  ASSERT_TRUE(store.prepare(rdir, r, rv).ok());
  ASSERT_TRUE(store.commit(rv, r, kNow).ok());
  EXPECT_EQ(store.state()->signer_not_after, kNow + 730 * kDay);
  EXPECT_EQ(store.current_dir(), rv);
  // The rollback state survives a restart.
  BundleStore again(t.path);
  ASSERT_TRUE(again.state());
  EXPECT_EQ(again.state()->signature_sha256, r.signature_sha256);
  EXPECT_EQ(again.verify_staged(stage(again, manifest(4), p.signer2), p.root.cert_pem, kNow, o).code, BundleError::kOlderVersion);
}

TEST(BundleStore, FilesAreCheckedAgainstTheManifest) {
  auto& p = pki();
  TempDir t;
  BundleStore store(t.path);
  Verified v;
  std::string dir = stage(store, manifest(1), p.signer);
  write(dir + "/a.hdb", kHdb.substr(0, 10));  // truncated
  EXPECT_EQ(store.verify_staged(dir, p.root.cert_pem, kNow, v).code, BundleError::kTruncated);
  write(dir + "/a.hdb", kHdb + "x");  // longer
  EXPECT_EQ(store.verify_staged(dir, p.root.cert_pem, kNow, v).code, BundleError::kFileMismatch);
  std::string same_size = kHdb;
  same_size[0] = 'f';
  write(dir + "/a.hdb", same_size);  // tampered
  EXPECT_EQ(store.verify_staged(dir, p.root.cert_pem, kNow, v).code, BundleError::kFileMismatch);
  write(dir + "/a.hdb", kHdb);
  write(dir + "/extra.ndb", kNdb);  // not in the manifest
  EXPECT_EQ(store.verify_staged(dir, p.root.cert_pem, kNow, v).code, BundleError::kFileMismatch);
  fs::remove(dir + "/extra.ndb");
  fs::remove(dir + "/b.ndb");  // missing
  EXPECT_EQ(store.verify_staged(dir, p.root.cert_pem, kNow, v).code, BundleError::kFileMismatch);
  EXPECT_EQ(store.current_dir(), "");  // nothing was installed
}

TEST(BundleStore, ExpiredSignerRefusedForUpdateButAcceptedInstalledOneStillLoads) {
  auto& p = pki();
  TempDir t;
  BundleStore store(t.path);
  Verified v;
  std::string dir = stage(store, manifest(3), p.signer);
  ASSERT_TRUE(store.verify_staged(dir, p.root.cert_pem, kNow, v).ok());
  std::string vdir;
  ASSERT_TRUE(store.prepare(dir, v, vdir).ok());
  ASSERT_TRUE(store.commit(vdir, v, kNow).ok());
  // Two years on, the signer has expired: a new update signed by it is refused ...
  int64_t later = kNow + 730 * kDay;
  Verified n;
  EXPECT_EQ(store.verify_staged(stage(store, manifest(4), p.signer), p.root.cert_pem, later, n).code, BundleError::kCertExpired);
  EXPECT_EQ(store.current_dir(), vdir);
  // ... while the installed bundle still loads at start-up, flagged as expired.
  Verified cur;
  ASSERT_TRUE(store.load_current(p.root.cert_pem, later, cur).ok());
  EXPECT_TRUE(cur.signer_expired);
  // `current` pointed back at an older bundle than the recorded one: refused at start-up.
  {
    TempDir t2;
    BundleStore s2(t2.path);
    std::string first;
    for (uint64_t ver = 1; ver <= 2; ++ver) {
      Verified w;
      std::string hdb = kHdb + "# " + std::to_string(ver) + "\n";
      std::string staged = stage(s2, manifest(ver, hdb), p.signer, hdb);
      ASSERT_TRUE(s2.verify_staged(staged, p.root.cert_pem, kNow, w).ok());
      std::string vd;
      ASSERT_TRUE(s2.prepare(staged, w, vd).ok());
      ASSERT_TRUE(s2.commit(vd, w, kNow).ok());
      if (ver == 1) first = vd;
    }
    fs::remove(s2.root() + "/current");
    fs::create_directory_symlink(fs::path(first).filename(), s2.root() + "/current");
    Verified back;
    EXPECT_EQ(s2.load_current(p.root.cert_pem, kNow, back).code, BundleError::kOlderVersion);
  }
  // A tampered installed file is caught at start-up.
  write(vdir + "/b.ndb", "Postern.Test.Body:0:*:00\n");
  EXPECT_FALSE(store.load_current(p.root.cert_pem, kNow, cur).ok());
}

TEST(BundleStore, KeepsThePreviousVersionAndPrunesOlder) {
  auto& p = pki();
  TempDir t;
  BundleStore store(t.path);
  std::vector<std::string> dirs;
  for (uint64_t ver = 1; ver <= 3; ++ver) {
    Verified v;
    std::string hdb = kHdb + "# " + std::to_string(ver) + "\n";
    std::string staged = stage(store, manifest(ver, hdb), p.signer, hdb);
    ASSERT_TRUE(store.verify_staged(staged, p.root.cert_pem, kNow, v).ok());
    std::string vdir;
    ASSERT_TRUE(store.prepare(staged, v, vdir).ok());
    ASSERT_TRUE(store.commit(vdir, v, kNow).ok());
    dirs.push_back(vdir);
  }
  EXPECT_FALSE(fs::exists(dirs[0]));
  EXPECT_TRUE(fs::exists(dirs[1]));
  EXPECT_EQ(store.current_dir(), dirs[2]);
  EXPECT_TRUE(fs::is_symlink(store.root() + "/current"));
}

// --- the offline bundle file ---------------------------------------------------------------

namespace {

struct RawEntry {
  std::string name;
  std::string data;
  unsigned type = AE_IFREG;
  std::string link;
};

void write_raw_tar(const std::string& path, const std::vector<RawEntry>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path.c_str());
  for (auto& r : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, r.name.c_str());
    archive_entry_set_filetype(e, r.type);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, r.type == AE_IFREG ? static_cast<la_int64_t>(r.data.size()) : 0);
    if (r.type == AE_IFLNK) archive_entry_set_symlink(e, r.link.c_str());
    archive_write_header(a, e);
    if (r.type == AE_IFREG) archive_write_data(a, r.data.data(), r.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

Failure unpack_raw(const std::vector<RawEntry>& entries, UnpackLimits lim = {}) {
  TempDir t;
  fs::create_directories(t.path + "/out");
  write_raw_tar(t.path + "/b.tar", entries);
  return unpack_bundle(t.path + "/b.tar", t.path + "/out", lim);
}

}  // namespace

TEST(BundleArchive, RoundTripsAndInstalls) {
  auto& p = pki();
  TempDir t;
  std::string mj = manifest_json(manifest(2));
  ASSERT_EQ(write_bundle(t.path + "/b.tar", {{"manifest.json", mj}, {"manifest.sig", sign(mj, p.signer)},
                                             {"a.hdb", kHdb}, {"b.ndb", kNdb}}), "");
  BundleStore store(t.path + "/state");
  std::string why, dir = store.make_staging(why);
  ASSERT_TRUE(unpack_bundle(t.path + "/b.tar", dir, {}).ok());
  Verified v;
  EXPECT_TRUE(store.verify_staged(dir, p.root.cert_pem, kNow, v).ok());
}

TEST(BundleArchive, RefusesUnsafeEntries) {
  std::string m = "{}";
  auto base = [&](RawEntry extra) {
    return std::vector<RawEntry>{{"manifest.json", m}, {"manifest.sig", "x"}, std::move(extra)};
  };
  EXPECT_EQ(unpack_raw(base({"/etc/a.hdb", "x"})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"../a.hdb", "x"})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"sub/../../a.hdb", "x"})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"sub/a.hdb", "x"})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"a.hdb", "", AE_IFLNK, "/etc/passwd"})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"a.hdb", "", AE_IFCHR})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"dir", "", AE_IFDIR})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"evil.sh", "x"})).code, BundleError::kArchive);
  EXPECT_EQ(unpack_raw(base({"manifest.json", "again"})).code, BundleError::kArchive);  // duplicate
  EXPECT_EQ(unpack_raw({{"manifest.json", m}, {"a.hdb", "x"}}).code, BundleError::kArchive);  // no signature
  EXPECT_TRUE(unpack_raw(base({"./a.hdb", "x"})).ok());
}

TEST(BundleArchive, EnforcesCaps) {
  std::vector<RawEntry> many{{"manifest.json", "{}"}, {"manifest.sig", "x"}};
  for (int i = 0; i < 10; ++i) many.push_back({"f" + std::to_string(i) + ".hdb", "x"});
  UnpackLimits lim;
  lim.max_entries = 8;
  EXPECT_EQ(unpack_raw(many, lim).code, BundleError::kArchive);
  lim = {};
  lim.max_entry_size = 100;
  EXPECT_EQ(unpack_raw({{"manifest.json", "{}"}, {"manifest.sig", "x"}, {"a.hdb", std::string(101, 'x')}}, lim).code,
            BundleError::kArchive);
  lim = {};
  lim.max_total_size = 150;
  EXPECT_EQ(unpack_raw({{"manifest.json", "{}"}, {"manifest.sig", "x"}, {"a.hdb", std::string(80, 'x')},
                        {"b.hdb", std::string(80, 'x')}}, lim).code,
            BundleError::kArchive);
}

TEST(BundleArchive, RefusesATruncatedFile) {
  TempDir t;
  std::string big(20000, 'x');
  write_raw_tar(t.path + "/b.tar", {{"manifest.json", "{}"}, {"manifest.sig", "x"}, {"a.hdb", big}});
  fs::resize_file(t.path + "/b.tar", 10000);
  fs::create_directories(t.path + "/out");
  auto f = unpack_bundle(t.path + "/b.tar", t.path + "/out", {});
  EXPECT_EQ(f.code, BundleError::kTruncated) << f.why;
}

TEST(BundleErrors, NamesAndCodesAreStable) {
  EXPECT_STREQ(error_name(BundleError::kSignature), "DIGITAL_SIGNATURE_FAILURE");
  EXPECT_STREQ(error_name(BundleError::kCertExpired), "DIGITAL_SIGNATURE_CERT_EXPIRE");
  EXPECT_EQ(error_code(BundleError::kCertExpired), -24);
}
