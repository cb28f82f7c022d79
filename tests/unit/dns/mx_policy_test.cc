#include "ringmta/dns/mx_policy.h"

#include <set>

#include <gtest/gtest.h>

namespace ringmta::dns {
namespace {

std::vector<std::string> names(const std::vector<mx_record>& records) {
  std::vector<std::string> out;
  for (const auto& record : records) out.push_back(record.exchange);
  return out;
}

TEST(dns_mx_policy, orders_by_preference) {
  const auto random = seeded_random(1);
  const auto ordered =
      order_mx({{30, "c.test"}, {10, "a.test"}, {20, "b.test"}}, random, 10);
  EXPECT_EQ(names(ordered), (std::vector<std::string>{"a.test", "b.test", "c.test"}));
}

TEST(dns_mx_policy, equal_preferences_are_shuffled_by_the_seeded_source) {
  const std::vector<mx_record> records{{10, "a.test"}, {10, "b.test"}, {10, "c.test"},
                                       {5, "first.test"}, {20, "last.test"}};
  std::set<std::vector<std::string>> orders;
  for (std::uint64_t seed = 0; seed < 64; ++seed) {
    const auto ordered = names(order_mx(records, seeded_random(seed), 10));
    ASSERT_EQ(ordered.size(), 5u);
    EXPECT_EQ(ordered.front(), "first.test");
    EXPECT_EQ(ordered.back(), "last.test");
    EXPECT_EQ(std::set<std::string>(ordered.begin() + 1, ordered.end() - 1),
              (std::set<std::string>{"a.test", "b.test", "c.test"}));
    orders.insert(ordered);
    // The same seed gives the same order: runs replay.
    EXPECT_EQ(names(order_mx(records, seeded_random(seed), 10)), ordered);
  }
  EXPECT_EQ(orders.size(), 6u);  // all 3! orders of the equal group show up over 64 seeds
}

TEST(dns_mx_policy, drops_duplicates_null_entries_and_caps_hosts) {
  const auto ordered = order_mx({{20, "a.test"}, {10, "a.test"}, {0, ""}, {30, "b.test"},
                                 {40, "c.test"}},
                                seeded_random(3), 2);
  ASSERT_EQ(ordered.size(), 2u);
  EXPECT_EQ(ordered[0], (mx_record{10, "a.test"}));
  EXPECT_EQ(ordered[1], (mx_record{30, "b.test"}));
}

TEST(dns_mx_policy, null_mx_is_a_single_root_exchange) {
  EXPECT_TRUE(is_null_mx({{0, ""}}));
  EXPECT_FALSE(is_null_mx({{0, ""}, {10, "mx.test"}}));
  EXPECT_FALSE(is_null_mx({{0, "mx.test"}}));
  EXPECT_FALSE(is_null_mx({}));
}

TEST(dns_mx_policy, address_literals) {
  const auto v4 = parse_address_literal("[127.0.0.1]");
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(*v4, ip_address::v4(127, 0, 0, 1));
  const auto v6 = parse_address_literal("[IPv6:2001:db8::1]");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->to_string(), "2001:db8::1");
  EXPECT_TRUE(parse_address_literal("[ipv6:::1]").has_value());
  for (const char* bad : {"127.0.0.1", "[127.0.0.1", "[]", "[::1]", "[IPv6:127.0.0.1]",
                          "[example.test]", "[IPv6:]"})
    EXPECT_FALSE(parse_address_literal(bad).has_value()) << bad;
}

TEST(dns_mx_policy, valid_domains) {
  for (const char* good : {"example.test", "EXAMPLE.test.", "a", "_dmarc.x-y.test",
                           "xn--bcher-kva.test"})
    EXPECT_TRUE(is_valid_domain(good)) << good;
  for (const char* bad : {"", ".", "a..b", ".a", "a b.test", "a/b", "exa\nmple.test",
                          "[127.0.0.1]"})
    EXPECT_FALSE(is_valid_domain(bad)) << bad;
  EXPECT_TRUE(is_valid_domain(std::string(63, 'a') + ".test"));
  EXPECT_FALSE(is_valid_domain(std::string(64, 'a') + ".test"));
  std::string long_name;
  while (long_name.size() < 260) long_name += "abcdefghi.";
  EXPECT_FALSE(is_valid_domain(long_name));
}

TEST(dns_mx_policy, host_addresses_orders_families_and_flags_temporary) {
  answer a;
  a.status = answer_status::ok;
  a.addresses = {ip_address::v4(192, 0, 2, 1)};
  answer aaaa;
  aaaa.status = answer_status::timeout;
  bool temporary = false;
  auto addresses = host_addresses(&a, &aaaa, false, temporary);
  EXPECT_TRUE(temporary);
  ASSERT_EQ(addresses.size(), 1u);
  aaaa.status = answer_status::ok;
  aaaa.addresses = {ip_address::parse("::1").value()};
  temporary = false;
  addresses = host_addresses(&a, &aaaa, true, temporary);
  EXPECT_FALSE(temporary);
  ASSERT_EQ(addresses.size(), 2u);
  EXPECT_EQ(addresses[0].family, 6);
  EXPECT_EQ(addresses[1].family, 4);
}

TEST(dns_mx_policy, failure_results_carry_codes) {
  EXPECT_STREQ(failure_result(failure_kind::null_mx, "x").enhanced_code(), "5.1.10");
  EXPECT_EQ(failure_result(failure_kind::null_mx, "x").status, lookup_status::permanent_failure);
  EXPECT_STREQ(failure_result(failure_kind::no_such_domain, "x").enhanced_code(), "5.1.2");
  EXPECT_EQ(failure_result(failure_kind::timeout, "x").status, lookup_status::temporary_failure);
  EXPECT_STREQ(failure_result(failure_kind::server_failure, "x").enhanced_code(), "4.4.3");
  EXPECT_TRUE(failure_result(failure_kind::server_failure, "x").hosts.empty());
}

}  // namespace
}  // namespace ringmta::dns
