// client_syntax::path_ok (a table of byte classes, issue 16) against the plain byte-by-byte
// check it replaces: the same answer and the same eight_bit for every path tried.
#include "client_syntax.h"

#include <string>

#include <gtest/gtest.h>

namespace ringmta::smtp::client_syntax {
namespace {

// Both checks on `path`, each starting from `eight_bit_before`.
void expect_same(const std::string& path, bool eight_bit_before = false) {
  bool table_eight_bit = eight_bit_before;
  bool bytewise_eight_bit = eight_bit_before;
  const bool table = path_ok(path, table_eight_bit);
  const bool bytewise =
      path.size() <= client_path_bytes_max && path_ok_bytewise(path, bytewise_eight_bit);
  EXPECT_EQ(table, bytewise) << testing::PrintToString(path);
  EXPECT_EQ(table_eight_bit, bytewise_eight_bit) << testing::PrintToString(path);
}

TEST(client_syntax, path_ok_agrees_with_the_bytewise_check_on_every_byte) {
  for (unsigned byte = 0; byte < 256; ++byte) {
    const char c = static_cast<char>(byte);
    expect_same(std::string(1, c));
    expect_same("user" + std::string(1, c) + "@example.org");
    expect_same(std::string(1, c), true);
  }
}

TEST(client_syntax, eight_bit_counts_only_the_bytes_before_a_refused_one) {
  // Every ordering of three bytes from each class: plain, refused, >= 0x80.
  const char samples[] = {'a', '\x01', '\x7f', '<', '>', '\x80', '\xff', ' ', '@'};
  for (const char first : samples) {
    for (const char second : samples) {
      for (const char third : samples) expect_same({first, second, third});
    }
  }
  bool eight_bit = false;
  EXPECT_FALSE(path_ok("\xc3\xa9<x@example.org", eight_bit));
  EXPECT_TRUE(eight_bit);  // the 8-bit bytes come before the '<'
  eight_bit = false;
  EXPECT_FALSE(path_ok("<\xc3\xa9@example.org", eight_bit));
  EXPECT_FALSE(eight_bit);  // the scan stops at the '<', as the bytewise check does
  eight_bit = false;
  EXPECT_TRUE(path_ok("j\xc3\xb6rg@example.org", eight_bit));
  EXPECT_TRUE(eight_bit);
}

TEST(client_syntax, a_path_longer_than_the_bound_is_refused_unscanned) {
  bool eight_bit = false;
  EXPECT_TRUE(path_ok(std::string(client_path_bytes_max, 'a'), eight_bit));
  EXPECT_FALSE(path_ok(std::string(client_path_bytes_max + 1, '\x80'), eight_bit));
  EXPECT_FALSE(eight_bit);
}

}  // namespace
}  // namespace ringmta::smtp::client_syntax
