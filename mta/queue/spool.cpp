// spool.cpp — see spool.h for the on-disk protocol. Security/safety-sensitive: this is where a
// 250 becomes a promise. Every error path fails the commit (451), never acknowledges it.
#include "mta/queue/spool.h"

#include "base/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace postern::queue {
namespace {

constexpr std::string_view kFooterMagic = "\nPOSTERN1 ";
constexpr size_t kFooterLen = 10 + 16 + 1 + 8 + 1 + 8 + 1;  // magic L E CRC "\n"

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool pread_all(int fd, char* p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
  return true;
}

uint32_t crc_update(uint32_t crc, std::string_view data) {
  while (!data.empty()) {  // zlib takes uInt lengths
    auto n = static_cast<uInt>(std::min<size_t>(data.size(), 1u << 30));
    crc = static_cast<uint32_t>(::crc32(crc, reinterpret_cast<const Bytef*>(data.data()), n));
    data.remove_prefix(n);
  }
  return crc;
}

std::string hex(uint64_t v, int digits) {
  static const char kHex[] = "0123456789abcdef";
  std::string s(static_cast<size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = kHex[v & 15];
  return s;
}

std::string make_footer(uint64_t msg_len, size_t env_len, uint32_t crc) {
  std::string f(kFooterMagic);
  f += hex(msg_len, 16) + " " + hex(env_len, 8) + " " + hex(crc, 8) + "\n";
  return f;
}

bool parse_hex(std::string_view s, uint64_t& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string base32(uint64_t v, int digits) {
  static const char kAlphabet[] = "0123456789BCDFGHJKLMNPQRSTVWXYZ";  // 31 symbols; no vowels
  std::string s(static_cast<size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i) {
    s[static_cast<size_t>(i)] = kAlphabet[v % 31];
    v /= 31;
  }
  return s;
}

std::string free_name(const std::string& qid) { return "free-" + qid; }

}  // namespace

SpoolWriter::~SpoolWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (committed_ || !spool_) return;
  if (failed_) ::unlinkat(spool_->active_fd_, name_.c_str(), 0);  // maybe a short file on a full disk
  else spool_->pool_release(name_, std::max(old_size_, bytes_));
}

int SpoolWriter::open_for_read() const {
  if (fd_ < 0 || failed_ || !spool_) return -1;
  return ::openat(spool_->active_fd_, name_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

bool SpoolWriter::write(std::string_view data) {
  if (failed_) return false;
  if (!write_all(fd_, data.data(), data.size())) {
    spdlog::error("queue_id={} spool write failed: {}", qid_, std::strerror(errno));
    failed_ = true;
    return false;
  }
  crc_ = crc_update(crc_, data);
  bytes_ += data.size();
  return true;
}

Spool::Spool(std::string dir, SpoolOptions opts)
    : dir_(std::move(dir)), active_(dir_ + "/active"), opts_(std::move(opts)) {
  namespace fs = std::filesystem;
  check_kernel();
  fs::create_directories(active_);
  fs::create_directories(dir_ + "/corrupt");
  active_fd_ = open_dir();
  commit_fd_ = open_dir();
  flush_fd_ = open_dir();
  changes_fd_ = open_dir();
  fs::create_directories(dir_ + "/quarantine");
  quarantine_fd_ = ::open((dir_ + "/quarantine").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (quarantine_fd_ < 0) throw std::runtime_error("cannot open " + dir_ + "/quarantine: " + std::strerror(errno));
  scan();
  thread_ = std::thread([this] { run(); });
  changes_thread_ = std::thread([this] { run_changes(); });
}

int Spool::open_dir() const {
  int fd = ::open(active_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open spool directory " + active_ + ": " + std::strerror(errno));
  return fd;
}

bool Spool::syncfs_reports_errors(std::string_view release) {
  unsigned major = 0, minor = 0;
  auto [p, ec] = std::from_chars(release.data(), release.data() + release.size(), major);
  if (ec != std::errc() || p == release.data() + release.size() || *p != '.') return false;
  auto [q, ec2] = std::from_chars(p + 1, release.data() + release.size(), minor);
  if (ec2 != std::errc()) return false;
  return major > 5 || (major == 5 && minor >= 8);
}

void Spool::check_kernel() const {
  if (opts_.sync != SyncMode::kSyncfs) return;
  std::string release = opts_.kernel_release;
  if (release.empty()) {
    struct utsname u {};
    if (::uname(&u) == 0) release = u.release;
  }
  if (!syncfs_reports_errors(release))
    throw std::runtime_error("spool: Linux " + release +
                             " does not report write-back errors through syncfs (5.8 or later does); a failed "
                             "write could be acknowledged with 250. Set queue.sync = \"file\" to sync every queue "
                             "file on its own");
}

Spool::~Spool() {
  stop();
  for (int fd : {active_fd_, commit_fd_, flush_fd_, changes_fd_, quarantine_fd_})
    if (fd >= 0) ::close(fd);
}

void Spool::stop() {
  {
    std::lock_guard lk(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lk(changes_mu_);  // stop_ is read under this lock too
  }
  changes_cv_.notify_all();
  if (changes_thread_.joinable()) changes_thread_.join();
  if (flush_wanted_) sync_flush();  // the last retirements
}

bool Spool::read_message(const std::string& path, uint64_t len, std::string& out) {
  out.assign(static_cast<size_t>(len), '\0');
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = pread_all(fd, out.data(), out.size(), 0);
  ::close(fd);
  return ok;
}

bool Spool::read_queue_file(const std::string& path, const std::string& qid, Envelope& env, uint64_t& msg_len,
                            std::string& err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = std::strerror(errno);
    return false;
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(kFooterLen)) {
    err = "no footer (incomplete commit)";
    return false;
  }
  auto size = static_cast<uint64_t>(st.st_size);
  std::string footer(kFooterLen, '\0');
  uint64_t len = 0, env_len = 0, crc = 0;
  if (!pread_all(fd, footer.data(), kFooterLen, size - kFooterLen) || !footer.starts_with(kFooterMagic) ||
      footer.back() != '\n' || footer[26] != ' ' || footer[35] != ' ' ||
      !parse_hex(std::string_view(footer).substr(10, 16), len) ||
      !parse_hex(std::string_view(footer).substr(27, 8), env_len) ||
      !parse_hex(std::string_view(footer).substr(36, 8), crc)) {
    err = "no footer (incomplete commit)";
    return false;
  }
  if (len > size || env_len > size || len + env_len + kFooterLen != size) {
    err = "footer lengths do not match the file";
    return false;
  }
  uint32_t sum = 0;
  std::string buf(64 * 1024, '\0');
  std::string json;
  for (uint64_t off = 0; off < len + env_len;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), len + env_len - off));
    if (!pread_all(fd, buf.data(), n, off)) {
      err = std::string("read error: ") + std::strerror(errno);
      return false;
    }
    sum = crc_update(sum, std::string_view(buf.data(), n));
    if (off + n > len) {  // the envelope's part of this chunk
      uint64_t from = off >= len ? 0 : len - off;
      json.append(buf.data() + from, n - static_cast<size_t>(from));
    }
    off += n;
  }
  if (sum != crc) {
    err = "checksum mismatch (incomplete commit or damaged file)";
    return false;
  }
  if (!envelope_from_json(json, env) || env.queue_id != qid) {
    err = "envelope unreadable or for another queue ID";
    return false;
  }
  env.message_size = len;
  msg_len = len;
  return true;
}

static uint64_t decode_id_micros(std::string_view qid) {
  static const std::string_view kAlphabet = "0123456789BCDFGHJKLMNPQRSTVWXYZ";
  if (qid.size() < 11) return 0;
  uint64_t v = 0;
  for (char c : qid.substr(0, 11)) {
    auto d = kAlphabet.find(c);
    if (d == std::string_view::npos) return 0;
    v = v * 31 + d;
  }
  return v;
}

// Start-up, before the threads: what an interrupted run left behind (.tmp files, the .env of a
// message retired just before a crash) goes; free files join the pool; the messages wait for
// recover().
void Spool::scan() {
  namespace fs = std::filesystem;
  size_t orphans = 0;
  std::set<std::string> msgs;
  std::vector<FreeFile> free;
  for (auto& e : fs::directory_iterator(active_)) {
    auto name = e.path().filename().string();
    std::error_code ec;
    if (name.starts_with("free-")) {
      free.push_back({name, static_cast<uint64_t>(e.file_size(ec))});
    } else if (name.ends_with(".tmp")) {
      fs::remove(e.path(), ec);
      ++orphans;
    } else if (name.ends_with(".msg")) {
      msgs.insert(name.substr(0, name.size() - 4));
    } else if (name.ends_with(".env")) {
      found_envs_.insert(name.substr(0, name.size() - 4));
    } else {
      spdlog::warn("spool: unknown file {}/{} left alone", active_, esc(name));
    }
  }
  for (auto& f : free) {
    if (!pool_put(f.name, f.size)) ::unlinkat(active_fd_, f.name.c_str(), 0);
  }
  for (auto it = found_envs_.begin(); it != found_envs_.end();) {
    if (msgs.count(*it)) {
      ++it;
      continue;
    }
    ::unlinkat(active_fd_, (*it + ".env").c_str(), 0);  // its message was retired just before a crash
    ++orphans;
    it = found_envs_.erase(it);
  }
  uint64_t last = 0;
  for (auto& qid : msgs) last = std::max(last, decode_id_micros(qid));
  last_id_us_.store(last);
  found_msgs_.assign(msgs.begin(), msgs.end());
  if (orphans) ::fsync(active_fd_);
  spdlog::info("spool scanned dir={} messages={} orphans_removed={} free_files={}", dir_, found_msgs_.size(), orphans,
               pool_size());
}

size_t Spool::recover(const std::function<void(Envelope&&)>& each) {
  namespace fs = std::filesystem;
  size_t corrupt = 0, n = 0;
  std::vector<std::string> msgs;
  msgs.swap(found_msgs_);
  for (auto& qid : msgs) {
    Envelope env;
    uint64_t len = 0;
    std::string err;
    if (!read_queue_file(msg_path(qid), qid, env, len, err)) {
      // Never acknowledged (a crash between the rename and the sync) or damaged on disk: kept
      // for the admin to look at, never delivered.
      spdlog::error("queue_id={} spool: {}: moved to {}/corrupt", qid, err, dir_);
      std::error_code ec;
      fs::rename(msg_path(qid), dir_ + "/corrupt/" + qid + ".msg", ec);
      if (found_envs_.erase(qid)) fs::rename(active_ + "/" + qid + ".env", dir_ + "/corrupt/" + qid + ".env", ec);
      ++corrupt;
      continue;
    }
    if (found_envs_.erase(qid)) {
      std::ifstream in(active_ + "/" + qid + ".env");
      std::stringstream ss;
      ss << in.rdbuf();
      Envelope newer;
      if (envelope_from_json(ss.str(), newer) && newer.queue_id == qid) {
        newer.message_size = len;
        env = std::move(newer);
        std::lock_guard lk(env_files_mu_);
        env_files_.insert(qid);
      } else {
        spdlog::error("queue_id={} spool: unreadable {}.env ignored; the envelope stored with the message is used",
                      qid, qid);
        std::error_code ec;
        fs::rename(active_ + "/" + qid + ".env", dir_ + "/corrupt/" + qid + ".env", ec);
      }
    }
    ++n;
    each(std::move(env));
  }
  found_envs_.clear();
  if (corrupt) ::fsync(active_fd_);
  spdlog::info("spool recovered dir={} messages={} corrupt={}", dir_, n, corrupt);
  return n;
}

std::vector<Envelope> Spool::recover_all() {
  std::vector<Envelope> out;
  recover([&](Envelope&& e) { out.push_back(std::move(e)); });
  return out;
}

// The envelope stored in a queue file, without reading (or checking) the message: recovery and
// the commit checked the file; this is the scheduler reading back what it wrote.
bool Spool::read_embedded_envelope(const std::string& path, std::string& json, std::string& err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = std::strerror(errno);
    return false;
  }
  struct stat st {};
  std::string footer(kFooterLen, '\0');
  uint64_t len = 0, env_len = 0;
  bool ok = ::fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(kFooterLen) &&
            pread_all(fd, footer.data(), kFooterLen, static_cast<uint64_t>(st.st_size) - kFooterLen) &&
            footer.starts_with(kFooterMagic) && parse_hex(std::string_view(footer).substr(10, 16), len) &&
            parse_hex(std::string_view(footer).substr(27, 8), env_len) &&
            len + env_len + kFooterLen == static_cast<uint64_t>(st.st_size);
  if (ok) {
    json.assign(static_cast<size_t>(env_len), '\0');
    ok = pread_all(fd, json.data(), json.size(), len);
  }
  ::close(fd);
  if (!ok) err = "queue file unreadable or without footer";
  return ok;
}

bool Spool::load_envelope(const std::string& qid, Envelope& env, std::string& err) const {
  std::string json;
  {
    std::lock_guard lk(changes_mu_);
    if (auto it = latest_.find(qid); it != latest_.end()) json = it->second.json;
  }
  if (json.empty()) {
    // Not being rewritten: the installed <qid>.env (renamed into place before its Latest was
    // dropped, so it is at least as new), else the envelope stored with the message.
    int fd = ::openat(active_fd_, (qid + ".env").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char buf[64 * 1024];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) json.append(buf, static_cast<size_t>(n));
      ::close(fd);
      if (n < 0) {
        err = std::string("cannot read ") + qid + ".env: " + std::strerror(errno);
        return false;
      }
    } else if (!read_embedded_envelope(msg_path(qid), json, err)) {
      return false;
    }
  }
  if (!envelope_from_json(json, env) || env.queue_id != qid) {
    err = "envelope unreadable or for another queue ID";
    return false;
  }
  return true;
}

