// clock.cpp — see clock.h. Security-sensitive: OffsetFileClock reads a file that moves the
// daemon's time; it refuses a file others may write and logs every change of offset.
#include "base/clock.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/duration.h"
#include "base/log.h"

namespace postern {
namespace {

using std::chrono::duration_cast;
using std::chrono::nanoseconds;

int64_t real_steady_ns() {
  return duration_cast<nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// The file's text; "" when it does not exist. nullopt (with why) when it cannot be used.
std::optional<std::string> read_small_file(const std::string& path, std::string& why) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    why = std::strerror(errno);
    return std::nullopt;
  }
  struct stat st {};
  std::string text;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (st.st_mode & S_IWOTH) {
    why = "writable by others: ignored";
  } else {
    char buf[128];
    ssize_t n = ::read(fd, buf, sizeof buf);  // an offset is a few bytes; more is malformed
    if (n < 0) why = std::strerror(errno);
    else text.assign(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!why.empty()) return std::nullopt;
  return text;
}

}  // namespace

int64_t Clock::unix_seconds() const {
  return std::chrono::duration_cast<std::chrono::seconds>(wall().time_since_epoch()).count();
}

int64_t Clock::unix_micros() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(wall().time_since_epoch()).count();
}

const Clock& real_clock() {
  static const RealClock c;
  return c;
}

FakeClock::FakeClock(int64_t start_unix) : wall_ns_(start_unix * 1'000'000'000) {}

Clock::WallTime FakeClock::wall() const {
  return WallTime(duration_cast<std::chrono::system_clock::duration>(nanoseconds(wall_ns_.load())));
}

Clock::SteadyTime FakeClock::steady() const {
  return SteadyTime(duration_cast<std::chrono::steady_clock::duration>(nanoseconds(steady_ns_.load())));
}

void FakeClock::advance(nanoseconds d) {
  wall_ns_.fetch_add(d.count());
  steady_ns_.fetch_add(d.count());
}

void FakeClock::set_wall(int64_t unix_seconds) { wall_ns_.store(unix_seconds * 1'000'000'000); }

OffsetFileClock::OffsetFileClock(std::string path, std::chrono::milliseconds recheck)
    : path_(std::move(path)), recheck_(recheck) {
  reload();
}

std::optional<nanoseconds> OffsetFileClock::parse_offset(std::string_view text) {
  text = trim(text);
  if (text.empty()) return nanoseconds(0);
  bool negative = text.front() == '-';
  if (text.front() == '-' || text.front() == '+') text.remove_prefix(1);
  auto d = parse_duration(text);
  if (!d || *d > std::chrono::hours(24 * 365 * 100)) return std::nullopt;  // a century is plenty
  return negative ? -nanoseconds(*d) : nanoseconds(*d);
}

void OffsetFileClock::reload() const {
  std::lock_guard lk(mu_);
  std::string why;
  auto text = read_small_file(path_, why);
  std::string seen = text ? *text : "\x01" + why;
  if (seen == last_text_) return;  // unchanged since the last look: nothing to say
  last_text_ = seen;
  auto off = text ? parse_offset(*text) : std::nullopt;
  if (!off) {
    spdlog::error("test clock: {}: {}; keeping offset {}s", path_,
                  text ? "malformed offset '" + esc(trim(*text), 64) + "'" : why, offset_ns_.load() / 1'000'000'000);
    return;
  }
  int64_t ns = off->count();
  if (ns == offset_ns_.load()) return;
  offset_ns_.store(ns);
  int64_t max = max_offset_ns_.load();
  while (ns > max && !max_offset_ns_.compare_exchange_weak(max, ns)) {
  }
  auto wall = std::chrono::system_clock::now() + duration_cast<std::chrono::system_clock::duration>(*off);
  spdlog::warn("test clock: offset={}s from {}; wall time now {}", ns / 1'000'000'000, path_,
               std::chrono::duration_cast<std::chrono::seconds>(wall.time_since_epoch()).count());
}

void OffsetFileClock::maybe_reload() const {
  int64_t now = real_steady_ns();
  int64_t due = next_check_ns_.load(std::memory_order_relaxed);
  if (now < due) return;
  // One caller wins the look at FILE; the others go on with the current offset.
  if (!next_check_ns_.compare_exchange_strong(due, now + recheck_.count())) return;
  reload();
}

nanoseconds OffsetFileClock::offset() const {
  maybe_reload();
  return nanoseconds(offset_ns_.load());
}

Clock::WallTime OffsetFileClock::wall() const {
  auto off = offset();
  return std::chrono::system_clock::now() + duration_cast<std::chrono::system_clock::duration>(off);
}

Clock::SteadyTime OffsetFileClock::steady() const {
  maybe_reload();
  return std::chrono::steady_clock::now() + duration_cast<std::chrono::steady_clock::duration>(
                                                nanoseconds(max_offset_ns_.load()));
}

}  // namespace postern
