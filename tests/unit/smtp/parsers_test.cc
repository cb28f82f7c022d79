// Address, xtext, UTF-8 and DATA scanner unit tests.
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "ringmta/smtp/address.h"
#include "ringmta/smtp/data_scanner.h"
#include "ringmta/smtp/parameters.h"

namespace ringmta::smtp {
namespace {

TEST(address, ipv6_literals_follow_rfc5321_section_4_1_3) {
  for (const char* good : {"[IPv6:::1]", "[IPv6:1:2:3:4:5:6:7:8]", "[IPv6:1::8]",
                           "[IPv6:1:2:3:4:5:6::]", "[IPv6:::ffff:1.2.3.4]",
                           "[IPv6:1:2:3:4:5:6:1.2.3.4]", "[ipv6:fe80::1]", "[1.2.3.4]"}) {
    EXPECT_TRUE(is_address_literal(good)) << good;
  }
  for (const char* bad : {"[IPv6:1:2:3:4:5:6:7]", "[IPv6:1:2:3:4:5:6:7:8:9]", "[IPv6:1::2::3]",
                          "[IPv6:12345::]", "[IPv6:1:2:3:4:5:6:7::]", "[IPv6:]", "[1.2.3]",
                          "[1.2.3.4.5]", "[01234.1.1.1]", "[IPv6:1:2:3:4:5:6:7:1.2.3.4]",
                          "[IPv6:1:]", "[]", "[x:y]"}) {
    EXPECT_FALSE(is_address_literal(bad)) << bad;
  }
}

TEST(address, parse_path_gives_views_and_consumed_length) {
  const path_result r = parse_path("<@a.example:User@Example.COM> SIZE=1", path_kind::reverse,
                                   false);
  ASSERT_EQ(r.error, path_error::none);
  EXPECT_EQ(r.box.address, "User@Example.COM");
  EXPECT_EQ(r.box.local_part, "User");
  EXPECT_EQ(r.box.domain, "Example.COM");
  EXPECT_EQ(r.consumed, 29u);
  EXPECT_TRUE(parse_path("<>", path_kind::reverse, false).box.is_null);
  EXPECT_EQ(parse_path("<>", path_kind::forward, false).error, path_error::syntax);
  EXPECT_EQ(parse_path("<postmaster>", path_kind::reverse, false).error, path_error::syntax);
  EXPECT_EQ(parse_path("", path_kind::reverse, false).error, path_error::syntax);
  EXPECT_EQ(parse_path("<a@b", path_kind::reverse, false).error, path_error::syntax);
}

TEST(address, xtext_and_utf8) {
  char out[16];
  EXPECT_EQ(decode_xtext("a+2Bb+3D", out), 4);
  EXPECT_EQ(std::string(out, 4), "a+b=");
  EXPECT_EQ(decode_xtext("a=b", out), -1);
  EXPECT_EQ(decode_xtext("a+2", out), -1);
  EXPECT_EQ(decode_xtext("a+zz", out), -1);
  EXPECT_EQ(decode_xtext(std::string(17, 'x'), out), -1);
  EXPECT_TRUE(is_valid_utf8("j\xc3\xb6rg \xf0\x9f\x93\xa7"));
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xe2\x82"));          // truncated
}

TEST(address, same_mailbox_folds_the_domain_case_only) {
  EXPECT_TRUE(same_mailbox("User@EXAMPLE.com", "User@example.COM"));
  EXPECT_FALSE(same_mailbox("User@example.com", "user@example.com"));  // RFC 5321 §2.4
  EXPECT_FALSE(same_mailbox("a@example.com", "a@example.org"));
  EXPECT_FALSE(same_mailbox("a@b.example", "a@bb.example"));
  EXPECT_TRUE(same_mailbox("\"a@b\"@x.example", "\"a@b\"@X.example"));
  EXPECT_FALSE(same_mailbox("\"a@B\"@x.example", "\"a@b\"@x.example"));
  EXPECT_TRUE(same_mailbox("postmaster", "postmaster"));
}

TEST(parameters, keyword_and_value_syntax) {
  extension_set ext;
  mail_parameters mail;
  char scratch[100];
  EXPECT_EQ(parse_mail_parameters(" SIZE=1 BODY=7BIT", ext, false, mail, scratch).error,
            parameter_error::none);
  EXPECT_TRUE(mail.has_size);
  EXPECT_EQ(mail.body, body_type::seven_bit);
  EXPECT_EQ(parse_mail_parameters(" -X=1", ext, false, mail, scratch).error,
            parameter_error::syntax);
  EXPECT_EQ(parse_mail_parameters(" X-EXT=a=b", ext, false, mail, scratch).error,
            parameter_error::syntax);
  EXPECT_EQ(parse_mail_parameters(" X-EXT=1", ext, false, mail, scratch).error,
            parameter_error::unknown);
  EXPECT_EQ(parse_mail_parameters(" AUTH=<>", ext, true, mail, scratch).error,
            parameter_error::none);
  EXPECT_EQ(mail.auth, "<>");
}

using scanner = const char* (*)(const char*, const char*, bool&) noexcept;

TEST(data_scanner, every_variant_agrees_with_the_portable_one) {
  std::mt19937 rng(7);
  const scanner variants[] = {&find_cr_lf_nul, &find_cr_lf_nul_sse2, &find_cr_lf_nul_avx2};
  std::string buffer(300, 'a');
  for (int round = 0; round < 3000; ++round) {
    for (char& c : buffer) {
      const unsigned r = rng() % 200;
      // NUL, CR, LF, and the other octets <= 13 the vector search must skip (tab, form feed)
      c = r == 0 ? '\r' : r == 1 ? '\n' : r == 2 ? static_cast<char>(0x80 + rng() % 128)
          : r == 3 ? '\0' : r < 8 ? static_cast<char>(rng() % 14)
                               : static_cast<char>('a' + rng() % 26);
    }
    const std::size_t begin = rng() % 64;
    const std::size_t end = begin + rng() % (buffer.size() - begin);
    bool expected_8bit = false;
    const char* expected =
        find_cr_lf_nul_portable(buffer.data() + begin, buffer.data() + end, expected_8bit);
    for (const scanner s : variants) {
      bool eight_bit = false;
      EXPECT_EQ(s(buffer.data() + begin, buffer.data() + end, eight_bit), expected);
      EXPECT_EQ(eight_bit, expected_8bit);
    }
  }
  EXPECT_FALSE(line_break_scanner_name().empty());
}

TEST(data_scanner, stops_at_nul_in_every_variant) {
  std::string buffer(100, 'x');
  buffer[70] = '\0';
  for (const scanner s : {&find_cr_lf_nul, &find_cr_lf_nul_sse2, &find_cr_lf_nul_avx2,
                          &find_cr_lf_nul_portable}) {
    bool eight_bit = false;
    EXPECT_EQ(s(buffer.data(), buffer.data() + buffer.size(), eight_bit), buffer.data() + 70);
  }
}

}  // namespace
}  // namespace ringmta::smtp