std::string Spool::new_queue_id() {
  // Time-ordered (so a listing by queue ID is by arrival) and never repeated, even when the
  // clock steps back: each ID's time part is after the last one's.
  auto now = static_cast<uint64_t>(std::max<int64_t>(0, opts_.clock->unix_micros()));
  uint64_t last = last_id_us_.load();
  uint64_t next;
  do {
    next = std::max(now, last + 1);
  } while (!last_id_us_.compare_exchange_weak(last, next));
  return base32(next, 11) + base32(id_counter_.fetch_add(1) % (31 * 31 * 31), 3);
}

size_t Spool::pool_size() const {
  std::lock_guard lk(pool_mu_);
  return pool_.size();
}

bool Spool::pool_put(std::string name, uint64_t size) {
  std::lock_guard lk(pool_mu_);
  if (size > kPoolMaxFileBytes || pool_.size() >= kPoolMaxFiles || pool_bytes_ + size > kPoolMaxBytes) return false;
  pool_bytes_ += size;
  pool_.push_back({std::move(name), size});
  return true;
}

size_t Spool::trim_pool() {
  std::vector<FreeFile> drop;
  {
    std::lock_guard lk(pool_mu_);
    drop.swap(pool_);
    pool_bytes_ = 0;
  }
  for (auto& f : drop) ::unlinkat(active_fd_, f.name.c_str(), 0);
  if (!drop.empty()) spdlog::warn("spool: low on disk space: {} free queue files deleted", drop.size());
  return drop.size();
}

