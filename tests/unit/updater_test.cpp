// updater_test.cpp — the update protocol against an in-memory server (no sockets): a full
// update, 304s, a signature-only refresh picked up although manifest.json did not change (seed
// 003), a tampered file, a truncated and an oversize download, an older version, an expired
// signer; each refusal leaves the installed bundle in place.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "scan/bundle_sign.h"
#include "conf/config.h"
#include "scan/updater.h"

namespace fs = std::filesystem;
using namespace postern::scan;

namespace {

constexpr int64_t kNow = 1'800'000'000;
constexpr int64_t kDay = 86400;

struct FakeServer {
  std::map<std::string, std::string> files;  // path under /updates/ -> body
  std::vector<std::string> requested;
  std::string truncate;  // a path whose body is cut in half
  Fetch fetch() {
    return [this](const std::string& url, size_t max, const std::string& inm, std::function<void(FetchResult)> done) {
      std::string path = url.substr(url.find("/updates/") + 9);
      requested.push_back(path);
      auto it = files.find(path);
      if (it == files.end()) return done({404, "", "", ""});
      std::string etag = "\"" + sha256_hex(it->second).substr(0, 16) + "\"";
      if (!inm.empty() && inm == etag) return done({304, "", etag, ""});
      std::string body = path == truncate ? it->second.substr(0, it->second.size() / 2) : it->second;
      if (body.size() > max) return done({0, "", "", "response larger than " + std::to_string(max) + " bytes"});
      done({200, body, etag, ""});
    };
  }
  void publish(uint64_t version, const std::string& hdb, const CertAndKey& signer, int64_t issued = kNow - 60) {
    Manifest m;
    m.version = version;
    m.issued_at = issued;
    m.files = {{"p.hdb", hdb.size(), sha256_hex(hdb)}};
    files["manifest.json"] = manifest_json(m);
    resign(signer);
    files["files/p.hdb"] = hdb;
  }
  void resign(const CertAndKey& signer) {
    std::string err;
    files["manifest.sig"] = sign_manifest(files["manifest.json"], signer.cert_pem, signer.key_pem, err);
  }
};

struct UpdaterTest : ::testing::Test {
  std::string dir = (fs::temp_directory_path() / ("updater_test_" + std::to_string(::getpid()))).string();
  CertAndKey root = make_pattern_root("root", kNow - kDay, kNow + 3650 * kDay);
  CertAndKey signer = make_pattern_signer(root.cert_pem, root.key_pem, "s1", kNow - kDay, kNow + 30 * kDay);
  CertAndKey signer2 = make_pattern_signer(root.cert_pem, root.key_pem, "s2", kNow - kDay, kNow + 400 * kDay);
  FakeServer server;
  std::unique_ptr<BundleStore> store;
  std::string metag, setag;
  void SetUp() override {
    fs::remove_all(dir);
    store = std::make_unique<BundleStore>(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  UpdateOutcome run(int64_t now = kNow) {
    UpdateOutcome got;
    bool called = false;
    Updater::run(*store, server.fetch(), {"https://relay.test", root.cert_pem, now, 1 << 20, metag, setag},
                 [&](UpdateOutcome o) {
                   called = true;
                   got = std::move(o);
                 });
    EXPECT_TRUE(called);
    return got;
  }
  // Runs an update and installs what it staged (what PatternManager does around the engine).
  UpdateOutcome install(int64_t now = kNow) {
    auto o = run(now);
    if (o.failure.ok() && !o.up_to_date) {
      std::string vdir;
      EXPECT_TRUE(store->prepare(o.staged_dir, o.verified, vdir).ok());
      EXPECT_TRUE(store->commit(vdir, o.verified, now).ok());
      metag = o.manifest_etag;
      setag = o.signature_etag;
    }
    return o;
  }
};

const std::string kV1 = "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n";
const std::string kV2 = kV1 + "0123456789abcdef0123456789abcdef:10:Postern.Test.Two\n";

}  // namespace

TEST_F(UpdaterTest, InstallsThenIsUpToDateWith304s) {
  server.publish(1, kV1, signer);
  auto o = install();
  ASSERT_TRUE(o.failure.ok()) << o.failure.why;
  EXPECT_FALSE(o.up_to_date);
  EXPECT_EQ(store->state()->version, 1u);
  server.requested.clear();
  auto again = run();
  EXPECT_TRUE(again.failure.ok());
  EXPECT_TRUE(again.up_to_date);
  EXPECT_EQ(server.requested, (std::vector<std::string>{"manifest.json", "manifest.sig"}));
}

TEST_F(UpdaterTest, SignatureOnlyRefreshIsPickedUpAlthoughTheManifestDidNotChange) {
  server.publish(1, kV1, signer);
  ASSERT_TRUE(install().failure.ok());
  std::string installed_sig = store->state()->signature_sha256;
  server.resign(signer2);  // manifest.json unchanged: its ETag answers 304
  server.requested.clear();
  auto o = install();
  ASSERT_TRUE(o.failure.ok()) << o.failure.why;
  EXPECT_FALSE(o.up_to_date);
  EXPECT_EQ(o.verified.decision, Decision::kSignatureRefresh);
  EXPECT_NE(store->state()->signature_sha256, installed_sig);
  EXPECT_EQ(store->state()->signer_not_after, kNow + 400 * kDay);
  // The files were not downloaded again: same content, taken from the installed bundle.
  EXPECT_EQ(server.requested, (std::vector<std::string>{"manifest.json", "manifest.sig"}));
  std::ifstream sig(store->current_dir() + "/manifest.sig", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(sig)), {});
  EXPECT_EQ(s, server.files["manifest.sig"]);
}

TEST_F(UpdaterTest, RefusalsLeaveTheInstalledBundle) {
  server.publish(1, kV1, signer);
  ASSERT_TRUE(install().failure.ok());
  std::string cur = store->current_dir();

  server.publish(2, kV2, signer);
  server.files["files/p.hdb"][0] = 'f';  // tampered after signing
  EXPECT_EQ(run().failure.code, BundleError::kFileMismatch);

  server.publish(2, kV2, signer);
  server.files["manifest.json"] += " ";  // manifest changed after signing
  EXPECT_EQ(run().failure.code, BundleError::kSignature);

  server.publish(2, kV2, signer);
  server.truncate = "files/p.hdb";
  EXPECT_EQ(run().failure.code, BundleError::kTruncated);
  server.truncate.clear();

  server.publish(2, kV2, signer);
  server.files["files/p.hdb"] += "more";  // longer than the manifest says
  EXPECT_EQ(run().failure.code, BundleError::kTooLarge);

  server.publish(2, kV2, signer);
  EXPECT_EQ(run(kNow + 31 * kDay).failure.code, BundleError::kCertExpired);  // signer s1 expired by then

  EXPECT_EQ(store->current_dir(), cur);
  EXPECT_EQ(store->state()->version, 1u);
  // Nothing staged is left behind.
  EXPECT_TRUE(fs::is_empty(store->root() + "/tmp"));

  // The good version 2 installs; then version 1 again is a rollback.
  server.publish(2, kV2, signer);
  ASSERT_TRUE(install().failure.ok());
  server.publish(1, kV1, signer2);
  EXPECT_EQ(run().failure.code, BundleError::kOlderVersion);
  server.publish(2, kV1, signer2);
  EXPECT_EQ(run().failure.code, BundleError::kSameVersionChanged);
}

TEST_F(UpdaterTest, ServerErrorsAndOversizeBundles) {
  EXPECT_EQ(run().failure.code, BundleError::kDownload);  // 404: nothing published
  Manifest m;
  m.version = 1;
  m.issued_at = kNow;
  m.files = {{"big.hdb", 2u << 20, std::string(64, 'a')}};
  server.files["manifest.json"] = manifest_json(m);
  server.resign(signer);
  EXPECT_EQ(run().failure.code, BundleError::kTooLarge);  // over max_bundle_size (1 MiB) before any download
}

// [updates] keys: defaults, and each bad value names its key.
TEST(UpdatesConfig, DefaultsAndErrorsNameTheKey) {
  auto c = postern::parse_config("", "t.toml");
  EXPECT_EQ(c.updates.server, "");
  EXPECT_EQ(c.updates.interval, std::chrono::hours(1));
  EXPECT_EQ(c.updates.max_bundle_size, 64ull << 20);
  EXPECT_EQ(c.updates.signer_warning_days, 30u);
  auto ok = postern::parse_config("[updates]\nserver = \"https://127.0.0.1:8445\"\ninterval = \"\"\n", "t.toml");
  EXPECT_EQ(ok.updates.interval.count(), 0);
  for (auto [text, key] : {std::pair{"[updates]\nserver = \"ftp://x\"\n", "updates.server"},
                           std::pair{"[updates]\ninterval = \"10s\"\n", "updates.interval"},
                           std::pair{"[updates]\nproxy = \"nonsense\"\n", "updates.proxy"},
                           std::pair{"[updates]\nmax_bundle_size = 10\n", "updates.max_bundle_size"},
                           std::pair{"[updates]\nserverr = \"\"\n", "updates.serverr"}}) {
    try {
      postern::parse_config(text, "t.toml");
      ADD_FAILURE() << text;
    } catch (const postern::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}
