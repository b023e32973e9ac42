#include "mta/client/mime_downgrade.h"

#include "base/text.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace postern::smtp {
namespace {

constexpr int kMaxDepth = 32;

std::string lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// One header field: its raw text (continuation lines and the final CRLF included), its name.
struct Field {
  std::string_view raw;
  std::string name;  // lower case
  std::string_view value() const {
    auto colon = raw.find(':');
    return colon == std::string_view::npos ? std::string_view() : raw.substr(colon + 1);
  }
};

// Splits an entity into header fields and body. `body_at` is where the body starts (after the
// empty line), or npos when there is no empty line (a header-only entity).
std::vector<Field> parse_header(std::string_view e, size_t& body_at) {
  std::vector<Field> fields;
  size_t pos = 0;
  body_at = std::string_view::npos;
  while (pos < e.size()) {
    if (e.compare(pos, 2, "\r\n") == 0) {
      body_at = pos + 2;
      return fields;
    }
    size_t end = pos;
    for (;;) {  // this line and its continuations
      size_t lf = e.find('\n', end);
      end = lf == std::string_view::npos ? e.size() : lf + 1;
      if (end >= e.size() || (e[end] != ' ' && e[end] != '\t')) break;
    }
    std::string_view raw = e.substr(pos, end - pos);
    auto colon = raw.find(':');
    fields.push_back({raw, lower(trim(raw.substr(0, colon == std::string_view::npos ? 0 : colon)))});
    pos = end;
  }
  return fields;
}

const Field* find(const std::vector<Field>& fs, std::string_view name) {
  for (auto& f : fs)
    if (f.name == name) return &f;
  return nullptr;
}

// Content-Type "type/subtype" (lower case, without parameters) and its boundary parameter.
std::string media_type(const Field* ct, std::string* boundary) {
  if (!ct) return "";
  std::string_view v = ct->value();
  auto semi = v.find(';');
  std::string type = lower(trim(v.substr(0, semi)));
  // Unfold: a boundary may sit on a continuation line.
  type.erase(std::remove_if(type.begin(), type.end(), [](char c) { return c == ' ' || c == '\t'; }), type.end());
  if (boundary && semi != std::string_view::npos) {
    std::string_view params = v.substr(semi);
    std::string lp = lower(params);
    size_t at = 0;
    while ((at = lp.find("boundary", at)) != std::string::npos) {
      bool starts = at == 0 || lp[at - 1] == ';' || lp[at - 1] == ' ' || lp[at - 1] == '\t' || lp[at - 1] == '\n';
      size_t eq = at + 8;
      while (eq < lp.size() && (lp[eq] == ' ' || lp[eq] == '\t')) ++eq;
      if (!starts || eq >= lp.size() || lp[eq] != '=') {
        at += 8;
        continue;
      }
      size_t p = eq + 1;
      while (p < params.size() && (params[p] == ' ' || params[p] == '\t')) ++p;
      if (p < params.size() && params[p] == '"') {
        size_t q = params.find('"', p + 1);
        if (q != std::string_view::npos) *boundary = std::string(params.substr(p + 1, q - p - 1));
      } else {
        size_t q = p;
        while (q < params.size() && params[q] != ';' && params[q] != ' ' && params[q] != '\t' &&
               params[q] != '\r' && params[q] != '\n')
          ++q;
        *boundary = std::string(params.substr(p, q - p));
      }
      break;
    }
  }
  return type;
}

std::string encoding(const std::vector<Field>& fs) {
  const Field* f = find(fs, "content-transfer-encoding");
  return f ? lower(trim(f->value())) : "";
}

// The header again, with Content-Transfer-Encoding set to `cte` (replaced where it was, else
// added at the end) and `extra` fields added at the end.
void write_header(const std::vector<Field>& fs, std::string_view cte, const std::string& extra, std::string& out) {
  bool done = false;
  for (auto& f : fs) {
    if (f.name == "content-transfer-encoding") {
      if (!done) out += "Content-Transfer-Encoding: " + std::string(cte) + "\r\n";
      done = true;  // a duplicate is dropped
      continue;
    }
    out += f.raw;
  }
  out += extra;
  if (!done) out += "Content-Transfer-Encoding: " + std::string(cte) + "\r\n";
}

bool convert(std::string_view e, bool top, bool digest_part, int depth, std::string& out);

// A multipart body: preamble, parts between "--boundary" lines, epilogue after "--boundary--".
bool convert_multipart(std::string_view body, const std::string& boundary, bool digest, int depth, std::string& out) {
  const std::string delim = "--" + boundary;
  size_t pos = 0;
  size_t part_start = std::string_view::npos;  // inside a part from here
  while (pos < body.size()) {
    size_t lf = body.find('\n', pos);
    size_t end = lf == std::string_view::npos ? body.size() : lf + 1;
    std::string_view line = body.substr(pos, end - pos);
    if (line.starts_with(delim)) {
      std::string_view rest = trim(line.substr(delim.size()));
      bool is_close = rest == "--";
      if (rest.empty() || is_close) {
        if (part_start == std::string_view::npos) {
          out.append(body.substr(0, pos));  // the preamble, as it was
        } else {
          // The CRLF before the delimiter belongs to the delimiter.
          size_t part_end = pos >= part_start + 2 && body.compare(pos - 2, 2, "\r\n") == 0 ? pos - 2 : pos;
          if (part_end < part_start) part_end = part_start;
          if (!convert(body.substr(part_start, part_end - part_start), false, digest, depth + 1, out)) return false;
          out.append(body.substr(part_end, pos - part_end));
        }
        out.append(line);
        part_start = end;
        if (is_close) {
          out.append(body.substr(end));  // the epilogue, as it was
          return true;
        }
      }
    }
    pos = end;
  }
  if (part_start == std::string_view::npos) {  // no delimiter at all: not really multipart
    out.append(body);
    return !has_8bit(body);
  }
  // Unclosed last part: convert what there is.
  return convert(body.substr(part_start), false, digest, depth + 1, out);
}

bool convert(std::string_view e, bool top, bool digest_part, int depth, std::string& out) {
  if (!has_8bit(e)) {
    out.append(e);
    return true;
  }
  if (depth > kMaxDepth) return false;
  size_t body_at = 0;
  auto fields = parse_header(e, body_at);
  std::string_view body = body_at == std::string_view::npos ? std::string_view() : e.substr(body_at);
  for (auto& f : fields)
    if (has_8bit(f.raw)) return false;  // 8-bit header fields need SMTPUTF8, not this
  if (!has_8bit(body)) {
    out.append(e);
    return true;
  }
  std::string boundary;
  const Field* ct = find(fields, "content-type");
  std::string type = media_type(ct, &boundary);
  if (type.empty()) type = digest_part ? "message/rfc822" : "text/plain";
  std::string cte = encoding(fields);
  bool mime = !top || find(fields, "mime-version") != nullptr;
  if (type.starts_with("multipart/") && !boundary.empty()) {
    write_header(fields, "7bit", "", out);
    out += "\r\n";
    return convert_multipart(body, boundary, type == "multipart/digest", depth, out);
  }
  if (type == "message/rfc822") {
    write_header(fields, "7bit", "", out);
    out += "\r\n";
    return convert(body, false, false, depth + 1, out);
  }
  if (cte == "quoted-printable" || cte == "base64") return false;  // 8-bit inside an encoding: malformed
  std::string extra;
  if (!mime) {
    extra += "MIME-Version: 1.0\r\n";
    if (!ct) extra += "Content-Type: text/plain; charset=unknown-8bit\r\n";
  }
  write_header(fields, "quoted-printable", extra, out);
  out += "\r\n";
  out += quoted_printable(body);
  return true;
}

}  // namespace

