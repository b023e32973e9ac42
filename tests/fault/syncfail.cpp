// syncfail.cpp — an LD_PRELOAD library for fault-injection tests (tests/e2e/test_faults.py,
// scripts/bench-faults), never linked into Postern: while the file named by
// $POSTERN_SYNCFAIL_FILE exists (and the process is $POSTERN_SYNCFAIL_PROCESS, when set), syncfs(), fsync() and fdatasync() fail with EIO (as a disk's
// write-back error reaches them), and each failure is counted in $POSTERN_SYNCFAIL_FILE.count.
// Remove the file and the calls reach the kernel again. Test-only: a daemon started without
// LD_PRELOAD never sees it.
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

namespace {

std::atomic<unsigned long> failures{0};

bool failing() {
  // Only in the process named by $POSTERN_SYNCFAIL_PROCESS (posternd), never in what it starts
  // (the private PostgreSQL inherits the environment).
  const char* only = getenv("POSTERN_SYNCFAIL_PROCESS");
  if (only && *only && strcmp(only, program_invocation_short_name) != 0) return false;
  const char* f = getenv("POSTERN_SYNCFAIL_FILE");
  struct stat st;
  return f && *f && stat(f, &st) == 0;
}

void count() {
  unsigned long n = ++failures;
  const char* f = getenv("POSTERN_SYNCFAIL_FILE");
  char path[4096];
  if (snprintf(path, sizeof path, "%s.count", f) >= static_cast<int>(sizeof path)) return;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%lu\n", n);
  if (len > 0 && write(fd, buf, static_cast<size_t>(len)) < 0) {
  }
  close(fd);
}

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int syncfs(int fd) {
  static auto next = real<int (*)(int)>("syncfs");
  if (failing()) {
    count();
    errno = EIO;
    return -1;
  }
  return next(fd);
}

int fsync(int fd) {
  static auto next = real<int (*)(int)>("fsync");
  if (failing()) {
    count();
    errno = EIO;
    return -1;
  }
  return next(fd);
}

int fdatasync(int fd) {
  static auto next = real<int (*)(int)>("fdatasync");
  if (failing()) {
    count();
    errno = EIO;
    return -1;
  }
  return next(fd);
}

}  // extern "C"
