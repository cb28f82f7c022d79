#include "ringmta/net/idna.h"

#include <gtest/gtest.h>

namespace ringmta::net {
namespace {

// Issue 17 item 2: U-labels become A-labels (IDNA 2008 with the UTS #46 mapping).
TEST(idna, u_labels_become_a_labels) {
  EXPECT_EQ(domain_to_ascii("b\xC3\xBC" "cher.test"), "xn--bcher-kva.test");
  EXPECT_EQ(domain_to_ascii("B\xC3\x9C" "CHER.Test"), "xn--bcher-kva.test");  // case mapped
  EXPECT_EQ(domain_to_ascii("Example.COM"), "example.com");                 // ASCII: lowercase
  EXPECT_EQ(domain_to_ascii("xn--bcher-kva.test"), "xn--bcher-kva.test");   // A-label as is
  EXPECT_EQ(address_to_ascii_domain("Bob@b\xC3\xBC" "cher.test"), "Bob@xn--bcher-kva.test");
}

TEST(idna, invalid_names_have_no_a_label) {
  EXPECT_FALSE(domain_to_ascii(""));
  EXPECT_FALSE(domain_to_ascii("b\xC3" "cher.test"));          // not UTF-8
  EXPECT_FALSE(domain_to_ascii("\xE2\x98\x83.test"));          // a snowman: disallowed
  EXPECT_FALSE(address_to_ascii_domain("no-at-sign"));
}

// Look-alikes are other names: a Cyrillic "ѕ" or a plain "u" never maps to the real one.
TEST(idna, look_alikes_stay_distinct) {
  const auto real = domain_to_ascii("b\xC3\xBC" "cher.test");
  EXPECT_NE(domain_to_ascii("bucher.test"), real);
  EXPECT_NE(domain_to_ascii("b\xD1\x83" "cher.test"), real);  // Cyrillic "у"
  EXPECT_NE(domain_to_ascii("ex\xD0\xB0mple.com"), domain_to_ascii("example.com"));  // "а"
}

}  // namespace
}  // namespace ringmta::net
