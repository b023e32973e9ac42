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

enum class PathError { kOk, kSyntax, kNonAscii };

struct PathParse {
  PathError error = PathError::kOk;
  Mailbox box;             // empty for "<>"
  bool null_path = false;  // "<>"
  bool postmaster = false; // "<postmaster>" without a domain
  std::vector<Param> params;
  bool params_ok = true;
};

// arg: the text after "MAIL " or "RCPT ", e.g. "FROM:<a@b> SIZE=10". prefix: "FROM" or "TO".
PathParse parse_path_arg(std::string_view arg, std::string_view prefix, bool allow_utf8);

bool valid_xtext(std::string_view s);
std::string upper(std::string_view s);
std::string lower(std::string_view s);

}  // namespace postern::smtp
