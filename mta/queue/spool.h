// spool.h — the durable queue on local disk.
//
// Layout under <state_dir>/queue:  tmp/ (being written)  active/ (committed).  A message is two
// files: <qid>.msg (the message as received, Received: header first; never changed) and <qid>.env
// (the envelope as one JSON document; rewritten atomically as recipients are delivered).
//
// Durability: a message is committed by (1) flushing its data and envelope to disk, (2) renaming
// .msg then .env into active/, (3) fsync of active/. Only then is the client told 250. Commits are
// done by one committer thread in batches (group commit: one filesystem sync and one directory
// fsync serve every message that arrived meanwhile), so fsync never runs on a loop thread and
// durability does not cap throughput. A .env in active/ is the commit record: at start-up anything
// in tmp/ and any .msg without its .env is an unacknowledged leftover and is removed.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mta/server/envelope.h"

namespace postern::queue {

// One message being written by a session (loop thread).
class SpoolWriter {
 public:
  ~SpoolWriter();
  bool write(std::string_view data);  // false on any error (ENOSPC, EIO): the message fails
  const std::string& queue_id() const { return qid_; }
  uint64_t bytes() const { return bytes_; }

 private:
  friend class Spool;
  int fd_ = -1;
  std::string qid_;
  std::string tmp_path_;
  uint64_t bytes_ = 0;
  bool failed_ = false;
  bool committed_ = false;
};

struct CommitStats {
  uint64_t batches = 0;
  uint64_t messages = 0;
};

class Spool {
 public:
  // Creates the directories and recovers: returns the queue IDs found committed.
  explicit Spool(std::string dir);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  const std::vector<std::string>& recovered() const { return recovered_; }
  std::string new_queue_id();
  std::unique_ptr<SpoolWriter> open(const std::string& qid);
  // Hands the writer to the committer thread. done(ok) runs on the committer thread.
  void commit(std::unique_ptr<SpoolWriter> w, const Envelope& env, std::function<void(bool)> done);
  // Rewrites a committed message's envelope (recipient states) durably; batched, asynchronous.
  void update(const Envelope& env);
  // Deletes a message whose every recipient is done; batched, asynchronous.
  void remove(const std::string& qid);
  // Free bytes on the spool's filesystem (statvfs; cheap enough to call once a second).
  uint64_t free_bytes() const;
  const std::string& dir() const { return dir_; }
  std::string msg_path(const std::string& qid) const { return dir_ + "/active/" + qid + ".msg"; }
  std::string env_path(const std::string& qid) const { return dir_ + "/active/" + qid + ".env"; }
  CommitStats stats() const;
  void stop();

 private:
  struct Pending {
    std::unique_ptr<SpoolWriter> w;
    std::string env_json;
    std::function<void(bool)> done;
  };
  void run();
  void run_changes();
  bool stopping() const;
  void commit_batch(std::vector<Pending>& batch);
  void apply_changes(std::vector<std::pair<std::string, std::string>>& updates, std::vector<std::string>& removes);
  void recover();

  std::string dir_;
  std::vector<std::string> recovered_;
  int active_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;
  // Envelope rewrites and removals run on their own thread: unlinking just-written files costs
  // the filesystem far more than a commit, and must never delay a 250.
  std::mutex changes_mu_;
  std::condition_variable changes_cv_;
  std::vector<std::pair<std::string, std::string>> updates_;  // qid, envelope JSON
  std::vector<std::string> removes_;
  std::thread changes_thread_;
  bool stop_ = false;
  CommitStats stats_;
  std::thread thread_;
};

// Envelope <-> JSON (the .env file).
std::string envelope_to_json(const Envelope& env);
bool envelope_from_json(const std::string& text, Envelope& env);

}  // namespace postern::queue
