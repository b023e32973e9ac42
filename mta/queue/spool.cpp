// spool.cpp — see spool.h for the on-disk protocol. Security/safety-sensitive: this is where a
// 250 becomes a promise. Every error path fails the commit (451), never acknowledges it.
#include "mta/queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace postern::queue {
namespace {

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

std::string base32(uint64_t v, int digits) {
  static const char kAlphabet[] = "0123456789BCDFGHJKLMNPQRSTVWXYZ";  // 31 symbols; no vowels
  std::string s(static_cast<size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i) {
    s[static_cast<size_t>(i)] = kAlphabet[v % 31];
    v /= 31;
  }
  return s;
}

}  // namespace

SpoolWriter::~SpoolWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

bool SpoolWriter::write(std::string_view data) {
  if (failed_) return false;
  if (!write_all(fd_, data.data(), data.size())) {
    spdlog::error("queue_id={} spool write failed: {}", qid_, std::strerror(errno));
    failed_ = true;
    return false;
  }
  bytes_ += data.size();
  return true;
}

Spool::Spool(std::string dir) : dir_(std::move(dir)) {
  namespace fs = std::filesystem;
  fs::create_directories(dir_ + "/tmp");
  fs::create_directories(dir_ + "/active");
  fs::create_directories(dir_ + "/corrupt");
  active_fd_ = ::open((dir_ + "/active").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (active_fd_ < 0) throw std::runtime_error("cannot open spool directory " + dir_ + "/active");
  recover();
  thread_ = std::thread([this] { run(); });
  changes_thread_ = std::thread([this] { run_changes(); });
}

Spool::~Spool() {
  stop();
  if (active_fd_ >= 0) ::close(active_fd_);
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
}

void Spool::recover() {
  namespace fs = std::filesystem;
  size_t orphans = 0;
  for (auto& e : fs::directory_iterator(dir_ + "/tmp")) {
    fs::remove(e.path());
    ++orphans;
  }
  std::set<std::string> msgs, envs;
  for (auto& e : fs::directory_iterator(dir_ + "/active")) {
    auto name = e.path().filename().string();
    auto stem = e.path().stem().string();
    if (e.path().extension() == ".msg") msgs.insert(stem);
    else if (e.path().extension() == ".env") envs.insert(stem);
    else if (name.size() > 4 && name.ends_with(".tmp")) {
      fs::remove(e.path());
      ++orphans;
    }
  }
  for (auto& m : msgs) {
    if (!envs.count(m)) {  // renamed .msg, crashed before .env: never acknowledged
      fs::remove(dir_ + "/active/" + m + ".msg");
      ++orphans;
    }
  }
  for (auto& e : envs) {
    std::ifstream in(dir_ + "/active/" + e + ".env");
    std::stringstream ss;
    ss << in.rdbuf();
    Envelope env;
    if (!msgs.count(e) || !envelope_from_json(ss.str(), env)) {
      spdlog::error("queue_id={} spool: unreadable queue entry moved to {}/corrupt", e, dir_);
      std::error_code ec;
      fs::rename(dir_ + "/active/" + e + ".env", dir_ + "/corrupt/" + e + ".env", ec);
      if (msgs.count(e)) fs::rename(dir_ + "/active/" + e + ".msg", dir_ + "/corrupt/" + e + ".msg", ec);
      continue;
    }
    recovered_.push_back(e);
  }
  if (orphans) ::fsync(active_fd_);
  spdlog::info("spool recovered dir={} messages={} orphans_removed={}", dir_, recovered_.size(), orphans);
}

std::string Spool::new_queue_id() {
  static std::atomic<uint32_t> counter{0};
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::system_clock::now().time_since_epoch()).count();
  return base32(static_cast<uint64_t>(us), 11) + base32(counter.fetch_add(1) % (31 * 31 * 31), 3);
}

std::unique_ptr<SpoolWriter> Spool::open(const std::string& qid) {
  auto w = std::unique_ptr<SpoolWriter>(new SpoolWriter());
  w->qid_ = qid;
  std::string path = dir_ + "/tmp/" + qid + ".msg";
  w->fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (w->fd_ < 0) {
    spdlog::error("queue_id={} cannot create {}: {}", qid, path, std::strerror(errno));
    return nullptr;
  }
  w->tmp_path_ = path;
  return w;
}

void Spool::commit(std::unique_ptr<SpoolWriter> w, const Envelope& env, std::function<void(bool)> done) {
  Pending p{std::move(w), envelope_to_json(env), std::move(done)};
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
  return stats_;
}

void Spool::update(const Envelope& env) {
  {
    std::lock_guard lk(changes_mu_);
    updates_.emplace_back(env.queue_id, envelope_to_json(env));
  }
  changes_cv_.notify_one();
}

void Spool::remove(const std::string& qid) {
  {
    std::lock_guard lk(changes_mu_);
    removes_.push_back(qid);
  }
  changes_cv_.notify_one();
}

void Spool::run() {
  std::vector<Pending> batch;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !pending_.empty(); });
      if (pending_.empty() && stop_) return;
      batch.swap(pending_);
    }
    commit_batch(batch);
    batch.clear();
  }
}

