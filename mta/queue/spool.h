// spool.h — the durable queue on local disk.
//
// Layout: everything lives in <state_dir>/queue/active. A committed message is ONE file,
// <qid>.msg:
//
//     [the message as received, Received: header first; L bytes]
//     [the envelope as one JSON document; E bytes]
//     ["\nPOSTERN1 " <L: 16 hex> " " <E: 8 hex> " " <CRC-32 of the first L+E bytes: 8 hex> "\n"]
//
// The footer and checksum are the commit record: a <qid>.msg counts only if its footer parses,
// its lengths add up to the file's size, its checksum matches and its envelope names <qid>.
// Once recipient states change (deferrals, partial delivery), the newer envelope is written
// beside it as <qid>.env (atomically: .env.tmp, sync, rename); a .env overrides the embedded one.
//
// Files are recycled, never churned: a delivered message is renamed to free-<qid> and the next
// message is written over it (and renamed to its own <qid>.msg at commit). Creating and deleting
// an inode per message is what costs a filesystem most under load (ext4 scans recently deleted
// inodes on every create); a recycled file costs two renames. The pool of free files is bounded
// (count, bytes, and size of a file kept).
//
// Durability: the committer thread writes each batch's envelopes and footers, renames the files
// to their <qid>.msg names, and makes the whole batch durable with one syncfs (queue.sync =
// "syncfs", the default) or with an fdatasync of each file and an fsync of the directory
// (queue.sync = "file"). Only then is the client told 250. A crash before the sync can leave a
// <qid>.msg whose data never reached the disk: its checksum fails and recovery moves it to
// corrupt/ (it was never acknowledged). fsync never runs on a loop thread; commits are grouped so
// durability does not cap throughput.
//
// Quarantine: a message the scanning gate quarantined (Envelope::quarantined) is committed the
// same way, in the same batch and sync, but renamed into <state_dir>/queue/quarantine/<qid>.msg:
// recovery never loads it and nothing delivers it. release_quarantined() moves it back into
// active/ (renamed, both directories synced) with its envelope rewritten, for the scheduler.
//
// Write-back errors (security-sensitive: a lost error is a 250 for a message that is not on
// disk). Since Linux 5.8 syncfs reports a write-back error of the filesystem once per open file
// description, so every caller of syncfs has its own descriptor of the directory: the commit
// (commit_fd_, nothing else syncs through it), the committer's flushes of retirements and the
// envelope rewrites. A sync error seen by any of them also fails every message whose file was
// opened before it (its pages may be the ones that were lost; the commit's next syncfs would
// not report that error again), until messages opened after it commit on a clean sync. A kernel
// older than 5.8 reports no syncfs errors at all: the spool refuses to start there unless
// queue.sync = "file" (fdatasync reports the errors of each file to its own descriptor).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>

#include <atomic>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/clock.h"
#include "mta/envelope.h"

namespace postern::queue {

class Spool;

// One message being written by a session (loop thread) or by the scheduler (a DSN).
class SpoolWriter {
 public:
  ~SpoolWriter();
  bool write(std::string_view data);  // false on any error (ENOSPC, EIO): the message fails
  const std::string& queue_id() const { return qid_; }
  uint64_t bytes() const { return bytes_; }
  // A read-only descriptor of the file being written, for the scanning gate's thread (read with
  // pread; it stays valid whatever becomes of the writer). -1 on error. The caller closes it.
  int open_for_read() const;

