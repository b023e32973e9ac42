// vendor_db.cpp — see vendor_db.h.
#include "licensing/vendor_db.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "licensing/activation_code.h"

namespace postern::licensing {
using nlohmann::json;

std::string VendorDb::load(const std::string& path, VendorDb& out) {
  out = VendorDb{};
  std::ifstream in(path);
  if (!in) return errno == ENOENT ? "" : "cannot read " + path + ": " + std::strerror(errno);
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != "postern-license-db-1" ||
      !j.contains("codes") || !j["codes"].is_object() || !j.contains("next_serial") ||
      !j["next_serial"].is_number_unsigned())
    return path + ": not a postern license database";
  out.next_serial = j["next_serial"].get<uint64_t>();
  try {  // value() throws on a field of another type: a broken file, refused below
    return load_codes(path, j["codes"], out);
  } catch (const nlohmann::json::exception& e) {
    out = VendorDb{};
    return path + ": bad entry: " + e.what();
  }
}

std::string VendorDb::load_codes(const std::string& path, const nlohmann::json& codes, VendorDb& out) {
  for (auto& [code, e] : codes.items()) {
    auto c = parse_code(code);
    if (!c || c->text != code || !e.is_object()) return path + ": bad code entry " + code;
    IssuedCode ic;
    auto kind = kind_from_cli(e.value("license", ""));
    auto exp = parse_date(e.value("expires", ""));
    if (!kind || *kind != c->kind || !exp) return path + ": bad entry for " + code;
    ic.kind = *kind;
    ic.expires = *exp;
    ic.serial = e.value("serial", uint64_t{0});
    ic.issued_at = e.value("issued_at", int64_t{0});
    ic.renewed_at = e.value("renewed_at", int64_t{0});
    out.codes[code] = ic;
  }
  return "";
}

std::string VendorDb::save(const std::string& path) const {
  json codes_j = json::object();
  for (auto& [code, c] : codes)
    codes_j[code] = {{"license", cli_name(c.kind)}, {"expires", format_date(c.expires)}, {"serial", c.serial},
                     {"issued_at", c.issued_at},    {"renewed_at", c.renewed_at}};
  std::string text = json{{"format", "postern-license-db-1"}, {"next_serial", next_serial}, {"codes", codes_j}}.dump(2) + "\n";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return "cannot write " + tmp + ": " + std::strerror(errno);
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string e = std::strerror(errno);
    ::unlink(tmp.c_str());
    return "cannot write " + path + ": " + e;
  }
  return "";
}

VendorDbLock::VendorDbLock(const std::string& db_path) {
  fd_ = ::open((db_path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

VendorDbLock::~VendorDbLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace postern::licensing
