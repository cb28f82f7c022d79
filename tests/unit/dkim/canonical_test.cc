// DKIM canonicalization: RFC 6376 §3.4.5's examples, the body canonicalizer fed in every
// split, stuffing dots, the end-of-body rules, header selection and the From: domain.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ringmta/dkim/canonical.h"
#include "ringmta/dkim/signature.h"

namespace ringmta::dkim {
namespace {

struct string_sink final : byte_sink {
  std::string bytes;
  void update(std::string_view piece) noexcept override { bytes.append(piece); }
};

std::string body(canonicalization mode, std::string_view input, bool stuffed = false) {
  body_canonicalizer canon;
  canon.reset(mode, stuffed);
  string_sink out;
  canon.feed(input, out);
  canon.finish(out);
  return out.bytes;
}

std::string headers(canonicalization mode, std::string_view block) {
  std::string out;
  for_each_field(block, [&](const header_field& f) { canonicalize_header(mode, f, out); });
  return out;
}

// RFC 6376 §3.4.5.
constexpr std::string_view example_headers = "A: X\r\nB : Y\t\r\n\tZ  \r\n";
constexpr std::string_view example_body = " C \r\nD \t E\r\n\r\n\r\n";

TEST(dkim_canonical, rfc6376_example_relaxed) {
  EXPECT_EQ(headers(canonicalization::relaxed, example_headers), "a:X\r\nb:Y Z\r\n");
  EXPECT_EQ(body(canonicalization::relaxed, example_body), " C\r\nD E\r\n");
}

TEST(dkim_canonical, rfc6376_example_simple) {
  EXPECT_EQ(headers(canonicalization::simple, example_headers), example_headers);
  EXPECT_EQ(body(canonicalization::simple, example_body), " C \r\nD \t E\r\n");
}

TEST(dkim_canonical, end_of_body_rules) {
  // §3.4.3: an empty body is CRLF; §3.4.4 (errata 1384 reading): it stays empty.
  EXPECT_EQ(body(canonicalization::simple, ""), "\r\n");
  EXPECT_EQ(body(canonicalization::relaxed, ""), "");
  EXPECT_EQ(body(canonicalization::simple, "\r\n\r\n"), "\r\n");
  EXPECT_EQ(body(canonicalization::relaxed, "\r\n  \r\n\t\r\n"), "");
  // A last line without CRLF (BDAT can send it) gets one.
  EXPECT_EQ(body(canonicalization::simple, "a\r\nb"), "a\r\nb\r\n");
  EXPECT_EQ(body(canonicalization::relaxed, "a\r\nb  "), "a\r\nb\r\n");
  // Empty lines in the middle stay; only trailing ones go.
  EXPECT_EQ(body(canonicalization::relaxed, "a\r\n\r\n\r\nb\r\n\r\n"), "a\r\n\r\n\r\nb\r\n");
  std::string many = "a\r\n";
  for (int i = 0; i < 40; ++i) many += "\r\n";
  EXPECT_EQ(body(canonicalization::simple, many + "b\r\n"), many + "b\r\n");
  // Leading WSP becomes one SP, trailing WSP goes (relaxed).
  EXPECT_EQ(body(canonicalization::relaxed, "\t\t x  y \t\r\n"), " x y\r\n");
}

TEST(dkim_canonical, stuffing_dots_are_not_hashed) {
  // DATA wire form: every line starting with "." carries one more.
  EXPECT_EQ(body(canonicalization::simple, "..a\r\n.\r\nb.\r\n...\r\n", true),
            ".a\r\n\r\nb.\r\n..\r\n");
  EXPECT_EQ(body(canonicalization::relaxed, "..  a\r\n", true), ". a\r\n");
  EXPECT_EQ(body(canonicalization::simple, "..a\r\n", false), "..a\r\n");
}

TEST(dkim_canonical, bare_line_endings_are_counted) {
  for (const auto mode : {canonicalization::simple, canonicalization::relaxed}) {
    for (const std::string_view input : {"a\nb\r\n", "a\rb\r\n", "a\r", "a\r\n\n"}) {
      body_canonicalizer canon;
      canon.reset(mode, false);
      string_sink out;
      canon.feed(input, out);
      canon.finish(out);
      EXPECT_GT(canon.bare_line_endings(), 0u) << input;
    }
  }
}

// Every split of the input into two or three pieces gives the one-piece result.
TEST(dkim_canonical, any_split_gives_the_same_bytes) {
  const std::string input =
      "..lead dot\r\n  spaces  and\t\ttabs \t \r\n\r\nplain line with single spaces\r\n"
      "x  \r\n \r\n.\r\n\r\n\r\ntail  end  ";
  for (const auto mode : {canonicalization::simple, canonicalization::relaxed}) {
    for (const bool stuffed : {false, true}) {
      const std::string whole = body(mode, input, stuffed);
      for (std::size_t i = 0; i <= input.size(); ++i) {
        for (std::size_t j = i; j <= input.size(); j += 3) {
          body_canonicalizer canon;
          canon.reset(mode, stuffed);
          string_sink out;
          canon.feed(std::string_view(input).substr(0, i), out);
          canon.feed(std::string_view(input).substr(i, j - i), out);
          canon.feed(std::string_view(input).substr(j), out);
          canon.finish(out);
          ASSERT_EQ(out.bytes, whole) << name_of(mode) << " split at " << i << "," << j;
        }
      }
    }
  }
}

// Long runs cross the 16-octet vector steps: compare with a plain reference.
TEST(dkim_canonical, relaxed_matches_a_reference_on_random_lines) {
  std::uint32_t state = 7;
  auto next = [&] { return state = state * 1103515245u + 12345u, (state >> 16) & 0x7fff; };
  for (int round = 0; round < 200; ++round) {
    std::string input;
    const int lines = static_cast<int>(next() % 12);
    for (int l = 0; l < lines; ++l) {
      const int length = static_cast<int>(next() % 90);
      for (int c = 0; c < length; ++c) {
        const unsigned pick = next() % 10;
        input += pick < 2 ? ' ' : pick == 2 ? '\t' : static_cast<char>('a' + next() % 26);
      }
      input += "\r\n";
    }
    std::string expected;  // RFC 6376 §3.4.4 spelled out line by line
    std::size_t at = 0;
    std::vector<std::string> out_lines;
    while (at < input.size()) {
      const std::size_t end = input.find("\r\n", at);
      std::string line;
      bool space = false;
      for (std::size_t i = at; i < end; ++i) {
        if (input[i] == ' ' || input[i] == '\t') {
          space = true;
          continue;
        }
        if (space) line += ' ';
        space = false;
        line += input[i];
      }
      out_lines.push_back(line);
      at = end + 2;
    }
    while (!out_lines.empty() && out_lines.back().empty()) out_lines.pop_back();
    for (const auto& line : out_lines) expected += line + "\r\n";
    ASSERT_EQ(body(canonicalization::relaxed, input), expected) << input;
  }
}

TEST(dkim_canonical, fields_split_with_folding) {
  std::vector<std::string> names;
  const std::size_t count = for_each_field(
      " stray\r\nFrom: a\r\n  b\r\nSubject : x\r\nno colon line\r\nTo: z",
      [&](const header_field& f) { names.emplace_back(f.name); });
  EXPECT_EQ(count, 5u);
  EXPECT_EQ(names, (std::vector<std::string>{"", "From", "Subject", "", "To"}));
}

TEST(dkim_canonical, from_domain) {
  EXPECT_EQ(from_domain("From: Joe <joe@Football.Example.COM>\r\n"), "football.example.com");
  EXPECT_EQ(from_domain("From: joe@example.org\r\n"), "example.org");
  EXPECT_EQ(from_domain("From: \"x@evil.test\" <joe@good.test>\r\n"), "good.test");
  EXPECT_EQ(from_domain("From: (comment @evil.test) joe@good.test (more)\r\n"), "good.test");
  EXPECT_EQ(from_domain("From: Joe\r\n <joe@folded.test>\r\n"), "folded.test");
  EXPECT_EQ(from_domain("From: a@first.test, b@second.test\r\n"), "first.test");
  EXPECT_EQ(from_domain("From: joe@[192.0.2.1]\r\n"), "");
  EXPECT_EQ(from_domain("From: nobody\r\n"), "");
  EXPECT_EQ(from_domain("From: <joe@example.com.>\r\n"), "example.com");
}

TEST(dkim_signature, header_selection_oversigns_and_picks_from_the_bottom) {
  const std::string block =
      "Received: r\r\nFrom: a@x.test\r\nSubject: one\r\nTo: t@y.test\r\nSubject: two\r\n";
  std::vector<header_field> fields;
  for_each_field(block, [&](const header_field& f) { fields.push_back(f); });
  const std::vector<std::string> names = {"from", "subject", "to", "cc", "date"};
  const std::vector<std::string> over = {"from", "subject", "cc"};
  const std::string h = select_headers(fields, names, over);
  EXPECT_EQ(h, "from:from:subject:subject:subject:to:cc");
  std::string hashed;
  append_signed_headers(canonicalization::relaxed, fields, h, hashed);
  // subject listed first takes the bottom-most Subject (§5.4.2).
  EXPECT_EQ(hashed, "from:a@x.test\r\nsubject:two\r\nsubject:one\r\nto:t@y.test\r\n");
}

TEST(dkim_signature, field_is_folded_and_has_no_length_tag) {
  std::string h;
  for (int i = 0; i < 30; ++i) h += (i ? ":" : "") + std::string("list-unsubscribe-post");
  signature_tags tags;
  tags.algorithm = "rsa-sha256";
  tags.domain = "example.com";
  tags.selector = "s2024";
  tags.timestamp = 1700000000;
  tags.expire = 1700086400;
  tags.headers = h;
  tags.body_hash = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  std::string field;
  format_signature_field(tags, field);
  const std::vector<unsigned char> signature(512, 0xab);  // RSA-4096 sized
  append_signature_value(signature, field);
  ASSERT_GE(field.size(), 2u);
  EXPECT_EQ(field.substr(field.size() - 2), "\r\n");
  EXPECT_EQ(field.find(" l="), std::string::npos);
  EXPECT_NE(field.find("t=1700000000;"), std::string::npos);
  EXPECT_NE(field.find("x=1700086400;"), std::string::npos);
  std::size_t at = 0;
  while (at < field.size()) {
    const std::size_t end = field.find("\r\n", at);
    EXPECT_LE(end - at, 78u) << field.substr(at, end - at);
    if (at > 0) {
      EXPECT_EQ(field[at], '\t');  // every continuation line is folded WSP
    }
    at = end + 2;
  }
  std::string decoded;
  const std::size_t b = field.find("b=", field.find("bh=") + 3);
  ASSERT_TRUE(decode_base64(std::string_view(field).substr(b + 2), decoded));
  EXPECT_EQ(decoded, std::string(signature.begin(), signature.end()));
}

}  // namespace
}  // namespace ringmta::dkim