 private:
  friend class Spool;
  Spool* spool_ = nullptr;
  int fd_ = -1;
  std::string qid_;
  std::string name_;        // the free file being written, in active/
  uint64_t old_size_ = 0;   // what the recycled file held before
  uint64_t bytes_ = 0;
  uint64_t sync_gen_ = 0;  // the spool's count of sync errors when this file was opened
  uint32_t crc_ = 0;
  bool failed_ = false;
  bool committed_ = false;
};

struct CommitStats {
  uint64_t batches = 0;
  uint64_t messages = 0;
  uint64_t sync_errors = 0;  // failed syncfs/fsync/fdatasync calls
};

enum class SyncMode { kSyncfs, kFile };

// The system calls that make data durable; unit tests inject failures. Each returns 0, or -1
// with errno set.
struct SyncOps {
  std::function<int(int)> syncfs = [](int fd) { return ::syncfs(fd); };
  std::function<int(int)> fdatasync = [](int fd) { return ::fdatasync(fd); };
  std::function<int(int)> fsync = [](int fd) { return ::fsync(fd); };
};

struct SpoolOptions {
  SyncMode sync = SyncMode::kSyncfs;
  const Clock* clock = &real_clock();  // queue IDs
  SyncOps ops;
  std::string kernel_release;  // "" = uname(); tests pass e.g. "5.4.0"
};

class Spool {
 public:
  // Creates the directories, cleans up what an interrupted run left (.tmp files, orphan .env)
  // and takes over the free files. Throws std::runtime_error when the directory cannot be
  // opened, or in syncfs mode on a kernel that does not report syncfs errors.
  explicit Spool(std::string dir, SpoolOptions opts = {});
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Start-up, once: checks every message found in the directory and hands each committed one,
  // with its latest envelope (message_size = the stored message's length), to `each`, one at a
  // time, so a large queue is never held in memory twice. Returns how many it handed over.
  size_t recover(const std::function<void(Envelope&&)>& each);
  std::vector<Envelope> recover_all();  // the same into a vector (tests, tools)
  // The latest envelope of a committed message (an update not yet on disk included); for the
  // scheduler, which keeps only a small index of each message in memory. message_size is left
  // as the caller knows it. false (with why) when it cannot be read.
  bool load_envelope(const std::string& qid, Envelope& env, std::string& err) const;
  std::string new_queue_id();
  std::unique_ptr<SpoolWriter> open(const std::string& qid);
  // Hands the writer to the committer thread. done(ok) runs on the committer thread.
  void commit(std::unique_ptr<SpoolWriter> w, const Envelope& env, std::function<void(bool)> done);
  // Rewrites a committed message's envelope (recipient states) durably; batched, asynchronous.
  void update(const Envelope& env);
  // Retires a message whose every recipient is done; batched, asynchronous.
  void remove(const std::string& qid);
  // The quarantine area (see above). Each entry's embedded envelope (message_size set).
  std::vector<Envelope> list_quarantined(size_t max) const;
  bool load_quarantined(const std::string& qid, Envelope& env, std::string& err) const;
  std::string quarantine_path(const std::string& qid) const { return dir_ + "/quarantine/" + qid + ".msg"; }
  // Moves it into the active queue durably and records `released_at` (and clears quarantined) in
  // its envelope; env = that envelope, for the scheduler. false (with why) if it is not there.
  bool release_quarantined(const std::string& qid, int64_t now, Envelope& env, std::string& err);
  bool delete_quarantined(const std::string& qid, std::string& err);
  // Free bytes on the spool's filesystem (statvfs; cheap enough to call once a second).
  uint64_t free_bytes() const;
  const std::string& dir() const { return dir_; }
  // The queue file: the message is its first message_size bytes.
  std::string msg_path(const std::string& qid) const { return dir_ + "/active/" + qid + ".msg"; }
  CommitStats stats() const;
  size_t pool_size() const;
  // Deletes every free file (the filesystem is short of space); returns how many.
  size_t trim_pool();
  void stop();

  // The first `len` bytes of a queue file (the message is its first message_size bytes) into
  // `out`; false if the file cannot be read that far.
  static bool read_message(const std::string& path, uint64_t len, std::string& out);
  // Reads and checks a committed queue file (footer, lengths, checksum, queue ID).
  static bool read_queue_file(const std::string& path, const std::string& qid, Envelope& env,
                              uint64_t& msg_len, std::string& err);
  // Does this kernel (uname release, e.g. "6.1.0-13-amd64") report write-back errors through
  // syncfs? Linux 5.8 and later.
  static bool syncfs_reports_errors(std::string_view release);
  SyncMode sync_mode() const { return opts_.sync; }