bool Spool::pool_has_room(uint64_t size) const {
  std::lock_guard lk(pool_mu_);
  return size <= kPoolMaxFileBytes && pool_.size() < kPoolMaxFiles && pool_bytes_ + size <= kPoolMaxBytes;
}

void Spool::pool_release(const std::string& name, uint64_t size) {
  if (!pool_put(name, size)) ::unlinkat(active_fd_, name.c_str(), 0);
}

std::unique_ptr<SpoolWriter> Spool::open(const std::string& qid) {
  auto w = std::unique_ptr<SpoolWriter>(new SpoolWriter());
  w->qid_ = qid;
  w->sync_gen_ = sync_errors_.load();  // before the first byte: an error seen later concerns it
  for (;;) {
    FreeFile f;
    {
      std::lock_guard lk(pool_mu_);
      if (pool_.empty()) break;
      f = std::move(pool_.back());
      pool_.pop_back();
      pool_bytes_ -= f.size;
    }
    int fd = ::openat(active_fd_, f.name.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {  // written over from the start; the commit trims what is left of the old one
      w->fd_ = fd;
      w->name_ = std::move(f.name);
      w->old_size_ = f.size;
      w->spool_ = this;
      return w;
    }
    spdlog::warn("spool: free file {}/{} unusable: {}", active_, f.name, std::strerror(errno));
    ::unlinkat(active_fd_, f.name.c_str(), 0);
  }
  std::string name = free_name(qid);
  w->fd_ = ::openat(active_fd_, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (w->fd_ < 0) {
    spdlog::error("queue_id={} cannot create {}/{}: {}", qid, active_, name, std::strerror(errno));
    return nullptr;
  }
  w->name_ = std::move(name);
  w->spool_ = this;
  return w;
}

void Spool::commit(std::unique_ptr<SpoolWriter> w, const Envelope& env, std::function<void(bool)> done) {
  Envelope stored = env;
  stored.message_size = w->bytes();  // what the file holds is what gets delivered
  Pending p{std::move(w), envelope_to_json(stored), std::move(done), !env.quarantined.empty()};
  {
    std::lock_guard lk(mu_);
    pending_.push_back(std::move(p));
  }
  cv_.notify_one();
}

bool Spool::stopping() const {
  std::lock_guard lk(mu_);
  return stop_;
}

CommitStats Spool::stats() const {
  std::lock_guard lk(mu_);
  CommitStats st = stats_;
  st.sync_errors = sync_errors_.load();
  return st;
}

void Spool::update(const Envelope& env) {
  std::string json = envelope_to_json(env);
  {
    std::lock_guard lk(changes_mu_);
    auto& l = latest_[env.queue_id];
    l.seq = ++update_seq_;
    l.json = std::move(json);
    updates_.push_back(env.queue_id);
  }
  changes_cv_.notify_one();
}

void Spool::remove(const std::string& qid) {
  {
    std::lock_guard lk(changes_mu_);
    latest_.erase(qid);  // a rewrite still waiting is moot
    removes_.push_back(qid);
  }
  changes_cv_.notify_one();
}

void Spool::note_sync_error(const char* what, int err) {
  sync_errors_.fetch_add(1);
  spdlog::error("spool: {} sync of {} failed: {}; messages written before now are not acknowledged", what, active_,
                std::strerror(err));
}

// Retirements and envelope rewrites made durable without a commit to carry them: the
// directory (and in syncfs mode the whole filesystem) through the committer's own descriptor.
void Spool::sync_flush() {
  bool fs = opts_.sync == SyncMode::kSyncfs;
  if ((fs ? opts_.ops.syncfs(flush_fd_) : opts_.ops.fsync(flush_fd_)) != 0) note_sync_error("flush", errno);
}

void Spool::run() {
  std::vector<Pending> batch;
  for (;;) {
    bool flush_only = false;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !pending_.empty() || flush_wanted_; });
      if (pending_.empty() && !stop_) {
        // Only retirements and envelope rewrites to make durable: wait briefly for a commit whose
        // sync can carry them too.
        cv_.wait_for(lk, kFlushDelay, [&] { return stop_ || !pending_.empty(); });
      }
      if (pending_.empty() && stop_ && !flush_wanted_) return;
      flush_wanted_ = false;  // everything changed before this point is covered by the sync below
      batch.swap(pending_);
      flush_only = batch.empty();
    }
    if (flush_only) {
      sync_flush();
      continue;
    }
    commit_batch(batch);
    batch.clear();
  }
}

