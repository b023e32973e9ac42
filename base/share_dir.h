// share_dir.h — <exe>/../share/postern: what the build (and an install) puts beside the binaries
// (the starter pattern bundle, the consoles' pages). "" when /proc/self/exe cannot be read.
#pragma once

#include <filesystem>
#include <string>

namespace postern {

inline std::string share_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return (exe.parent_path().parent_path() / "share" / "postern").string();
}

}  // namespace postern