  static constexpr size_t kPoolMaxFiles = 4096;
  static constexpr uint64_t kPoolMaxFileBytes = 1 << 20;
  static constexpr uint64_t kPoolMaxBytes = 256ull << 20;
  static constexpr std::chrono::milliseconds kFlushDelay{20};

 private:
  friend class SpoolWriter;
  struct Pending {
    std::unique_ptr<SpoolWriter> w;
    std::string env_json;
    std::function<void(bool)> done;
    bool quarantine = false;
  };
  struct FreeFile {
    std::string name;
    uint64_t size;
  };
  struct Latest {  // an envelope rewrite not yet installed as <qid>.env
    uint64_t seq = 0;
    std::string json;
  };
  void run();
  void run_changes();
  bool stopping() const;
  void commit_batch(std::vector<Pending>& batch);
  void write_tails(std::vector<Pending>& batch, std::vector<char>& ok);
  void sync_batch(std::vector<Pending>& batch, std::vector<char>& ok);
  void fail_committed(Pending& p, std::vector<char>& ok, size_t i, const char* why);
  void sync_flush();
  void note_sync_error(const char* what, int err);
  void apply_changes(std::vector<std::string>& updates, std::vector<std::string>& removes);
  void write_updates(std::vector<std::string>& updates);
  void retire(const std::string& qid);
  void scan();
  void check_kernel() const;
  int open_dir() const;
  static bool read_embedded_envelope(const std::string& path, std::string& json, std::string& err);
  // Offers a file to the free pool; false when the pool is full (the caller deletes it).
  bool pool_put(std::string name, uint64_t size);
  bool pool_has_room(uint64_t size) const;
  void pool_release(const std::string& name, uint64_t size);  // a writer gave up its file

  std::string dir_;
  std::string active_;
  SpoolOptions opts_;
  std::vector<std::string> found_msgs_;  // from scan(), for recover()
  std::set<std::string> found_envs_;
  int active_fd_ = -1;   // directory operations (openat, renameat, unlinkat); never synced
  int commit_fd_ = -1;   // the commit's own descriptor: only commit_batch syncs through it
  int flush_fd_ = -1;    // the committer's flushes of retirements and renames
  int changes_fd_ = -1;  // the changes thread's syncs of envelope rewrites
  int quarantine_fd_ = -1;  // quarantine/: renames into it, its fsync in "file" mode
  std::atomic<uint64_t> sync_errors_{0};
  std::atomic<uint64_t> last_id_us_{0};  // queue IDs only move forward, whatever the clock does
  std::atomic<uint32_t> id_counter_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;
  // Free files (LIFO: the most recently used is the most likely to be cached).
  mutable std::mutex pool_mu_;
  std::vector<FreeFile> pool_;
  uint64_t pool_bytes_ = 0;
  // Envelope rewrites and retirements run on their own thread: they must never delay a 250.
  mutable std::mutex changes_mu_;
  std::condition_variable changes_cv_;
  std::unordered_map<std::string, Latest> latest_;  // under changes_mu_
  uint64_t update_seq_ = 0;                         // under changes_mu_
  std::vector<std::string> updates_;  // qids with a new Latest
  std::vector<std::string> removes_;
  std::mutex env_files_mu_;
  std::unordered_set<std::string> env_files_;  // qids with a <qid>.env
  std::thread changes_thread_;
  bool stop_ = false;
  bool flush_wanted_ = false;  // the changes thread did work that the next sync must cover
  CommitStats stats_;
  std::thread thread_;
};

// Envelope <-> JSON.
std::string envelope_to_json(const Envelope& env);
bool envelope_from_json(const std::string& text, Envelope& env);

}  // namespace postern::queue