std::string quoted_printable(std::string_view body) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(body.size() + body.size() / 8 + 16);
  size_t col = 0;
  auto put = [&](std::string_view tok) {
    if (col + tok.size() > 75) {  // room for the soft break's "=" within 76
      out += "=\r\n";
      col = 0;
    }
    out += tok;
    col += tok.size();
  };
  for (size_t i = 0; i < body.size(); ++i) {
    auto c = static_cast<unsigned char>(body[i]);
    if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') {  // a hard line break
      out += "\r\n";
      col = 0;
      ++i;
      continue;
    }
    bool at_eol = i + 1 == body.size() || (body[i + 1] == '\r' && i + 2 < body.size() && body[i + 2] == '\n');
    char lit[1] = {static_cast<char>(c)};
    if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_eol)) {
      // A line of only "." is safe (dot-stuffing), but keep "From " from being mangled by
      // mbox-minded relays: encode an F at the start of a line.
      if (col == 0 && c == 'F' && body.substr(i, 5) == "From ") {
        put("=46");
        continue;
      }
      put(std::string_view(lit, 1));
    } else {
      char enc[3] = {'=', kHex[c >> 4], kHex[c & 15]};
      put(std::string_view(enc, 3));
    }
  }
  return out;
}

bool downgrade_to_7bit(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size() + in.size() / 4);
  return convert(in, true, false, 0, out) && !has_8bit(out);  // 8-bit left in a preamble, say
}

}  // namespace postern::smtp
