// recipient_table.cpp — reads the recipient map. See the header for the formats.
#include "conf/recipient_table.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "conf/config.h"

namespace postern {
namespace {

constexpr size_t kMaxLine = 1024;
constexpr size_t kMaxEntries = 10'000'000;
constexpr uintmax_t kMaxBytes = 1ull << 30;

[[noreturn]] void bad(const std::string& key, const std::string& where, const std::string& why) {
  throw ConfigError("config key '" + key + "': " + where + ": " + why);
}

std::string lower_ascii(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string trim(const std::string& line) {
  std::string s = line.substr(0, line.find('#'));
  const char* ws = " \t\r";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// One entry; `domain` is the file's domain in directory mode, "" for the single file.
void add_entry(RecipientTable& t, std::string e, const std::string& domain, const std::string& key,
               const std::string& where) {
  if (e.find_first_of(" \t") != std::string::npos) bad(key, where, "one address per line");
  for (unsigned char c : e)
    if (c < 0x20 || c == 0x7F) bad(key, where, "control character");
  e = lower_ascii(e);
  size_t at = e.rfind('@');
  if (at == std::string::npos) {
    if (domain.empty()) bad(key, where, "'" + e + "' is not an address (use user@domain or @domain)");
    e += "@" + domain;
    at = e.rfind('@');
  }
  std::string dom = e.substr(at + 1);
  if (dom.empty()) {
    if (domain.empty() || at != 0) bad(key, where, "'" + e + "' has no domain");
    dom = domain;
  }
  if (!dom.empty() && dom.back() == '.') dom.pop_back();
  if (at == 0) {
    t.catch_all.insert(dom);
  } else {
    t.addresses.insert(e.substr(0, at + 1) + dom);
  }
  if (t.addresses.size() + t.catch_all.size() > kMaxEntries) bad(key, where, "too many entries");
}

void read_file(RecipientTable& t, const std::string& path, const std::string& domain, const std::string& key,
               uintmax_t& bytes) {
  std::error_code ec;
  uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) bad(key, path, "cannot read: " + ec.message());
  bytes += size;
  if (bytes > kMaxBytes) bad(key, path, "the recipient map is larger than 1 GiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) bad(key, path, "cannot open");
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.size() > kMaxLine) bad(key, path + ":" + std::to_string(n), "line longer than 1024 bytes");
    std::string e = trim(line);
    if (!e.empty()) add_entry(t, e, domain, key, path + ":" + std::to_string(n));
  }
  if (in.bad()) bad(key, path, "read error");
  ++t.files;
}

}  // namespace

RecipientTable load_recipient_table(const std::string& path, const std::string& key) {
  namespace fs = std::filesystem;
  RecipientTable t;
  uintmax_t bytes = 0;
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) bad(key, path, "no such file or directory");
  if (fs::is_directory(st)) {
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(path, ec)) {
      std::string name = e.path().filename().string();
      if (name.empty() || name[0] == '.' || name.back() == '~' || !e.is_regular_file()) continue;
      files.push_back(e.path());
    }
    if (ec) bad(key, path, "cannot list: " + ec.message());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      std::string dom = lower_ascii(f.filename().string());
      if (!dom.empty() && dom.back() == '.') dom.pop_back();
      if (dom.find('@') != std::string::npos) bad(key, f.string(), "a file is named after its domain");
      read_file(t, f.string(), dom, key, bytes);  // an empty file: that domain has no users
    }
  } else {
    read_file(t, path, "", key, bytes);
  }
  return t;
}

}  // namespace postern
