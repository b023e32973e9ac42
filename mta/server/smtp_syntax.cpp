// smtp_syntax.cpp — SMTP command, path and parameter parsing. See the header; every byte here is
// hostile: addresses leave this file only printable (no control characters, well-formed UTF-8),
// because they reach downstream MAIL/RCPT lines, DSN header fields and the envelope file as is.
#include "mta/server/smtp_syntax.h"

#include "base/text.h"

#include <cctype>
#include <cstdint>

namespace postern::smtp {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

bool atext(unsigned char c) {
  return std::isalnum(c) || std::string_view("!#$%&'*+-/=?^_`{|}~").find(c) != std::string_view::npos;
}

// Dot-string (RFC 5321 4.1.2): atoms separated by single dots.
bool valid_dot_string(std::string_view s, bool utf8) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = s[i];
    if (c == '.') {
      if (s[i + 1] == '.') return false;
    } else if (c >= 0x80) {
      if (!utf8) return false;
    } else if (!atext(c)) {
      return false;
    }
  }
  return true;
}

bool valid_domain(std::string_view d, bool utf8) {
  if (d.empty() || d.size() > 255) return false;
  if (d.front() == '[') {
    if (d.back() != ']' || d.size() < 3) return false;
    for (char c : d.substr(1, d.size() - 2))
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-'))
        return false;
    return true;
  }
  size_t label = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    unsigned char c = d[i];
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    if (c >= 0x80) {
      if (!utf8) return false;
    } else if (!(std::isalnum(c) || c == '-')) {
      return false;
    }
    if (++label > 63) return false;
  }
  return label > 0 || d.back() == '.';
}

bool has_non_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return true;
  return false;
}

}  // namespace

std::string upper(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return r;
}
std::string lower(std::string_view s) { return ascii_lower(s); }

namespace {
constexpr std::pair<std::string_view, Verb> kVerbs[] = {
    {"EHLO", Verb::kEhlo}, {"HELO", Verb::kHelo}, {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt}, {"DATA", Verb::kData}, {"BDAT", Verb::kBdat},
    {"RSET", Verb::kRset}, {"NOOP", Verb::kNoop}, {"QUIT", Verb::kQuit},
    {"VRFY", Verb::kVrfy}, {"HELP", Verb::kHelp}, {"STARTTLS", Verb::kStarttls},
    {"EXPN", Verb::kExpn}};
}  // namespace

const char* verb_name(Verb v) {
  for (auto& [name, verb] : kVerbs)
    if (verb == v) return name.data();
  return "?";
}

CommandLine parse_command(std::string_view line) {
  while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
  size_t sp = line.find(' ');
  std::string_view word = line.substr(0, sp);
  CommandLine cl;
  for (auto& [name, verb] : kVerbs)
    if (iequals(word, name)) cl.verb = verb;
  if (sp != std::string_view::npos) {
    cl.arg = line.substr(sp + 1);
    while (!cl.arg.empty() && cl.arg.front() == ' ') cl.arg.remove_prefix(1);
  }
  return cl;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return false;  // a continuation byte, 0xC0/0xC1 (overlong) or 0xF5-0xFF
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

bool has_control(std::string_view s, bool utf8) {
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = s[i];
    if (c < 0x20 || c == 0x7F) return true;
    if (utf8 && c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0x9F &&
        static_cast<unsigned char>(s[i + 1]) >= 0x80)
      return true;
  }
  return false;
}

bool xtext_decode(std::string_view s, std::string& out) {
  if (!valid_xtext(s)) return false;
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '+') {
      out.push_back(s[i]);
      continue;
    }
    auto hex = [](char h) { return std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::toupper(h) - 'A' + 10); };
    out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
    i += 2;
  }
  return true;
}

