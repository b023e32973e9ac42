// static_files_test.cpp — the consoles' file server: what is served, with which type and
// headers, and every path that must not be (traversal, encoded traversal, dot files, symlinks
// out of the root, directories, unknown types, other methods).
#include "http/static_files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using postern::http::Request;
using postern::http::serve_static;

namespace {

struct WebRoot : ::testing::Test {
  fs::path dir;
  void SetUp() override {
    char tmpl[] = "/tmp/postern-web-XXXXXX";
    dir = mkdtemp(tmpl);
    fs::create_directories(dir / "root" / "js");
    std::ofstream(dir / "root" / "index.html") << "<h1>hi</h1>";
    std::ofstream(dir / "root" / "js" / "app.js") << "1;";
    std::ofstream(dir / "root" / ".secret.html") << "no";
    std::ofstream(dir / "root" / "data.bin") << "no";
    std::ofstream(dir / "outside.html") << "outside";
    fs::create_symlink(dir / "outside.html", dir / "root" / "link.html");
  }
  void TearDown() override { fs::remove_all(dir); }
  postern::http::Response get(const std::string& path, const std::string& method = "GET") {
    Request r;
    r.method = method;
    r.path = path;
    return serve_static((dir / "root").string(), r);
  }
  static std::string header(const postern::http::Response& r, const std::string& name) {
    for (auto& [k, v] : r.headers)
      if (k == name) return v;
    return "";
  }
};

TEST_F(WebRoot, ServesIndexAndFilesWithTypesAndConsoleHeaders) {
  auto r = get("/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "<h1>hi</h1>");
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_NE(header(r, "Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(header(r, "X-Frame-Options"), "DENY");
  EXPECT_EQ(header(r, "Cache-Control"), "no-store");
  auto js = get("/js/app.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  auto head = get("/index.html", "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
}

TEST_F(WebRoot, ConsoleHeadersAreAddedOnceWhoeverAddsThem) {
  // testssl.sh reported "Multiple Content-Security-Policy headers" (and five more) on the admin
  // listener: the file server and the listener's wrapper both added them.
  auto r = get("/");
  postern::http::add_console_headers(r);
  int csp = 0, xfo = 0;
  for (auto& [k, v] : r.headers) {
    csp += k == "Content-Security-Policy";
    xfo += k == "X-Frame-Options";
  }
  EXPECT_EQ(csp, 1);
  EXPECT_EQ(xfo, 1);
}

TEST_F(WebRoot, RefusesEverythingOutsideTheRootOrNotServable) {
  for (const char* p : {"/../outside.html", "/js/../../outside.html", "/%2e%2e/outside.html", "/js%2f..%2f..%2foutside.html",
                        "/.secret.html", "/link.html", "/js/", "/js", "/data.bin", "/nope.html", "/a%00.html",
                        "//etc/passwd", "/index.html%5c", "relative.html", ""})
    EXPECT_EQ(get(p).status, 404) << p;
  EXPECT_EQ(get("/index.html", "POST").status, 405);
}

}  // namespace
