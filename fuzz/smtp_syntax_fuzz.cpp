// smtp_syntax_fuzz.cpp — command lines, paths and ESMTP parameters, xtext and UTF-8 checks
// from hostile bytes. Checks: an accepted address holds no control character, is valid UTF-8
// when UTF-8 is allowed and ASCII otherwise; xtext decoding never grows its input.
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

#include "mta/server/smtp_syntax.h"

using namespace postern::smtp;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  CommandLine cl = parse_command(in);
  (void)verb_name(cl.verb);
  for (bool utf8 : {false, true}) {
    for (std::string_view prefix : {"FROM", "TO"}) {
      PathParse pp = parse_path_arg(in, prefix, utf8);
      if (pp.error != PathError::kOk || pp.null_path) continue;
      std::string a = pp.box.str();
      if (has_control(a, true)) abort();
      if (utf8 && !valid_utf8(a)) abort();
      if (!utf8)
        for (unsigned char c : a)
          if (c >= 0x80) abort();
    }
  }
  std::string out;
  if (xtext_decode(in, out) && out.size() > in.size()) abort();
  (void)valid_xtext(in);
  (void)valid_utf8(in);
  (void)upper(in);
  return 0;
}