void Spool::run_changes() {
  std::vector<std::pair<std::string, std::string>> updates;
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

// Envelope rewrites (write .env.tmp, flush, rename over .env) and deletions, one directory
// fsync for all of them.
void Spool::apply_changes(std::vector<std::pair<std::string, std::string>>& updates,
                          std::vector<std::string>& removes) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::pair<int, std::string>> written;  // fd, qid
  for (auto& [qid, json] : updates) {
    std::string tmp = env_path(qid) + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !write_all(fd, json.data(), json.size())) {
      spdlog::error("queue_id={} cannot rewrite envelope: {}", qid, std::strerror(errno));
      if (fd >= 0) ::close(fd);
      ::unlink(tmp.c_str());
      continue;
    }
    written.emplace_back(fd, qid);
  }
  bool synced = written.size() > 1 && ::syncfs(written.front().first) == 0;
  for (auto& [fd, qid] : written) {
    std::string tmp = env_path(qid) + ".tmp";
    if ((!synced && ::fdatasync(fd) != 0) || ::rename(tmp.c_str(), env_path(qid).c_str()) != 0) {
      spdlog::error("queue_id={} cannot install envelope: {}", qid, std::strerror(errno));
      ::unlink(tmp.c_str());
    }
    ::close(fd);
  }
  for (auto& qid : removes) {
    ::unlink(env_path(qid).c_str());  // the commit record first: a crash leaves an orphan .msg
    ::unlink(msg_path(qid).c_str());
  }
  auto t1 = std::chrono::steady_clock::now();
  if (::fsync(active_fd_) != 0) spdlog::error("spool: fsync of {}/active failed: {}", dir_, std::strerror(errno));
  auto t2 = std::chrono::steady_clock::now();
  SPDLOG_DEBUG("spool changes updates={} removes={} write_us={} dirsync_us={}", updates.size(), removes.size(),
               std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count(),
               std::chrono::duration_cast<std::chrono::microseconds>(t2 - t1).count());
}

void Spool::commit_batch(std::vector<Pending>& batch) {
  std::vector<char> ok(batch.size(), 0);
  std::vector<int> env_fds(batch.size(), -1);
  // 1. Write each envelope next to its message in tmp/.
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& p = batch[i];
    if (p.w->failed_) continue;
    std::string env_tmp = dir_ + "/tmp/" + p.w->qid_ + ".env";
    int fd = ::open(env_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !write_all(fd, p.env_json.data(), p.env_json.size())) {
      spdlog::error("queue_id={} cannot write envelope: {}", p.w->qid_, std::strerror(errno));
      if (fd >= 0) ::close(fd);
      ::unlink(env_tmp.c_str());
      continue;
    }
    env_fds[i] = fd;
    ok[i] = 1;
  }
  // 2. Flush data and envelopes: one filesystem sync for the whole batch when it is larger
  //    than one message; fdatasync per file otherwise (and if syncfs is refused).
  auto t0 = std::chrono::steady_clock::now();
  bool synced = false;
  size_t n_ok = 0;
  for (char c : ok) n_ok += c;
  if (n_ok > 1) {
    for (size_t i = 0; i < batch.size() && !synced; ++i)
      if (ok[i]) synced = ::syncfs(env_fds[i]) == 0;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!ok[i]) continue;
    if (!synced && (::fdatasync(batch[i].w->fd_) != 0 || ::fdatasync(env_fds[i]) != 0)) {
      spdlog::error("queue_id={} fsync failed: {}", batch[i].w->qid_, std::strerror(errno));
      ok[i] = 0;
    }
  }
  for (int fd : env_fds)
    if (fd >= 0) ::close(fd);
  // 3. Rename into active/: the .msg first, the .env (the commit record) last.
  for (size_t i = 0; i < batch.size(); ++i) {
    auto& w = *batch[i].w;
    std::string env_tmp = dir_ + "/tmp/" + w.qid_ + ".env";
    if (!ok[i]) {
      ::unlink(env_tmp.c_str());
      continue;
    }
    if (::rename(w.tmp_path_.c_str(), msg_path(w.qid_).c_str()) != 0 ||
        ::rename(env_tmp.c_str(), env_path(w.qid_).c_str()) != 0) {
      spdlog::error("queue_id={} cannot move into queue: {}", w.qid_, std::strerror(errno));
      ::unlink(msg_path(w.qid_).c_str());
      ::unlink(env_tmp.c_str());
      ok[i] = 0;
      continue;
    }
    w.committed_ = true;
  }
  // 4. Make the renames durable.
  if (::fsync(active_fd_) != 0) {
    spdlog::error("spool: fsync of {}/active failed: {}", dir_, std::strerror(errno));
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!ok[i]) continue;
      ::unlink(env_path(batch[i].w->qid_).c_str());
      ::unlink(msg_path(batch[i].w->qid_).c_str());
      ok[i] = 0;
    }
  }
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
  SPDLOG_DEBUG("spool commit batch={} synced_in_us={} mode={}", batch.size(), us, synced ? "syncfs" : "fdatasync");
  {
    std::lock_guard lk(mu_);
    stats_.batches++;
    stats_.messages += batch.size();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].w.reset();  // closes the message fd; unlinks tmp when not committed
    batch[i].done(ok[i] != 0);
  }
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
  auto& rs = j["rcpts"] = nlohmann::json::array();
  for (auto& r : env.rcpts)
    rs.push_back({{"addr", r.address}, {"notify", r.notify}, {"orcpt", r.orcpt},
                  {"state", static_cast<int>(r.state)}, {"status", r.status}, {"diag", r.diag},
                  {"remote", r.remote}});
  j["attempts"] = env.attempts;
  j["next_attempt"] = env.next_attempt;
  j["held"] = env.held;
  j["is_bounce"] = env.is_bounce;
  j["delay_warned"] = env.delay_warned;
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
      env.rcpts.push_back(std::move(rc));
    }
    env.attempts = j.value("attempts", 0u);
    env.next_attempt = j.value("next_attempt", int64_t{0});
    env.held = j.value("held", false);
    env.is_bounce = j.value("is_bounce", false);
    env.delay_warned = j.value("delay_warned", false);
  } catch (const nlohmann::json::exception&) {
    return false;
  }
  return !env.queue_id.empty() && !env.rcpts.empty();
}

}  // namespace postern::queue
