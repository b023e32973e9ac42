#include <gtest/gtest.h>

#include <random>

#include "base/text.h"
#include "mta/client/mime_downgrade.h"

using namespace postern::smtp;
using postern::has_8bit;

namespace {
std::string down(const std::string& in) {
  std::string out;
  EXPECT_TRUE(downgrade_to_7bit(in, out)) << in;
  EXPECT_FALSE(has_8bit(out)) << out;
  return out;
}
}  // namespace

TEST(QuotedPrintable, EncodesWhatMustBeEncoded) {
  EXPECT_EQ(quoted_printable("caf\xc3\xa9 = ok\r\n"), "caf=C3=A9 =3D ok\r\n");
  EXPECT_EQ(quoted_printable("trailing space \r\ntab\t\r\n"), "trailing space=20\r\ntab=09\r\n");
  EXPECT_EQ(quoted_printable("From here\r\n.dot\r\n"), "=46rom here\r\n.dot\r\n");
  EXPECT_EQ(quoted_printable("bare\rCR\nLF\r\n"), "bare=0DCR=0ALF\r\n");
  EXPECT_EQ(quoted_printable("end "), "end=20");
}

TEST(QuotedPrintable, SoftBreaksKeepLinesShort) {
  std::string long_line(200, 'a');
  long_line += "\xc3\xa9\r\n";
  std::string qp = quoted_printable(long_line);
  size_t start = 0;
  std::string joined;
  while (start < qp.size()) {
    size_t end = qp.find("\r\n", start);
    std::string line = qp.substr(start, end - start);
    EXPECT_LE(line.size(), 76u) << line;
    if (!line.empty() && line.back() == '=') line.pop_back();
    joined += line;
    start = end + 2;
  }
  EXPECT_EQ(joined, std::string(200, 'a') + "=C3=A9");
}

TEST(MimeDowngrade, SevenBitMessagesAreUntouched) {
  std::string m = "Received: x\r\nSubject: s\r\n\r\nplain\r\n";
  EXPECT_EQ(down(m), m);
}

TEST(MimeDowngrade, NonMimeMessageBecomesQuotedPrintableText) {
  std::string out = down("Received: by mx\r\nSubject: s\r\n\r\ncaf\xc3\xa9\r\n");
  EXPECT_EQ(out,
            "Received: by mx\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n"
            "\r\ncaf=C3=A9\r\n");
}

TEST(MimeDowngrade, EightBitLeafKeepsItsContentTypeAndGetsNewEncoding) {
  std::string out = down(
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\nX-After: kept\r\n\r\nna\xc3\xafve\r\n");
  EXPECT_EQ(out,
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\nX-After: kept\r\n\r\nna=C3=AFve\r\n");
}

TEST(MimeDowngrade, MultipartConvertsOnlyEightBitParts) {
  std::string in =
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n\r\n"
      "preamble\r\n"
      "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"
      "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
      "--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner \xc3\xa9\r\n"
      "--b1--\r\nepilogue\r\n";
  std::string out = down(in);
  EXPECT_NE(out.find("Content-Type: multipart/mixed;\r\n boundary=\"b1\"\r\nContent-Transfer-Encoding: 7bit\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
                     "\r\n\r\n=C3=A9t=C3=A9\r\n--b1\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b1\r\n"), std::string::npos) << out;
  // The embedded message is converted too (its body gets quoted-printable).
  EXPECT_NE(out.find("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: inner\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("inner =C3=A9\r\n--b1--\r\nepilogue\r\n"), std::string::npos) << out;
  EXPECT_TRUE(out.starts_with("MIME-Version: 1.0\r\n")) << out;
  EXPECT_NE(out.find("\r\n\r\npreamble\r\n--b1\r\n"), std::string::npos) << out;
}

TEST(MimeDowngrade, WhatCannotBeConvertedIsRefused) {
  std::string out;
  EXPECT_FALSE(downgrade_to_7bit("Subject: caf\xc3\xa9\r\n\r\nbody \xc3\xa9\r\n", out));  // 8-bit header
  EXPECT_FALSE(downgrade_to_7bit(
      "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\xfe\r\n", out));  // 8-bit in base64
  std::string deep;
  for (int i = 0; i < 40; ++i) deep += "Content-Type: message/rfc822\r\n\r\n";
  deep += "\r\n\xc3\xa9\r\n";
  EXPECT_FALSE(downgrade_to_7bit("MIME-Version: 1.0\r\n" + deep, out));
}

namespace {
// RFC 2045 decoding, for checking the encoder.
std::string qp_decode(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '=' && i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') {
      i += 2;  // soft line break
    } else if (in[i] == '=' && i + 2 < in.size()) {
      out.push_back(static_cast<char>(std::stoi(in.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}
}  // namespace

TEST(QuotedPrintable, RandomBodiesRoundTrip) {
  std::mt19937 rng(20261122);
  const char pieces[] = {'a', ' ', '\t', '=', '.', 'F', '\r', '\n', '\x80', '\xff', '\xc3', '\xa9', 'z'};
  for (int n = 0; n < 2000; ++n) {
    std::string body;
    size_t len = rng() % 300;
    for (size_t i = 0; i < len; ++i) {
      if (rng() % 12 == 0) {
        body += "\r\n";
      } else {
        body.push_back(pieces[rng() % sizeof pieces]);
      }
    }
    std::string qp = quoted_printable(body);
    ASSERT_FALSE(has_8bit(qp));
    for (size_t start = 0; start < qp.size();) {  // every line at most 76, no bare CR or LF
      size_t end = qp.find("\r\n", start);
      if (end == std::string::npos) end = qp.size();
      ASSERT_LE(end - start, 76u);
      ASSERT_EQ(qp.substr(start, end - start).find_first_of("\r\n"), std::string::npos);
      if (end > start) {
        ASSERT_NE(qp[end - 1], ' ') << "trailing space";
      }
      start = end + 2;
    }
    ASSERT_EQ(qp_decode(qp), body) << n;
  }
}

TEST(MimeDowngrade, RandomStructuresNeverCrashAndStay7BitWhenAccepted) {
  std::mt19937 rng(7);
  const std::vector<std::string> parts = {
      "Content-Type: text/plain; charset=utf-8\r\n", "Content-Transfer-Encoding: 8bit\r\n",
      "Content-Transfer-Encoding: base64\r\n", "Content-Type: multipart/mixed; boundary=zz\r\n",
      "Content-Type: message/rfc822\r\n", "MIME-Version: 1.0\r\n", "\r\n", "--zz\r\n", "--zz--\r\n",
      "caf\xc3\xa9\r\n", "plain line\r\n", "\xff", "=", " \r\n", "X-H: v\r\n\tfolded\r\n"};
  for (int n = 0; n < 3000; ++n) {
    std::string msg = "Received: by mx\r\n";
    size_t k = 1 + rng() % 25;
    for (size_t i = 0; i < k; ++i) msg += parts[rng() % parts.size()];
    std::string out;
    if (downgrade_to_7bit(msg, out)) {
      ASSERT_FALSE(has_8bit(out)) << msg;
      std::string again;
      ASSERT_TRUE(downgrade_to_7bit(out, again));
      ASSERT_EQ(again, out);  // 7-bit input passes unchanged
    }
  }
}