void Spool::run_changes() {
  std::vector<std::string> updates;
  std::vector<std::string> removes;
  for (;;) {
    {
      std::unique_lock lk(changes_mu_);
      changes_cv_.wait(lk, [&] { return stopping() || !updates_.empty() || !removes_.empty(); });
      if (updates_.empty() && removes_.empty() && stopping()) return;
      updates.swap(updates_);
      removes.swap(removes_);
    }
    apply_changes(updates, removes);
    updates.clear();
    removes.clear();
  }
}

// Envelope rewrites (write .env.tmp, flush, rename over .env) and retirements (the .msg back to
// the free pool, then its .env); the committer's next sync makes the renames durable.
void Spool::apply_changes(std::vector<std::string>& updates, std::vector<std::string>& removes) {
  auto t0 = std::chrono::steady_clock::now();
  write_updates(updates);
  for (auto& qid : removes) retire(qid);
  // Made durable by the committer's next filesystem sync (a commit's, or one of its own within
  // kFlushDelay): retirements need not cost a directory fsync of their own.
  {
    std::lock_guard lk(mu_);
    flush_wanted_ = true;
  }
  cv_.notify_one();
  SPDLOG_DEBUG("spool changes updates={} removes={} us={}", updates.size(), removes.size(),
               std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
}

void Spool::write_updates(std::vector<std::string>& updates) {
  struct Written {
    int fd;
    std::string qid;
    uint64_t seq;
  };
  std::vector<Written> written;
  std::unordered_set<std::string> done;
  for (auto& qid : updates) {
    if (!done.insert(qid).second) continue;  // several rewrites of one message: the latest is written
    Latest l;
    {
      std::lock_guard lk(changes_mu_);
      auto it = latest_.find(qid);
      if (it == latest_.end()) continue;  // retired meanwhile
      l = it->second;
    }
    std::string tmp = qid + ".env.tmp";
    int fd = ::openat(active_fd_, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !write_all(fd, l.json.data(), l.json.size())) {
      spdlog::error("queue_id={} cannot rewrite envelope: {}", qid, std::strerror(errno));
      if (fd >= 0) ::close(fd);
      ::unlinkat(active_fd_, tmp.c_str(), 0);
      continue;  // Latest stays: the scheduler reads back what it wrote, not the older file
    }
    written.push_back({fd, qid, l.seq});
  }
  bool synced = false;
  if (written.size() > 1 && opts_.sync == SyncMode::kSyncfs) {
    synced = opts_.ops.syncfs(changes_fd_) == 0;
    if (!synced) note_sync_error("envelope", errno);  // then each file on its own, below
  }
  for (auto& w : written) {
    std::string tmp = w.qid + ".env.tmp";
    std::string env = w.qid + ".env";
    if ((!synced && opts_.ops.fdatasync(w.fd) != 0) ||
        ::renameat(active_fd_, tmp.c_str(), active_fd_, env.c_str()) != 0) {
      spdlog::error("queue_id={} cannot install envelope: {}", w.qid, std::strerror(errno));
      ::unlinkat(active_fd_, tmp.c_str(), 0);
    } else {
      {
        std::lock_guard lk(env_files_mu_);
        env_files_.insert(w.qid);
      }
      std::lock_guard lk(changes_mu_);
      if (auto it = latest_.find(w.qid); it != latest_.end() && it->second.seq == w.seq) latest_.erase(it);
    }
    ::close(w.fd);
  }
}

void Spool::retire(const std::string& qid) {
  // The .msg first: a crash in between leaves an orphan .env, which start-up deletes.
  std::string msg = qid + ".msg";
  struct stat st {};
  bool recycled = false;
  if (::fstatat(active_fd_, msg.c_str(), &st, 0) == 0 && pool_has_room(static_cast<uint64_t>(st.st_size)) &&
      ::renameat(active_fd_, msg.c_str(), active_fd_, free_name(qid).c_str()) == 0) {
    recycled = true;
    pool_release(free_name(qid), static_cast<uint64_t>(st.st_size));
  }
  if (!recycled && ::unlinkat(active_fd_, msg.c_str(), 0) != 0 && errno != ENOENT)
    spdlog::error("queue_id={} cannot remove queue file: {}", qid, std::strerror(errno));
  bool had_env;
  {
    std::lock_guard lk(env_files_mu_);
    had_env = env_files_.erase(qid) > 0;
  }
  if (had_env) ::unlinkat(active_fd_, (qid + ".env").c_str(), 0);
}

void Spool::commit_batch(std::vector<Pending>& batch) {
  std::vector<char> ok(batch.size(), 0);
  auto t0 = std::chrono::steady_clock::now();
  write_tails(batch, ok);
  sync_batch(batch, ok);
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  SPDLOG_DEBUG("spool commit batch={} synced_in_us={} mode={}", batch.size(), us,
               opts_.sync == SyncMode::kSyncfs ? "syncfs" : "file");
  {
    std::lock_guard lk(mu_);
    stats_.batches++;
    stats_.messages += batch.size();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].w.reset();  // closes the file; a failed writer deletes its file
    batch[i].done(ok[i] != 0);
  }
}

