#include "ringmta/core/endpoint.h"

#include <algorithm>

#include <arpa/inet.h>

#include <gtest/gtest.h>

namespace ringmta::core {
namespace {

TEST(endpoint, parses_ipv4_and_ipv6) {
  auto v4 = endpoint::parse("127.0.0.2:2525");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->family(), AF_INET);
  EXPECT_EQ(v4->port(), 2525);
  EXPECT_EQ(v4->to_string(), "127.0.0.2:2525");
  auto v6 = endpoint::parse("[::1]:25");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->to_string(), "[::1]:25");
}

TEST(endpoint, default_port_applies_to_bare_addresses) {
  auto bare = endpoint::parse("10.1.2.3", 25);
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->port(), 25);
  EXPECT_FALSE(endpoint::parse("10.1.2.3"));
}

TEST(endpoint, rejects_malformed_text) {
  for (const char* bad : {"", ":25", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:2x",
                          "localhost:25", "[::1]25", "[::1:25", "1.2.3.4.5:25", "[1.2.3.4]:25"})
    EXPECT_FALSE(endpoint::parse(bad)) << bad;
}

TEST(cidr, matches_ranges) {
  auto loopback = cidr::parse("127.0.0.0/8");
  ASSERT_TRUE(loopback);
  auto inside = endpoint::parse("127.9.9.9:1");
  auto outside = endpoint::parse("128.0.0.1:1");
  EXPECT_TRUE(loopback->contains(inside->sockaddr_pointer()));
  EXPECT_FALSE(loopback->contains(outside->sockaddr_pointer()));
  auto odd = cidr::parse("192.168.4.0/22");
  EXPECT_TRUE(odd->contains(endpoint::parse("192.168.7.255:1")->sockaddr_pointer()));
  EXPECT_FALSE(odd->contains(endpoint::parse("192.168.8.0:1")->sockaddr_pointer()));
  EXPECT_EQ(odd->to_string(), "192.168.4.0/22");
}

TEST(cidr, ipv4_range_matches_v4_mapped_peer) {
  auto range = cidr::parse("10.0.0.0/8");
  sockaddr_in6 mapped{};
  mapped.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.2.3.4", &mapped.sin6_addr);
  EXPECT_TRUE(range->contains(reinterpret_cast<sockaddr*>(&mapped)));
  auto v6range = cidr::parse("2001:db8::/32");
  EXPECT_FALSE(v6range->contains(reinterpret_cast<sockaddr*>(&mapped)));
  EXPECT_TRUE(v6range->contains(endpoint::parse("[2001:db8::5]:1")->sockaddr_pointer()));
}

TEST(cidr, single_address_and_errors) {
  auto one = cidr::parse("::1");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->prefix_bits, 128u);
  for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0/8", "abc", "10.0.0.0/"})
    EXPECT_FALSE(cidr::parse(bad)) << bad;
}

TEST(endpoint, equality_is_family_address_and_port) {
  EXPECT_TRUE(*endpoint::parse("127.0.0.2:25") == *endpoint::parse("127.0.0.2:25"));
  EXPECT_FALSE(*endpoint::parse("127.0.0.2:25") == *endpoint::parse("127.0.0.2:26"));
  EXPECT_FALSE(*endpoint::parse("127.0.0.2:25") == *endpoint::parse("127.0.0.3:25"));
  EXPECT_TRUE(*endpoint::parse("[::1]:25") == *endpoint::parse("[::1]:25"));
  EXPECT_FALSE(*endpoint::parse("[::1]:25") == *endpoint::parse("127.0.0.1:25"));
}

TEST(endpoint, wildcards_expand_to_the_local_addresses) {
  EXPECT_TRUE(endpoint::parse("0.0.0.0:25")->is_any_address());
  EXPECT_TRUE(endpoint::parse("[::]:25")->is_any_address());
  EXPECT_FALSE(endpoint::parse("127.0.0.1:25")->is_any_address());
  const auto expanded = expand_wildcards({*endpoint::parse("0.0.0.0:2525"),
                                          *endpoint::parse("192.0.2.7:26")});
  // Loopback is on every Linux host; the specific endpoint stays as it is.
  EXPECT_NE(std::find(expanded.begin(), expanded.end(), *endpoint::parse("127.0.0.1:2525")),
            expanded.end());
  EXPECT_NE(std::find(expanded.begin(), expanded.end(), *endpoint::parse("192.0.2.7:26")),
            expanded.end());
  for (const auto& e : expanded) EXPECT_TRUE(e.port() == 2525 || e.port() == 26);
}

}  // namespace
}  // namespace ringmta::core
