// Tests of scan/engine.* (libclamav: load, compile, self-test, scan results, limits), the
// EngineManager (a failed build keeps the old engine), the scan pool's bound and the freshclam
// directory source's check.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "scan/clamav_dir.h"
#include "scan/engine.h"
#include "scan/engine_manager.h"
#include "scan/scan_pool.h"

using namespace postern::scan;
namespace fs = std::filesystem;

namespace {

const std::string kEicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const std::string kMarker = "POSTERN-BODY-TEST-MARKER-7f3a";

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string o;
  for (unsigned char c : s) {
    o += d[c >> 4];
    o += d[c & 15];
  }
  return o;
}

std::string b64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) o += t[(v >> k) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    o += t[(v >> 18) & 63];
    o += t[(v >> 12) & 63];
    o += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    o += t[(v >> 18) & 63];
    o += t[(v >> 12) & 63];
    o += t[(v >> 6) & 63];
    o += '=';
  }
  return o;
}

std::string mail_with(const std::string& attachment) {
  return "From: a@example.test\r\nTo: b@example.test\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
         "Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
         "--BB\r\nContent-Type: application/octet-stream; name=\"x.bin\"\r\nContent-Transfer-Encoding: base64\r\n"
         "Content-Disposition: attachment; filename=\"x.bin\"\r\n\r\n" +
         b64(attachment) + "\r\n--BB--\r\n";
}

struct SigDir {
  fs::path dir;
  SigDir() {
    dir = fs::temp_directory_path() / ("postern-sig-" + std::to_string(::getpid()) + "-" +
                                       std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir);
  }
  ~SigDir() { fs::remove_all(dir); }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; }
  void standard() {
    write("test.hdb", "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n");
    write("test.ndb", "Postern.Test.Body:0:*:" + hex(kMarker) + "\n");
  }
  PatternSet set(const std::string& version = "1") const {
    PatternSet s;
    s.source = "bundle";
    s.dir = dir.string();
    s.version = version;
    s.issued_at = 1000;
    s.samples = {{"eicar", kEicar, "Eicar-Test-Signature"}};
    return s;
  }
};

EngineLimits limits() {
  EngineLimits l;
  l.timeout = std::chrono::seconds(20);
  return l;
}

}  // namespace

TEST(ScanEngine, LoadsSelfTestsAndScans) {
  SigDir d;
  d.standard();
  std::string err;
  auto e = Engine::build({d.set()}, limits(), err);
  ASSERT_TRUE(e) << err;
  EXPECT_GE(e->signatures(), 2u);
  auto clean = e->scan_memory(mail_with("just some harmless bytes"));
  EXPECT_EQ(clean.verdict, Verdict::kClean);
  auto hit = e->scan_memory(mail_with(kEicar));  // base64 attachment: the mail parser decodes it
  EXPECT_EQ(hit.verdict, Verdict::kInfected);
  EXPECT_EQ(hit.signature, "Eicar-Test-Signature.UNOFFICIAL");  // an unsigned database: as clamd says it
  auto body = e->scan_memory(mail_with("xx " + kMarker + " yy"));
  EXPECT_EQ(body.verdict, Verdict::kInfected);
  EXPECT_EQ(body.signature, "Postern.Test.Body.UNOFFICIAL");
}

TEST(ScanEngine, SelfTestMissFailsTheBuild) {
  SigDir d;
  d.write("test.ndb", "Postern.Test.Body:0:*:" + hex(kMarker) + "\n");  // no EICAR signature
  std::string err;
  auto e = Engine::build({d.set()}, limits(), err);
  EXPECT_FALSE(e);
  EXPECT_NE(err.find("self-test sample 'eicar'"), std::string::npos) << err;
}

TEST(ScanEngine, BadSignatureFileFailsTheBuild) {
  SigDir d;
  d.write("bad.ndb", "this is not a signature\n");
  std::string err;
  auto s = d.set();
  s.samples.clear();
  EXPECT_FALSE(Engine::build({s}, limits(), err));
  EXPECT_NE(err.find("cannot load"), std::string::npos) << err;
}

