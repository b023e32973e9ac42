// cert_watch.h — the watch on certificate files given by path in the config (smtp., outbound.,
// admin. and euq. tls_cert_file / tls_key_file), e.g. certbot's live/NAME/fullchain.pem.
//
// inotify on the control loop (uv_poll on the inotify descriptor). Symlink-aware: for each file
// it watches the directory of the path as given and of every link target on the way to the real
// file (certbot: live/NAME/ and archive/NAME/), and re-resolves after every event, so a link
// re-pointed to a new file is followed. Debounced: an event arms a timer (200 ms); then the
// files are read until two reads 100 ms apart agree (a writer still at work changes them), and
// only contents that differ from those last handed over trigger on_change — which runs the one
// reload path (ControlPlane::reload("file change: PATH")). Whether the new files are good is
// the reload's business: a half-written or bad file is refused there and the old set serves on.
// Security-sensitive: it reads private keys (only to hash them; the bytes are wiped) and every
// buffer is bounded (the inotify read buffer, at most 1 MiB per file).
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "conf/config.h"

namespace postern::tls {

// The files the config names explicitly (never the defaults under <state_dir>/certs/).
std::vector<std::string> watched_files(const Config& cfg);

class CertWatch {
 public:
  using OnChange = std::function<void(const std::string& path)>;
  CertWatch(uv_loop_t* loop, OnChange on_change, std::chrono::milliseconds debounce = std::chrono::milliseconds(200));
  ~CertWatch();
  CertWatch(const CertWatch&) = delete;
  CertWatch& operator=(const CertWatch&) = delete;

  // Watches `files` from now on (replacing the previous list; the same list keeps its state).
  // "" or the error (then nothing is watched: inotify is not available).
  std::string watch(const std::vector<std::string>& files);
  void close();
  uint64_t triggers() const;  // on_change calls so far
  size_t directories() const;  // directories watched now

 private:
  struct Impl;
  Impl* impl_;  // freed by the handles' close callbacks (libuv needs them alive until then)
  bool closed_ = false;
};

}  // namespace postern::tls