// Envelope and footer after each message, trim what a recycled file held beyond, and give the
// file its queue name. Nothing is acknowledged yet: until the sync, a crash leaves a file whose
// checksum does not match.
void Spool::write_tails(std::vector<Pending>& batch, std::vector<char>& ok) {
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& w = *batch[i].w;
    const auto& json = batch[i].env_json;
    if (w.failed_) continue;
    std::string tail = json + make_footer(w.bytes_, json.size(), crc_update(w.crc_, json));
    uint64_t end = w.bytes_ + tail.size();
    std::string target = w.qid_ + ".msg";
    if (!write_all(w.fd_, tail.data(), tail.size()) ||
        (w.old_size_ > end && ::ftruncate(w.fd_, static_cast<off_t>(end)) != 0) ||
        ::renameat(active_fd_, w.name_.c_str(), batch[i].quarantine ? quarantine_fd_ : active_fd_, target.c_str()) != 0) {
      spdlog::error("queue_id={} cannot commit queue file: {}", w.qid_, std::strerror(errno));
      w.failed_ = true;  // the writer deletes its file
      continue;
    }
    w.committed_ = true;
    ok[i] = 1;
  }
}

// A committed-but-not-durable file is taken back: never acknowledged, never recovered.
void Spool::fail_committed(Pending& p, std::vector<char>& ok, size_t i, const char* why) {
  spdlog::error("queue_id={} not acknowledged: {}", p.w->qid_, why);
  ::unlinkat(p.quarantine ? quarantine_fd_ : active_fd_, (p.w->qid_ + ".msg").c_str(), 0);
  ok[i] = 0;
}

