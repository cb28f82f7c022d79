// mime::downgrade_to_7bit: conversions checked by decoding them back, refusals by status.
#include "ringmta/mime/downgrade.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace ringmta::mime {
namespace {

// RFC 2045 §6.7 decoding, the inverse the tests hold the encoder to.
std::string decode_qp(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '=') {
      out += text[i];
    } else if (text.substr(i + 1, 2) == "\r\n") {
      i += 2;  // soft line break
    } else {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    }
  }
  return out;
}

bool all_7bit(std::string_view text) {
  return std::none_of(text.begin(), text.end(),
                      [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

std::size_t longest_line(std::string_view text) {
  std::size_t longest = 0, start = 0;
  for (std::size_t lf = text.find('\n'); lf != std::string_view::npos;
       start = lf + 1, lf = text.find('\n', start))
    longest = std::max(longest, lf - start + 1 - 2);  // without CRLF
  return longest;
}

std::string body_of(std::string_view message) {
  return std::string(message.substr(message.find("\r\n\r\n") + 4));
}

TEST(mime_downgrade, plain_message_gets_mime_headers_and_quoted_printable) {
  const std::string text = "Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbcnchen = sch\xc3\xb6n \r\nline two\t\r\n";
  std::string out;
  const auto result = downgrade_to_7bit("Subject: hi\r\nFrom: a@b.test\r\n\r\n" + text, out);
  ASSERT_EQ(result.status, downgrade_status::converted);
  EXPECT_FALSE(result.dkim_signed);
  EXPECT_TRUE(all_7bit(out));
  EXPECT_NE(out.find("Subject: hi\r\nFrom: a@b.test\r\nMIME-Version: 1.0\r\n"
                     "Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(decode_qp(body_of(out)), text);
  EXPECT_NE(out.find("sch=C3=B6n=20\r\n"), std::string::npos) << "trailing space encoded";
  EXPECT_NE(out.find("line two=09\r\n"), std::string::npos) << "trailing tab encoded";
  EXPECT_NE(out.find(" =3D "), std::string::npos) << "'=' encoded";
}

TEST(mime_downgrade, long_lines_break_softly_at_76_and_bare_line_ends_survive) {
  std::string line(300, 'x');
  for (std::size_t i = 0; i < line.size(); i += 7) line[i] = '\xe9';
  const std::string text = line + "\r\nbare\nlf and bare\rcr\r\n";
  std::string out;
  ASSERT_EQ(downgrade_to_7bit("Subject: s\r\n\r\n" + text, out).status,
            downgrade_status::converted);
  EXPECT_LE(longest_line(body_of(out)), qp_line_chars_max);
  EXPECT_EQ(decode_qp(body_of(out)), text);
  EXPECT_NE(out.find("bare=0Alf and bare=0Dcr"), std::string::npos) << out;
}

TEST(mime_downgrade, existing_folded_encoding_field_is_replaced) {
  std::string out;
  const auto result = downgrade_to_7bit(
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding:\r\n 8bit\r\nSubject: x\r\n\r\n\xc3\xa9t\xc3\xa9\r\n",
      out);
  ASSERT_EQ(result.status, downgrade_status::converted);
  EXPECT_EQ(out,
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\nSubject: x\r\n\r\n=C3=A9t=C3=A9\r\n");
}

TEST(mime_downgrade, multipart_converts_8bit_parts_and_keeps_encoded_ones) {
  const std::string message =
      "MIME-Version: 1.0\r\n"
      "Content-Type: multipart/mixed;\r\n boundary=\"=_outer b\"\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\n"
      "This is a multi-part message.\r\n"
      "--=_outer b\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\n"
      "caf\xc3\xa9\r\n"
      "--=_outer b\r\n"
      "Content-Type: application/octet-stream\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\n"
      "AAECAwQF\r\n"
      "--=_outer b  \r\n"
      "Content-Type: message/rfc822\r\n\r\n"
      "Subject: inner\r\n\r\n"
      "na\xc3\xafve\r\n"
      "--=_outer b--\r\n"
      "epilogue\r\n";
  std::string out;
  const auto result = downgrade_to_7bit(message, out);
  ASSERT_EQ(result.status, downgrade_status::converted);
  EXPECT_TRUE(all_7bit(out));
  EXPECT_NE(out.find("boundary=\"=_outer b\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                     "This is a multi-part message.\r\n--=_outer b\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
                     "--=_outer b\r\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("base64\r\n\r\nAAECAwQF\r\n--=_outer b  \r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                     "na=C3=AFve\r\n--=_outer b--\r\nepilogue\r\n"),
            std::string::npos)
      << out;
}

TEST(mime_downgrade, seven_bit_message_is_unchanged_and_signature_is_reported) {
  std::string out;
  const auto result = downgrade_to_7bit(
      "DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=s; b=x\r\nSubject: s\r\n\r\nascii\r\n",
      out);
  EXPECT_EQ(result.status, downgrade_status::unchanged);
  EXPECT_TRUE(result.dkim_signed);
  EXPECT_TRUE(out.empty());
  const auto signed_8bit =
      downgrade_to_7bit("dkim-signature: v=1\r\nSubject: s\r\n\r\n\xc3\xa9\r\n", out);
  EXPECT_EQ(signed_8bit.status, downgrade_status::converted);
  EXPECT_TRUE(signed_8bit.dkim_signed) << "the caller decides about a signed message";
}

TEST(mime_downgrade, refuses_what_no_encoding_can_carry) {
  struct refusal {
    const char* message;
    downgrade_status status;
  };
  const refusal cases[] = {
      {"Subject: caf\xc3\xa9\r\n\r\nbody\r\n", downgrade_status::eight_bit_header},
      {"Content-Transfer-Encoding: base64\r\n\r\n\xc3\xa9\r\n", downgrade_status::encoded_8bit},
      {"Content-Transfer-Encoding: Quoted-Printable\r\n\r\n\xc3\xa9\r\n",
       downgrade_status::encoded_8bit},
      {"Content-Transfer-Encoding: binary\r\n\r\n\xc3\xa9\r\n", downgrade_status::binary_part},
      {"Content-Type: message/global\r\n\r\nSubject: x\r\n\r\n\xc3\xa9\r\n",
       downgrade_status::unsupported},
      {"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\xc3\xa9\r\n--b\r\n\r\nx\r\n--b--\r\n",
       downgrade_status::unsupported},
      {"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n\xc3\xa9\r\n",
       downgrade_status::unsupported},
      {"Content-Type: multipart/mixed\r\n\r\n\xc3\xa9\r\n", downgrade_status::unsupported},
      {"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX-Part: \xc3\xa9\r\n\r\nx\r\n",
       downgrade_status::eight_bit_header},
  };
  for (const refusal& each : cases) {
    std::string out = "stale";
    const auto result = downgrade_to_7bit(each.message, out);
    EXPECT_EQ(result.status, each.status) << each.message;
    EXPECT_TRUE(out.empty()) << each.message;
    EXPECT_FALSE(describe(result.status).empty());
  }
}

TEST(mime_downgrade, nesting_is_bounded) {
  std::string message;
  for (int depth = 0; depth <= downgrade_depth_max + 1; ++depth)
    message += "Content-Type: message/rfc822\r\n\r\n";
  message += "Subject: deep\r\n\r\n\xc3\xa9\r\n";
  std::string out;
  EXPECT_EQ(downgrade_to_7bit(message, out).status, downgrade_status::too_deep);
}

TEST(mime_downgrade, digest_parts_default_to_messages_and_unclosed_multipart_runs_to_the_end) {
  std::string out;
  const auto result = downgrade_to_7bit(
      "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
      "Subject: one\r\n\r\n\xc3\xa9\r\n--d\r\n\r\nSubject: two\r\n\r\n\xc3\xa8\r\n",
      out);
  ASSERT_EQ(result.status, downgrade_status::converted);
  EXPECT_TRUE(all_7bit(out));
  EXPECT_NE(out.find("Subject: one\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("Subject: two\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A8"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace ringmta::mime
