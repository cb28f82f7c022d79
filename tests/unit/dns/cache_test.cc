#include "ringmta/dns/cache.h"

#include <gtest/gtest.h>

namespace ringmta::dns {
namespace {

answer addresses(std::uint32_t ttl_s, std::uint8_t last) {
  answer value;
  value.status = answer_status::ok;
  value.canonical_name = "host.test";
  value.addresses.push_back(ip_address::v4(192, 0, 2, last));
  value.ttl_s = ttl_s;
  return value;
}

answer negative(answer_status status, std::uint32_t ttl_s) {
  answer value;
  value.status = status;
  value.ttl_s = ttl_s;
  return value;
}

TEST(dns_cache, entry_expires_after_its_ttl) {
  cache c(100, 1 << 20, 86400, 3600);
  c.insert("host.test", record_type::a, addresses(60, 1), 1000);
  ASSERT_NE(c.find("host.test", record_type::a, 1000), nullptr);
  EXPECT_EQ(c.find("host.test", record_type::aaaa, 1000), nullptr);  // type is part of the key
  EXPECT_NE(c.find("host.test", record_type::a, 60'999), nullptr);
  EXPECT_EQ(c.find("host.test", record_type::a, 61'000), nullptr);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(dns_cache, ttl_is_capped_by_max) {
  cache c(100, 1 << 20, 100, 10);
  c.insert("host.test", record_type::a, addresses(1'000'000, 1), 0);
  const answer* found = c.find("host.test", record_type::a, 99'999);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->ttl_s, 100u);
  EXPECT_EQ(c.find("host.test", record_type::a, 100'000), nullptr);
}

TEST(dns_cache, negative_answers_are_cached_with_their_own_cap) {
  cache c(100, 1 << 20, 86400, 300);
  c.insert("gone.test", record_type::mx, negative(answer_status::nxdomain, 3600), 0);
  c.insert("empty.test", record_type::mx, negative(answer_status::nodata, 20), 0);
  const answer* gone = c.find("gone.test", record_type::mx, 299'000);
  ASSERT_NE(gone, nullptr);
  EXPECT_EQ(gone->status, answer_status::nxdomain);
  EXPECT_EQ(c.find("gone.test", record_type::mx, 300'000), nullptr);
  EXPECT_NE(c.find("empty.test", record_type::mx, 19'999), nullptr);
  EXPECT_EQ(c.find("empty.test", record_type::mx, 20'000), nullptr);
}

TEST(dns_cache, failures_and_zero_ttl_are_not_cached_and_drop_old_entries) {
  cache c(100, 1 << 20, 86400, 3600);
  c.insert("host.test", record_type::a, addresses(60, 1), 0);
  c.insert("host.test", record_type::a, negative(answer_status::server_failure, 60), 0);
  EXPECT_EQ(c.find("host.test", record_type::a, 0), nullptr);
  c.insert("host.test", record_type::a, negative(answer_status::timeout, 60), 0);
  c.insert("zero.test", record_type::a, addresses(0, 1), 0);
  c.insert("nosoa.test", record_type::a, negative(answer_status::nxdomain, 0), 0);
  EXPECT_EQ(c.size(), 0u);
}

TEST(dns_cache, replaces_an_entry_for_the_same_key) {
  cache c(100, 1 << 20, 86400, 3600);
  c.insert("host.test", record_type::a, addresses(60, 1), 0);
  c.insert("host.test", record_type::a, addresses(60, 2), 0);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.find("host.test", record_type::a, 0)->addresses[0], ip_address::v4(192, 0, 2, 2));
}

TEST(dns_cache, evicts_least_recently_used_past_entry_bound) {
  cache c(3, 1 << 20, 86400, 3600);
  c.insert("a.test", record_type::a, addresses(60, 1), 0);
  c.insert("b.test", record_type::a, addresses(60, 2), 0);
  c.insert("c.test", record_type::a, addresses(60, 3), 0);
  ASSERT_NE(c.find("a.test", record_type::a, 0), nullptr);  // a becomes most recent
  c.insert("d.test", record_type::a, addresses(60, 4), 0);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_EQ(c.evictions(), 1u);
  EXPECT_EQ(c.find("b.test", record_type::a, 0), nullptr);
  EXPECT_NE(c.find("a.test", record_type::a, 0), nullptr);
  EXPECT_NE(c.find("c.test", record_type::a, 0), nullptr);
  EXPECT_NE(c.find("d.test", record_type::a, 0), nullptr);
}

TEST(dns_cache, byte_bound_holds_under_many_inserts) {
  const std::size_t bytes_max = 16 * 1024;
  cache c(1'000'000, bytes_max, 86400, 3600);
  for (int i = 0; i < 5000; ++i) {
    answer value = addresses(600, static_cast<std::uint8_t>(i));
    value.addresses.resize(1 + i % 8, ip_address::v4(192, 0, 2, 1));
    c.insert("host" + std::to_string(i) + ".test", record_type::a, value, 0);
    ASSERT_LE(c.bytes(), bytes_max);
  }
  EXPECT_GT(c.size(), 10u);
  EXPECT_LT(c.size(), 5000u);
  EXPECT_GT(c.evictions(), 0u);
  EXPECT_NE(c.find("host4999.test", record_type::a, 0), nullptr);  // newest survives
  EXPECT_EQ(c.find("host0.test", record_type::a, 0), nullptr);
}

// Entries are packed: every field of an answer comes back from a hit as it went in.
TEST(dns_cache, packed_entries_keep_every_field) {
  answer value;
  value.status = answer_status::ok;
  value.canonical_name = "alias.example.test";
  value.mx = {{10, "mx1.example.test"}, {20, "mx2.example.test"}, {0, ""}};
  value.addresses = {ip_address::v4(192, 0, 2, 7), ip_address::parse("2001:db8::25").value()};
  value.texts = {"v=spf1 -all", std::string(300, 'x')};
  value.ttl_s = 600;
  cache c(100, 1 << 20, 300, 60);
  c.insert("example.test", record_type::mx, value, 0);
  const answer* found = c.find("example.test", record_type::mx, 0);
  ASSERT_NE(found, nullptr);
  value.ttl_s = 300;  // capped
  EXPECT_EQ(found->status, value.status);
  EXPECT_EQ(found->canonical_name, value.canonical_name);
  EXPECT_EQ(found->mx, value.mx);
  EXPECT_EQ(found->addresses, value.addresses);
  EXPECT_EQ(found->texts, value.texts);
  EXPECT_EQ(found->ttl_s, 300u);
  // A smaller answer in the same scratch: nothing of the larger one is left over.
  c.insert("host.test", record_type::a, addresses(60, 9), 0);
  found = c.find("host.test", record_type::a, 0);
  ASSERT_NE(found, nullptr);
  EXPECT_TRUE(found->mx.empty());
  EXPECT_TRUE(found->texts.empty());
  ASSERT_EQ(found->addresses.size(), 1u);
  EXPECT_EQ(found->addresses[0], ip_address::v4(192, 0, 2, 9));
  EXPECT_EQ(found->canonical_name, "host.test");
}

// What an entry counts against bytes_max: a one-host MX answer and a one-address answer,
// as a destination waiting in the queue leaves them (an unpacked `answer` counted ~250).
TEST(dns_cache, an_mx_or_address_entry_costs_under_180_bytes) {
  cache c(100, 1 << 20, 86400, 3600);
  answer mx;
  mx.status = answer_status::ok;
  mx.canonical_name = "d1234.test";
  mx.mx = {{10, "mx.d1234.test"}};
  mx.ttl_s = 3600;
  c.insert("d1234.test", record_type::mx, mx, 0);
  EXPECT_LE(c.bytes(), 180u);
  const std::size_t one = c.bytes();
  c.insert("mx.d1234.test", record_type::a, addresses(3600, 3), 0);
  EXPECT_LE(c.bytes() - one, 180u);
}

}  // namespace
}  // namespace ringmta::dns
