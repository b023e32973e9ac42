// static_files.cpp — see static_files.h.
#include "http/static_files.h"

#include "base/share_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>

namespace postern::http {

namespace fs = std::filesystem;

namespace {

constexpr off_t kMaxFile = 4 << 20;

const std::map<std::string, std::string>& types() {
  static const std::map<std::string, std::string> t = {
      {".html", "text/html; charset=utf-8"},  {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"}, {".svg", "image/svg+xml"},
      {".png", "image/png"},                  {".ico", "image/x-icon"},
      {".json", "application/json"},          {".txt", "text/plain; charset=utf-8"},
  };
  return t;
}

// Decodes the path and checks every segment; "" when it may not be served.
std::string safe_relative(const std::string& raw) {
  if (raw.empty() || raw[0] != '/') return "";
  std::string p = url_decode(raw, false);
  if (p.find('\0') != std::string::npos || p.find('\\') != std::string::npos) return "";
  if (p == "/") return "index.html";
  std::string out;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string seg = p.substr(i, j - i);
    if (seg.empty() || seg[0] == '.') return "";  // "", ".", "..", dot files
    for (unsigned char c : seg)
      if (c < 0x20 || c == 0x7f) return "";
    if (!out.empty()) out += '/';
    out += seg;
    i = j + 1;
  }
  if (!p.empty() && p.back() == '/') return "";  // no directory listing
  return out;
}

}  // namespace

std::string default_web_root(const std::string& console) {
  std::string share = share_dir();
  return share.empty() ? "" : share + "/web/" + console;
}

void add_console_headers(Response& r) {
  for (auto& [k, v] : r.headers)
    if (k == "Content-Security-Policy") return;  // already added (a wrapper and the file server both call this)
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                         "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Strict-Transport-Security", "max-age=31536000");
}

Response serve_static(const std::string& root, const Request& req) {
  auto not_found = [] {
    Response r = json_error(404, "no such page");
    add_console_headers(r);
    return r;
  };
  if (req.method != "GET" && req.method != "HEAD") {
    Response r = json_error(405, "method not allowed");
    add_console_headers(r);
    return r;
  }
  if (root.empty()) return not_found();
  std::string rel = safe_relative(req.path);
  if (rel.empty()) return not_found();
  auto dot = rel.rfind('.');
  if (dot == std::string::npos || rel.find('/', dot) != std::string::npos) return not_found();
  auto t = types().find(rel.substr(dot));
  if (t == types().end()) return not_found();
  // The file must be a regular file whose real path stays under the root's real path.
  std::error_code ec;
  fs::path real_root = fs::canonical(root, ec);
  if (ec) return not_found();
  fs::path real = fs::canonical(real_root / rel, ec);
  if (ec) return not_found();
  auto rs = real_root.string() + "/";
  if (real.string().compare(0, rs.size(), rs) != 0) return not_found();
  int fd = ::open(real.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return not_found();
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > kMaxFile) {
    ::close(fd);
    return not_found();
  }
  std::string body(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < body.size()) {
    ssize_t n = ::read(fd, body.data() + got, body.size() - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != body.size()) return not_found();
  Response r = static_response(t->second, req.method == "HEAD" ? std::string() : std::move(body));
  add_console_headers(r);
  r.headers.emplace_back("Cache-Control", t->first == ".html" ? "no-store" : "no-cache");
  return r;
}

}  // namespace postern::http