TEST(ScanEngine, ScansOnlyTheMessageBytesOfAQueueFile) {
  SigDir d;
  d.standard();
  std::string err;
  auto e = Engine::build({d.set()}, limits(), err);
  ASSERT_TRUE(e) << err;
  fs::path f = d.dir / "queue.msg";
  std::string msg = mail_with("harmless");
  std::ofstream(f, std::ios::binary) << msg << kMarker;  // a hit after the message: the envelope area
  int fd = ::open(f.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(e->scan_fd(fd, msg.size()).verdict, Verdict::kClean);
  EXPECT_EQ(e->scan_fd(fd, msg.size() + kMarker.size()).verdict, Verdict::kInfected);
  ::close(fd);
  // A descriptor that cannot be read (write-only) is an error, never a clean verdict.
  int wo = ::open(f.c_str(), O_WRONLY);
  ASSERT_GE(wo, 0);
  auto r = e->scan_fd(wo, msg.size());
  EXPECT_EQ(r.verdict, Verdict::kError) << r.error;
  EXPECT_NE(r.error.find("read"), std::string::npos) << r.error;
  ::close(wo);
}

TEST(ScanEngine, LargerThanMaxScanSizeIsScannedUpToTheLimit) {
  SigDir d;
  d.standard();
  auto l = limits();
  l.max_scan_size = 4096;
  std::string err;
  auto e = Engine::build({d.set()}, l, err);
  ASSERT_TRUE(e) << err;
  std::string early = kMarker + std::string(10000, 'a');
  std::string late = std::string(10000, 'a') + kMarker;
  EXPECT_EQ(e->scan_memory(early).verdict, Verdict::kInfected);
  EXPECT_EQ(e->scan_memory(late).verdict, Verdict::kClean);  // past the limit: not read (as clamd)
}

TEST(ScanEngineManager, FailedBuildKeepsTheOldEngine) {
  SigDir good, bad;
  good.standard();
  bad.write("test.ndb", "Postern.Test.Body:0:*:" + hex(kMarker) + "\n");
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<bool, std::string>> answers;
  EngineManager m([&](std::function<void()> fn) { fn(); });
  m.configure(limits());
  auto wait = [&](size_t n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(60), [&] { return answers.size() >= n; });
  };
  auto done = [&](bool ok, const std::string& err) {
    std::lock_guard lk(mu);
    answers.push_back({ok, err});
    cv.notify_all();
  };
  EXPECT_EQ(m.current(), nullptr);
  m.install(good.set("1"), done);
  ASSERT_TRUE(wait(1));
  EXPECT_TRUE(answers[0].first) << answers[0].second;
  auto first = m.current();
  ASSERT_TRUE(first);
  m.install(bad.set("2"), done);  // its sample misses
  ASSERT_TRUE(wait(2));
  EXPECT_FALSE(answers[1].first);
  EXPECT_EQ(m.current(), first);
  ASSERT_EQ(m.installed().size(), 1u);
  EXPECT_EQ(m.installed()[0].version, "1");
  EXPECT_EQ(m.current()->scan_memory(kEicar).verdict, Verdict::kInfected);
}

TEST(ScanPool, QueueIsBounded) {
  ScanPool pool(1, 2);
  std::promise<void> release;
  auto gate = release.get_future().share();
  std::atomic<int> ran{0};
  std::atomic<bool> started{false};
  ASSERT_TRUE(pool.submit([&] {
    started = true;
    gate.wait();
    ++ran;
  }));
  for (int i = 0; i < 200 && !started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(started);
  EXPECT_TRUE(pool.submit([&] { ++ran; }));
  EXPECT_TRUE(pool.submit([&] { ++ran; }));
  EXPECT_FALSE(pool.submit([&] { ++ran; }));  // two queued, one running: full
  EXPECT_EQ(pool.queued(), 2u);
  release.set_value();
  pool.stop();  // runs what was queued
  EXPECT_EQ(ran.load(), 3);
  EXPECT_FALSE(pool.submit([] {}));
}

TEST(ClamavDir, LooseFilesAreVersionedByNewestMtime) {
  SigDir d;
  d.standard();
  d.write("README.txt", "not a signature file");
  auto t = std::chrono::file_clock::from_sys(std::chrono::sys_seconds(std::chrono::seconds(1764547200)));  // 2025-12-01
  fs::last_write_time(d.dir / "test.hdb", t);
  fs::last_write_time(d.dir / "test.ndb", t - std::chrono::hours(1));
  auto c = check_clamav_dir(d.dir.string());
  ASSERT_TRUE(c.ok) << c.error;
  EXPECT_EQ(c.set.source, "freshclam");
  EXPECT_EQ(c.set.version, "20251201000000");
  EXPECT_EQ(c.set.issued_at, 1764547200);
  EXPECT_NE(clamav_dir_fingerprint(d.dir.string()).find("test.hdb"), std::string::npos);
  EXPECT_EQ(clamav_dir_fingerprint(d.dir.string()).find("README"), std::string::npos);
}

TEST(ClamavDir, ABrokenCvdIsRefused) {
  SigDir d;
  d.write("daily.cvd", "ClamAV-VDB:not really a cvd:1:2:3:4:5:6:7:8\nxxxxxxxx");
  auto c = check_clamav_dir(d.dir.string());
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.error.find("daily.cvd"), std::string::npos) << c.error;
  SigDir empty;
  EXPECT_FALSE(check_clamav_dir(empty.dir.string()).ok);
}
