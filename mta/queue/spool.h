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
// to their <qid>.msg names, and makes the whole batch durable with one syncfs (fdatasync of each
// file and an fsync of the directory if syncfs is refused). Only then is the client told 250.
// A crash before the sync can leave a <qid>.msg whose data never reached the disk: its checksum
// fails and recovery moves it to corrupt/ (it was never acknowledged). fsync never runs on a loop
// thread; commits are grouped so durability does not cap throughput.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

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

 private:
  friend class Spool;
  Spool* spool_ = nullptr;
  int fd_ = -1;
  std::string qid_;
  std::string name_;        // the free file being written, in active/
  uint64_t old_size_ = 0;   // what the recycled file held before
  uint64_t bytes_ = 0;
  uint32_t crc_ = 0;
  bool failed_ = false;
  bool committed_ = false;
};

struct CommitStats {
  uint64_t batches = 0;
  uint64_t messages = 0;
};

class Spool {
 public:
  // Creates the directories and recovers the committed messages.
  explicit Spool(std::string dir);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // The committed messages found at start-up, each with its latest envelope (message_size is
  // the stored message's length).
  const std::vector<Envelope>& recovered() const { return recovered_; }
  std::string new_queue_id();
  std::unique_ptr<SpoolWriter> open(const std::string& qid);
  // Hands the writer to the committer thread. done(ok) runs on the committer thread.
  void commit(std::unique_ptr<SpoolWriter> w, const Envelope& env, std::function<void(bool)> done);
  // Rewrites a committed message's envelope (recipient states) durably; batched, asynchronous.
  void update(const Envelope& env);
  // Retires a message whose every recipient is done; batched, asynchronous.
  void remove(const std::string& qid);
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
  };
  struct FreeFile {
    std::string name;
    uint64_t size;
  };
  void run();
  void run_changes();
  bool stopping() const;
  void commit_batch(std::vector<Pending>& batch);
  void apply_changes(std::vector<std::pair<std::string, std::string>>& updates, std::vector<std::string>& removes);
  void recover();
  // Offers a file to the free pool; false when the pool is full (the caller deletes it).
  bool pool_put(std::string name, uint64_t size);
  bool pool_has_room(uint64_t size) const;
  void pool_release(const std::string& name, uint64_t size);  // a writer gave up its file

  std::string dir_;
  std::string active_;
  std::vector<Envelope> recovered_;
  int active_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;
  // Free files (LIFO: the most recently used is the most likely to be cached).
  mutable std::mutex pool_mu_;
  std::vector<FreeFile> pool_;
  uint64_t pool_bytes_ = 0;
  // Envelope rewrites and retirements run on their own thread: they must never delay a 250.
  std::mutex changes_mu_;
  std::condition_variable changes_cv_;
  std::vector<std::pair<std::string, std::string>> updates_;  // qid, envelope JSON
  std::vector<std::string> removes_;
  std::unordered_set<std::string> env_files_;  // qids with a <qid>.env (changes thread only)
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
