// smtp_syntax.h — parsing of SMTP command lines, paths and ESMTP parameters (RFC 5321 4.1,
// RFC 1870, 6152, 6531, 3461). Pure functions over bytes; security-sensitive: every byte here
// comes from the network, so nothing asserts and every length is bounded by the caller's line.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postern::smtp {

enum class Verb {
  kEhlo, kHelo, kMail, kRcpt, kData, kBdat, kRset, kNoop, kQuit, kVrfy, kHelp, kStarttls, kExpn,
  kUnknown
};

struct CommandLine {
  Verb verb = Verb::kUnknown;
  std::string_view arg;  // text after the verb and one space, trailing spaces removed
};

CommandLine parse_command(std::string_view line);
const char* verb_name(Verb v);  // "EHLO", ..., "?" for kUnknown

struct Mailbox {
  std::string local;   // as written, quotes included when quoted
  std::string domain;  // lowercased
  bool quoted = false;
  bool source_route = false;  // "<@a,@b:user@c>" was given (route dropped)
  bool non_ascii = false;
  std::string str() const { return local.empty() && domain.empty() ? "" : local + "@" + domain; }
};

struct Param {
  std::string key;    // upper-cased
  std::string value;  // as written
  bool has_value = false;
};

enum class PathError { kOk, kSyntax, kNonAscii, kBadUtf8 };

struct PathParse {
  PathError error = PathError::kOk;
  Mailbox box;             // empty for "<>"
  bool null_path = false;  // "<>"
  bool postmaster = false; // "<postmaster>" without a domain
  std::vector<Param> params;
  bool params_ok = true;
};

// arg: the text after "MAIL " or "RCPT ", e.g. "FROM:<a@b> SIZE=10". prefix: "FROM" or "TO".
// The address is refused unless it is printable: no control character anywhere (quoted-pair
// included: RFC 5321 quoted-pairSMTP is %d92 %d32-126), and under SMTPUTF8 well-formed UTF-8.
PathParse parse_path_arg(std::string_view arg, std::string_view prefix, bool allow_utf8);

bool valid_xtext(std::string_view s);
// Decodes xtext (RFC 3461 4: "+XX" hex escapes). false if `s` is not valid xtext.
bool xtext_decode(std::string_view s, std::string& out);
// Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s);
// A C0 control (0x00-0x1F), DEL, or (when `utf8`) a C1 control U+0080-U+009F encoded in UTF-8.
bool has_control(std::string_view s, bool utf8 = false);
std::string upper(std::string_view s);
std::string lower(std::string_view s);

}  // namespace postern::smtp
