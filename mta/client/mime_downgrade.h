// mime_downgrade.h — 8-bit to 7-bit MIME conversion (RFC 6152 section 3, RFC 2045), for a
// message with 8-bit content going to a server that does not offer 8BITMIME.
//
// Every MIME leaf part whose body holds 8-bit bytes and whose Content-Transfer-Encoding is
// 7bit/8bit/binary or absent is re-encoded as quoted-printable and its Content-Transfer-Encoding
// header rewritten; multipart bodies are walked part by part along their boundaries, and
// message/rfc822 parts are converted recursively; a message without MIME headers becomes a
// text/plain (charset unknown-8bit, RFC 1428) quoted-printable MIME message. Parts without
// 8-bit bytes, and header fields, are left byte for byte as they were.
#pragma once

#include <string>
#include <string_view>

namespace postern::smtp {

// Converts `in` (a whole message, CRLF line ends) into `out`. False if the result would still
// hold 8-bit bytes in a body (8-bit header fields, a malformed part, nesting deeper than 32):
// such a message cannot be sent to a 7-bit server.
bool downgrade_to_7bit(std::string_view in, std::string& out);

// Quoted-printable (RFC 2045 section 6.7) of a body with CRLF line ends; lines at most 76 chars.
std::string quoted_printable(std::string_view body);

}  // namespace postern::smtp
