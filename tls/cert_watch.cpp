// cert_watch.cpp — see cert_watch.h. Security-sensitive: key files are read only to be hashed
// (and wiped); the inotify buffer is fixed; paths in logs go through esc().
#include "tls/cert_watch.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/log.h"
#include "tls/context_provider.h"

namespace postern::tls {
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |
                           IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
constexpr int kMaxLinks = 8;           // a longer chain of symlinks is not followed further
constexpr int kMaxStableReads = 50;    // ~5 s of a file that keeps changing: wait for the next event
constexpr auto kReread = std::chrono::milliseconds(100);

std::string sha256_hex(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr) != 1) return "?";
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

// What the files hold now, as one digest (a missing or unreadable file counts as its error).
std::string snapshot(const std::vector<std::string>& files) {
  std::string all;
  for (auto& f : files) {
    std::string text;
    std::string err = read_pem_file(f, text);
    all += f + '\0' + (err.empty() ? sha256_hex(text) : "error:" + err) + '\0';
    if (!text.empty()) OPENSSL_cleanse(text.data(), text.size());
  }
  return sha256_hex(all);
}

}  // namespace

std::vector<std::string> watched_files(const Config& cfg) {
  std::vector<std::string> out;
  for (const std::string* f : {&cfg.smtp.tls_cert_file, &cfg.smtp.tls_key_file, &cfg.outbound.tls_cert_file,
                               &cfg.outbound.tls_key_file, &cfg.admin_tls_cert_file, &cfg.admin_tls_key_file,
                               &cfg.euq_tls_cert_file, &cfg.euq_tls_key_file})
    if (!f->empty() && std::find(out.begin(), out.end(), *f) == out.end()) out.push_back(*f);
  return out;
}

struct CertWatch::Impl {
  uv_loop_t* loop;
  OnChange on_change;
  std::chrono::milliseconds debounce;
  int fd = -1;
  uv_poll_t poll{};
  uv_timer_t timer{};
  int open_handles = 0;
  bool closed = false;
  std::vector<std::string> files;
  std::map<int, std::string> wd_dir;                      // inotify watch -> directory
  std::map<std::string, std::set<std::string>> interest;  // directory -> names that matter in it
  std::string pending;    // the first path that changed since the last trigger
  std::string last_read;  // the previous read of a stability check
  std::string applied;    // the contents last handed over (or found at watch())
  int reads = 0;
  uint64_t triggers = 0;

  void resolve();
  void on_readable();
  void on_timer();
  void arm(std::chrono::milliseconds after) {
    uv_timer_start(&timer, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->on_timer(); },
                   static_cast<uint64_t>(after.count()), 0);
  }
};

// Every directory on the way from each path to its real file, with the names that matter there.
void CertWatch::Impl::resolve() {
  std::map<std::string, std::set<std::string>> want;
  for (auto& f : files) {
    std::error_code ec;
    fs::path p = fs::absolute(f, ec).lexically_normal();
    for (int i = 0; i <= kMaxLinks; ++i) {
      want[p.parent_path().string()].insert(p.filename().string());
      if (!fs::is_symlink(p, ec)) break;
      fs::path t = fs::read_symlink(p, ec);
      if (ec) break;
      p = (t.is_absolute() ? t : p.parent_path() / t).lexically_normal();
    }
    fs::path real = fs::weakly_canonical(f, ec);
    if (!ec) want[real.parent_path().string()].insert(real.filename().string());
  }
  for (auto it = wd_dir.begin(); it != wd_dir.end();) {
    if (want.count(it->second)) {
      ++it;
      continue;
    }
    inotify_rm_watch(fd, it->first);
    it = wd_dir.erase(it);
  }
  for (auto& [dir, names] : want) {
    bool have = false;
    for (auto& [wd, d] : wd_dir) have = have || d == dir;
    if (have) continue;
    int wd = inotify_add_watch(fd, dir.c_str(), kMask);
    if (wd < 0) {
      spdlog::warn("cert watch: cannot watch {}: {}", esc(dir), std::strerror(errno));
      continue;
    }
    wd_dir[wd] = dir;
  }
  interest = std::move(want);
}