// The batch's durability: one syncfs through the commit's own descriptor, or each file and the
// directory. See spool.h on write-back errors.
void Spool::sync_batch(std::vector<Pending>& batch, std::vector<char>& ok) {
  if (opts_.sync == SyncMode::kSyncfs) {
    if (opts_.ops.syncfs(commit_fd_) != 0) {
      note_sync_error("commit", errno);
      for (size_t i = 0; i < batch.size(); ++i)
        if (ok[i]) fail_committed(batch[i], ok, i, "the filesystem sync failed");
      return;
    }
    uint64_t gen = sync_errors_.load();
    for (size_t i = 0; i < batch.size(); ++i)
      if (ok[i] && batch[i].w->sync_gen_ != gen)
        fail_committed(batch[i], ok, i, "a filesystem sync failed while it was being written");
    return;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (ok[i] && opts_.ops.fdatasync(batch[i].w->fd_) != 0) {
      sync_errors_.fetch_add(1);
      fail_committed(batch[i], ok, i, (std::string("fdatasync failed: ") + std::strerror(errno)).c_str());
    }
  }
  bool quarantined = false;
  for (size_t i = 0; i < batch.size(); ++i) quarantined |= ok[i] && batch[i].quarantine;
  if (opts_.ops.fsync(commit_fd_) != 0 || (quarantined && opts_.ops.fsync(quarantine_fd_) != 0)) {
    note_sync_error("directory", errno);
    for (size_t i = 0; i < batch.size(); ++i)
      if (ok[i]) fail_committed(batch[i], ok, i, "the directory sync failed");
  }
}