bool valid_xtext(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = s[i];
    if (c == '+') {
      if (i + 2 >= s.size()) return false;
      if (!std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
        return false;
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

namespace {

// ESMTP parameters after the path: space separated "KEY" or "KEY=VALUE".
void parse_params(std::string_view rest, PathParse& r) {
  while (!rest.empty()) {
    if (rest.front() != ' ') {
      r.error = PathError::kSyntax;
      return;
    }
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (rest.empty()) break;
    size_t end = rest.find(' ');
    std::string_view tok = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    Param p;
    size_t eq = tok.find('=');
    p.key = upper(tok.substr(0, eq));
    if (eq != std::string_view::npos) {
      p.value = std::string(tok.substr(eq + 1));
      p.has_value = true;
    }
    if (p.key.empty()) {
      r.params_ok = false;
      continue;
    }
    for (auto& q : r.params)
      if (q.key == p.key) r.params_ok = false;  // duplicate
    r.params.push_back(std::move(p));
  }
}

}  // namespace

PathParse parse_path_arg(std::string_view arg, std::string_view prefix, bool allow_utf8) {
  PathParse r;
  // "FROM:" then optional spaces then "<".
  if (arg.size() < prefix.size() + 1 || !iequals(arg.substr(0, prefix.size()), prefix) ||
      arg[prefix.size()] != ':') {
    r.error = PathError::kSyntax;
    return r;
  }
  std::string_view s = arg.substr(prefix.size() + 1);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  if (s.empty() || s.front() != '<') {
    r.error = PathError::kSyntax;
    return r;
  }
  // Find the closing '>' outside a quoted string.
  size_t i = 1;
  bool in_quote = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (in_quote) {
      if (c == '\\') ++i;
      else if (c == '"') in_quote = false;
    } else if (c == '"') {
      in_quote = true;
    } else if (c == '>') {
      break;
    }
  }
  if (i >= s.size()) {
    r.error = PathError::kSyntax;
    return r;
  }
  std::string_view path = s.substr(1, i - 1);
  // The parameters first: a caller deciding on SMTPUTF8 sees them even when the path is bad.
  parse_params(s.substr(i + 1), r);
  if (r.error != PathError::kOk) return r;

  if (!path.empty()) {
    // Source route "@a,@b:" — allowed by RFC 5321, ignored, but remembered for relay policy.
    if (path.front() == '@') {
      size_t colon = path.find(':');
      if (colon == std::string_view::npos) {
        r.error = PathError::kSyntax;
        return r;
      }
      r.box.source_route = true;
      path = path.substr(colon + 1);
    }
    size_t at = std::string_view::npos;
    if (!path.empty() && path.front() == '"') {
      size_t q = 1;
      for (; q < path.size(); ++q) {
        unsigned char c = path[q];
        if (c == '\\') {  // quoted-pairSMTP: a backslash and one printable ASCII character
          if (++q >= path.size()) break;
          unsigned char e = path[q];
          if (e < 32 || e > 126) {
            r.error = e >= 0x80 && !allow_utf8 ? PathError::kNonAscii : PathError::kSyntax;
            return r;
          }
          continue;
        }
        if (c == '"') break;
        if (c < 32 || c == 127 || (c >= 0x80 && !allow_utf8)) {
          r.error = c >= 0x80 ? PathError::kNonAscii : PathError::kSyntax;
          return r;
        }
      }
      if (q >= path.size() || q + 1 >= path.size() || path[q + 1] != '@') {
        // "<postmaster>"-like quoted without domain is not accepted.
        r.error = PathError::kSyntax;
        return r;
      }
      at = q + 1;
      r.box.quoted = true;
    } else {
      at = path.rfind('@');
    }
    if (at == std::string_view::npos) {
      if (iequals(path, "postmaster") && !r.box.source_route) {
        r.postmaster = true;
        r.box.local = "postmaster";
      } else {
        r.error = PathError::kSyntax;
        return r;
      }
    } else {
      std::string_view local = path.substr(0, at);
      std::string_view domain = path.substr(at + 1);
      if (local.size() > 64 * 4 || domain.empty()) {
        r.error = PathError::kSyntax;
        return r;
      }
      if (has_non_ascii(path) && !allow_utf8) {
        r.error = PathError::kNonAscii;
        return r;
      }
      if (!valid_utf8(path)) {
        r.error = PathError::kBadUtf8;
        return r;
      }
      if (has_control(path, true)) {
        r.error = PathError::kSyntax;
        return r;
      }
      if (!r.box.quoted && !valid_dot_string(local, allow_utf8)) {
        r.error = PathError::kSyntax;
        return r;
      }
      if (domain.back() == '.') domain.remove_suffix(1);
      if (!valid_domain(domain, allow_utf8)) {
        r.error = PathError::kSyntax;
        return r;
      }
      r.box.local = std::string(local);
      r.box.domain = lower(domain);
      r.box.non_ascii = has_non_ascii(path);
    }
  } else {
    if (r.box.source_route) {
      r.error = PathError::kSyntax;
      return r;
    }
    r.null_path = true;
  }

  return r;
}

}  // namespace postern::smtp
