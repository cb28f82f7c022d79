#include "ringmta/smtp/reply_parser.h"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace ringmta::smtp {
namespace {

struct parse_outcome {
  std::vector<std::uint16_t> codes;  // one per complete reply
  std::vector<std::string> texts;
  std::vector<reply_enhanced_code> enhanced;
  reply_parse_error error = reply_parse_error::none;
  bool mid_reply = false;
};

// Parses `bytes` fed in chunks of `chunk` bytes.
parse_outcome parse(std::string_view bytes, std::size_t chunk = 1 << 20,
                    std::uint16_t lines_max = reply_lines_max_default) {
  reply_parser parser(lines_max);
  parse_outcome out;
  while (!bytes.empty()) {
    std::string_view piece = bytes.substr(0, chunk);
    bytes.remove_prefix(piece.size());
    while (!piece.empty()) {
      const auto step = parser.feed(piece);
      piece.remove_prefix(step.consumed);
      if (step.what == reply_parser::status::failed) {
        out.error = parser.error();
        return out;
      }
      if (step.what == reply_parser::status::reply_done) {
        out.codes.push_back(parser.reply().code);
        out.texts.emplace_back(parser.reply().text());
        out.enhanced.push_back(parser.reply().enhanced);
      }
    }
  }
  out.mid_reply = parser.mid_reply();
  return out;
}

TEST(reply_parser, single_line_reply) {
  const auto out = parse("250 2.1.0 Ok sender\r\n");
  ASSERT_EQ(out.codes.size(), 1u);
  EXPECT_EQ(out.codes[0], 250);
  EXPECT_EQ(out.texts[0], "Ok sender");
  EXPECT_EQ(out.enhanced[0], (reply_enhanced_code{2, 1, 0}));
  EXPECT_FALSE(out.mid_reply);
}

TEST(reply_parser, code_without_text_and_empty_text) {
  const auto out = parse("250\r\n354 \r\n221-\r\n221 bye\r\n");
  ASSERT_EQ(out.codes, (std::vector<std::uint16_t>{250, 354, 221}));
  EXPECT_EQ(out.texts[0], "");
  EXPECT_EQ(out.texts[1], "");
  EXPECT_EQ(out.texts[2], "\nbye");
}

TEST(reply_parser, multi_line_reply_joins_text_and_strips_enhanced_codes) {
  const std::string bytes =
      "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
      "550-5.1.1 Please try double-checking the address\r\n"
      "550 5.1.1 for typos.\r\n";
  const auto out = parse(bytes);
  ASSERT_EQ(out.codes.size(), 1u);
  EXPECT_EQ(out.codes[0], 550);
  EXPECT_EQ(out.enhanced[0], (reply_enhanced_code{5, 1, 1}));
  EXPECT_EQ(out.texts[0],
            "The email account that you tried to reach does not exist.\n"
            "Please try double-checking the address\nfor typos.");
}

// Issue 17 item 8: logs got "550 5.7.1  blocked" (two spaces) from a first line with only
// the code; one_line_text() joins with one space and skips empty lines.
TEST(reply_parser, one_line_text_for_logs) {
  reply_parser parser(reply_lines_max_default);
  const std::string bytes = "550-5.7.1\r\n550-5.7.1 blocked \r\n550 5.7.1  see the FAQ\r\n";
  std::string_view rest = bytes;
  while (!rest.empty()) {
    const auto step = parser.feed(rest);
    rest.remove_prefix(step.consumed);
    ASSERT_NE(step.what, reply_parser::status::failed);
    if (step.what == reply_parser::status::reply_done) break;
  }
  EXPECT_EQ(parser.reply().text(), "\nblocked \n see the FAQ");  // as received, lines by LF
  EXPECT_EQ(parser.reply().one_line_text(), "blocked see the FAQ");
}

TEST(reply_parser, every_split_parses_like_the_whole) {
  const std::string bytes =
      "220-mx.example ESMTP\r\n220 2.0.0 ready\r\n"
      "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
      "451 4.3.0 try again\r\n";
  const auto whole = parse(bytes);
  ASSERT_EQ(whole.codes, (std::vector<std::uint16_t>{220, 250, 451}));
  for (std::size_t chunk = 1; chunk <= bytes.size(); ++chunk) {
    const auto split = parse(bytes, chunk);
    EXPECT_EQ(split.codes, whole.codes) << "chunk " << chunk;
    EXPECT_EQ(split.texts, whole.texts) << "chunk " << chunk;
    EXPECT_EQ(split.enhanced, whole.enhanced) << "chunk " << chunk;
  }
  // Two-piece splits at every byte as well.
  for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
    reply_parser parser;
    std::vector<std::uint16_t> codes;
    for (std::string_view piece : {std::string_view(bytes).substr(0, cut),
                                   std::string_view(bytes).substr(cut)}) {
      while (!piece.empty()) {
        const auto step = parser.feed(piece);
        piece.remove_prefix(step.consumed);
        ASSERT_NE(step.what, reply_parser::status::failed);
        if (step.what == reply_parser::status::reply_done) codes.push_back(parser.reply().code);
      }
    }
    EXPECT_EQ(codes, whole.codes) << "cut " << cut;
  }
}