namespace {

bool valid_qid(const std::string& qid) {
  return !qid.empty() && qid.size() <= 64 &&
         std::all_of(qid.begin(), qid.end(), [](unsigned char c) { return std::isalnum(c) != 0; });
}

}  // namespace

std::vector<Envelope> Spool::list_quarantined(size_t max) const {
  std::vector<Envelope> v;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir_ + "/quarantine", ec);
       !ec && it != std::filesystem::directory_iterator() && v.size() < max; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (!name.ends_with(".msg")) continue;
    Envelope env;
    std::string err;
    if (load_quarantined(name.substr(0, name.size() - 4), env, err)) v.push_back(std::move(env));
  }
  std::sort(v.begin(), v.end(), [](const Envelope& a, const Envelope& b) { return a.queue_id < b.queue_id; });
  return v;
}

bool Spool::load_quarantined(const std::string& qid, Envelope& env, std::string& err) const {
  if (!valid_qid(qid)) {
    err = "no such message";
    return false;
  }
  uint64_t len = 0;
  if (!read_queue_file(quarantine_path(qid), qid, env, len, err)) return false;
  env.message_size = len;
  return true;
}

bool Spool::release_quarantined(const std::string& qid, int64_t now, Envelope& env, std::string& err) {
  if (!load_quarantined(qid, env, err)) return false;
  std::string name = qid + ".msg";
  if (::renameat(quarantine_fd_, name.c_str(), active_fd_, name.c_str()) != 0 || ::fsync(quarantine_fd_) != 0 ||
      ::fsync(flush_fd_) != 0) {
    err = std::string("cannot move it into the active queue: ") + std::strerror(errno);
    return false;
  }
  env.quarantined.clear();
  env.released_at = now;
  update(env);  // <qid>.env: released (a crash before it leaves it in active/ all the same)
  return true;
}

bool Spool::delete_quarantined(const std::string& qid, std::string& err) {
  if (!valid_qid(qid)) {
    err = "no such message";
    return false;
  }
  if (::unlinkat(quarantine_fd_, (qid + ".msg").c_str(), 0) != 0 || ::fsync(quarantine_fd_) != 0) {
    err = errno == ENOENT ? "no such message" : std::strerror(errno);
    return false;
  }
  return true;
}