void CertWatch::Impl::on_readable() {
  alignas(inotify_event) char buf[16384];
  bool hit = false;
  for (int round = 0; round < 64; ++round) {  // bounded: the rest waits for the next poll
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        hit = true;
        if (pending.empty()) pending = files.empty() ? "?" : files.front();
        continue;
      }
      if (ev->mask & IN_IGNORED) {
        wd_dir.erase(ev->wd);
        hit = true;  // the directory went away: re-resolve
        continue;
      }
      auto d = wd_dir.find(ev->wd);
      if (d == wd_dir.end()) continue;
      auto in = interest.find(d->second);
      std::string name = ev->len ? std::string(ev->name) : "";
      if (in == interest.end() || (!name.empty() && !in->second.count(name))) continue;
      hit = true;
      if (pending.empty()) pending = d->second + "/" + name;
    }
  }
  if (!hit) return;
  reads = 0;
  last_read.clear();
  arm(debounce);  // a burst of events restarts the wait
}

void CertWatch::Impl::on_timer() {
  resolve();  // a re-pointed link: watch its new target from now on
  std::string now = snapshot(files);
  if (reads == 0 || now != last_read) {
    last_read = now;
    if (++reads > kMaxStableReads) {
      spdlog::warn("cert watch: {} keeps changing; waiting for the next change", esc(pending));
      reads = 0;
      return;
    }
    arm(kReread);
    return;
  }
  std::string what = pending;
  pending.clear();
  reads = 0;
  if (now == applied) {
    spdlog::debug("cert watch: {} touched, contents unchanged", esc(what));
    return;
  }
  applied = now;
  ++triggers;
  spdlog::info("cert watch: {} changed (two reads agree), reloading", esc(what));
  on_change(what);
}

CertWatch::CertWatch(uv_loop_t* loop, OnChange on_change, std::chrono::milliseconds debounce)
    : impl_(new Impl{loop, std::move(on_change), debounce}) {}

CertWatch::~CertWatch() { close(); }

std::string CertWatch::watch(const std::vector<std::string>& files) {
  if (closed_) return "closed";
  Impl& m = *impl_;
  if (m.fd < 0) {
    m.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (m.fd < 0) return std::string("inotify_init1: ") + std::strerror(errno);
    uv_poll_init(m.loop, &m.poll, m.fd);
    uv_timer_init(m.loop, &m.timer);
    m.poll.data = m.timer.data = impl_;
    m.open_handles = 2;
    uv_poll_start(&m.poll, UV_READABLE, [](uv_poll_t* h, int status, int) {
      if (status == 0) static_cast<Impl*>(h->data)->on_readable();
    });
  }
  if (files != m.files) {
    m.files = files;
    m.applied = snapshot(files);
  }
  m.resolve();
  if (!files.empty())
    spdlog::info("cert watch: {} files in {} directories", files.size(), m.wd_dir.size());
  return "";
}

void CertWatch::close() {
  if (closed_) return;
  closed_ = true;
  Impl* m = impl_;
  m->closed = true;
  if (m->open_handles == 0) {
    delete m;
    return;
  }
  uv_poll_stop(&m->poll);
  uv_timer_stop(&m->timer);
  auto done = [](uv_handle_t* h) {
    auto* s = static_cast<Impl*>(h->data);
    if (--s->open_handles > 0) return;
    ::close(s->fd);
    delete s;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&m->poll), done);
  uv_close(reinterpret_cast<uv_handle_t*>(&m->timer), done);
}

uint64_t CertWatch::triggers() const { return closed_ ? 0 : impl_->triggers; }

size_t CertWatch::directories() const { return closed_ ? 0 : impl_->wd_dir.size(); }

}  // namespace postern::tls