TEST(reply_parser, enhanced_code_of_another_class_stays_text) {
  const auto out = parse("550 4.1.1 odd\r\n");
  ASSERT_EQ(out.codes.size(), 1u);
  EXPECT_FALSE(out.enhanced[0].present());
  EXPECT_EQ(out.texts[0], "4.1.1 odd");
}

TEST(reply_parser, enhanced_code_syntax) {
  reply_enhanced_code code;
  EXPECT_EQ(parse_enhanced_code("5.7.1 denied", code), 5u);
  EXPECT_EQ(code, (reply_enhanced_code{5, 7, 1}));
  EXPECT_EQ(parse_enhanced_code("4.123.999", code), 9u);
  EXPECT_EQ(code, (reply_enhanced_code{4, 123, 999}));
  EXPECT_EQ(parse_enhanced_code("5.1234.1 x", code), 0u);  // subject has at most 3 digits
  EXPECT_EQ(parse_enhanced_code("3.1.1 x", code), 0u);     // class is 2, 4 or 5
  EXPECT_EQ(parse_enhanced_code("5.1.1x", code), 0u);      // must end at SP or the end
  EXPECT_EQ(parse_enhanced_code("5..1 x", code), 0u);
  EXPECT_EQ(parse_enhanced_code("5.1.", code), 0u);
}

TEST(reply_parser, malformed_replies_are_errors) {
  EXPECT_EQ(parse("250 ok\n").error, reply_parse_error::bare_lf);
  EXPECT_EQ(parse("250 o\rk\r\n").error, reply_parse_error::bare_cr);
  EXPECT_EQ(parse(std::string_view("250 o\0k\r\n", 9)).error, reply_parse_error::nul_byte);
  EXPECT_EQ(parse("25 ok\r\n").error, reply_parse_error::bad_code);
  EXPECT_EQ(parse("150 ok\r\n").error, reply_parse_error::bad_code);
  EXPECT_EQ(parse("260 ok\r\n").error, reply_parse_error::bad_code);
  EXPECT_EQ(parse("2x0 ok\r\n").error, reply_parse_error::bad_code);
  EXPECT_EQ(parse("\r\n").error, reply_parse_error::bad_code);
  EXPECT_EQ(parse("250_ok\r\n").error, reply_parse_error::bad_separator);
  EXPECT_EQ(parse("250-a\r\n251 b\r\n").error, reply_parse_error::code_mismatch);
  EXPECT_EQ(parse("250-a\r\n250-b\r\n250 c\r\n", 1 << 20, 2).error,
            reply_parse_error::too_many_lines);
}

TEST(reply_parser, line_limit_is_512_bytes_with_crlf) {
  const std::string fits = "250 " + std::string(reply_line_bytes_max - 6, 'a') + "\r\n";
  ASSERT_EQ(fits.size(), reply_line_bytes_max);
  EXPECT_EQ(parse(fits).codes.size(), 1u);
  const std::string too_long = "250 " + std::string(reply_line_bytes_max - 5, 'a') + "\r\n";
  EXPECT_EQ(parse(too_long).error, reply_parse_error::line_too_long);
  // Without any LF the parser stops at the limit instead of buffering forever.
  EXPECT_EQ(parse(std::string(100000, 'x'), 7).error, reply_parse_error::line_too_long);
}

TEST(reply_parser, long_multi_line_text_is_truncated_and_flagged) {
  std::string bytes;
  for (int i = 0; i < 20; ++i) bytes += "550-" + std::string(100, 'x') + "\r\n";
  bytes += "550 end\r\n";
  reply_parser parser;
  std::string_view rest = bytes;
  reply_parser::status last = reply_parser::status::need_more;
  while (!rest.empty()) {
    const auto step = parser.feed(rest);
    rest.remove_prefix(step.consumed);
    last = step.what;
  }
  ASSERT_EQ(last, reply_parser::status::reply_done);
  EXPECT_TRUE(parser.reply().text_truncated);
  EXPECT_EQ(parser.reply().text().size(), reply_text_bytes_max);
  EXPECT_EQ(parser.reply().line_count, 21);
}

TEST(reply_parser, stays_failed_until_reset_and_reports_mid_reply) {
  reply_parser parser;
  auto step = parser.feed("250-partial\r\n250 la");
  EXPECT_EQ(step.what, reply_parser::status::line_done);
  EXPECT_EQ(parser.line_text(), "partial");
  step = parser.feed("250 la");
  EXPECT_EQ(step.what, reply_parser::status::need_more);
  EXPECT_TRUE(parser.mid_reply());
  step = parser.feed("\n");
  EXPECT_EQ(step.what, reply_parser::status::failed);
  EXPECT_EQ(parser.feed("250 ok\r\n").what, reply_parser::status::failed);
  parser.reset();
  EXPECT_EQ(parser.feed("250 ok\r\n").what, reply_parser::status::reply_done);
  EXPECT_FALSE(parser.mid_reply());
}

TEST(reply_parser, describes_every_error) {
  for (int e = 0; e <= static_cast<int>(reply_parse_error::nul_byte); ++e) {
    EXPECT_FALSE(describe(static_cast<reply_parse_error>(e)).empty());
  }
}

}  // namespace
}  // namespace ringmta::smtp