uint64_t Spool::free_bytes() const {
  struct statvfs st {};
  if (::statvfs(dir_.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string envelope_to_json(const Envelope& env) {
  nlohmann::json j;
  j["version"] = 1;
  j["queue_id"] = env.queue_id;
  j["from"] = env.mail_from;
  j["size"] = env.declared_size;
  j["body"] = env.body == BodyType::k8BitMime ? "8BITMIME" : "7BIT";
  j["smtputf8"] = env.smtputf8;
  j["ret"] = env.ret;
  j["envid"] = env.envid;
  j["helo"] = env.helo;
  j["client_ip"] = env.client_ip;
  j["tls"] = env.tls;
  j["received_at"] = env.received_at;
  j["message_size"] = env.message_size;
  j["eight_bit"] = env.eight_bit;
  auto& rs = j["rcpts"] = nlohmann::json::array();
  for (auto& r : env.rcpts)
    rs.push_back({{"addr", r.address}, {"notify", r.notify}, {"orcpt", r.orcpt},
                  {"state", static_cast<int>(r.state)}, {"status", r.status}, {"diag", r.diag},
                  {"remote", r.remote}, {"dsn_owed", r.dsn_owed}});
  j["attempts"] = env.attempts;
  j["next_attempt"] = env.next_attempt;
  j["held"] = env.held;
  j["is_bounce"] = env.is_bounce;
  j["delay_warned"] = env.delay_warned;
  if (!env.scan_header.empty()) j["scan_header"] = env.scan_header;
  if (!env.quarantined.empty()) j["quarantined"] = env.quarantined;
  if (env.released_at) j["released_at"] = env.released_at;
  if (env.subject_at >= 0) {
    j["subject_at"] = env.subject_at;
    j["subject_edit"] = env.subject_edit;
  }
  // Hostile bytes (invalid UTF-8 from SMTPUTF8 clients) are kept, never refused here.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

bool envelope_from_json(const std::string& text, Envelope& env) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  try {
    env.queue_id = j.at("queue_id").get<std::string>();
    env.mail_from = j.at("from").get<std::string>();
    env.declared_size = j.value("size", uint64_t{0});
    env.body = j.value("body", std::string()) == "8BITMIME" ? BodyType::k8BitMime : BodyType::k7Bit;
    env.smtputf8 = j.value("smtputf8", false);
    env.ret = j.value("ret", std::string());
    env.envid = j.value("envid", std::string());
    env.helo = j.value("helo", std::string());
    env.client_ip = j.value("client_ip", std::string());
    env.tls = j.value("tls", std::string());
    env.received_at = j.value("received_at", int64_t{0});
    env.message_size = j.value("message_size", uint64_t{0});
    env.eight_bit = j.value("eight_bit", env.body == BodyType::k8BitMime);
    env.rcpts.clear();
    for (auto& r : j.at("rcpts")) {
      Recipient rc;
      rc.address = r.at("addr").get<std::string>();
      rc.notify = r.value("notify", std::string());
      rc.orcpt = r.value("orcpt", std::string());
      int st = r.value("state", 0);
      rc.state = st == 1 ? RcptState::kDelivered : st == 2 ? RcptState::kFailed : RcptState::kPending;
      rc.status = r.value("status", std::string());
      rc.diag = r.value("diag", std::string());
      rc.remote = r.value("remote", std::string());
      rc.dsn_owed = r.value("dsn_owed", false) && rc.state != RcptState::kPending;
      env.rcpts.push_back(std::move(rc));
    }
    env.attempts = j.value("attempts", 0u);
    env.next_attempt = j.value("next_attempt", int64_t{0});
    env.held = j.value("held", false);
    env.is_bounce = j.value("is_bounce", false);
    env.delay_warned = j.value("delay_warned", false);
    env.scan_header = j.value("scan_header", std::string());
    env.quarantined = j.value("quarantined", std::string());
    env.released_at = j.value("released_at", int64_t{0});
    env.subject_at = j.value("subject_at", int64_t{-1});
    env.subject_edit = j.value("subject_edit", std::string());
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  return !env.queue_id.empty() && !env.rcpts.empty();
}

}  // namespace postern::queue
