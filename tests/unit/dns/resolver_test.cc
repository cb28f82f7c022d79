#include "ringmta/dns/resolver.h"

#include <set>

#include <gtest/gtest.h>

#include "dns_test_util.h"

namespace ringmta::dns {
namespace {

using testing::harness;
using testing::make_reply;
using testing::reply_spec;
using testing::test_config;

constexpr auto mx = record_type::mx;
constexpr auto a = record_type::a;
constexpr auto aaaa = record_type::aaaa;

reply_spec records(std::vector<std::string> answer) {
  reply_spec spec;
  spec.answer = std::move(answer);
  return spec;
}

reply_spec nodata(std::uint32_t minimum_s = 60) {
  reply_spec spec;
  spec.authority = {"test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 " +
                    std::to_string(minimum_s)};
  return spec;
}

reply_spec nxdomain(std::uint32_t minimum_s = 60) {
  reply_spec spec = nodata(minimum_s);
  spec.rcode = LDNS_RCODE_NXDOMAIN;
  return spec;
}

reply_spec rcode(ldns_pkt_rcode code) {
  reply_spec spec;
  spec.rcode = code;
  return spec;
}

std::vector<std::string> host_names(const mx_result& result) {
  std::vector<std::string> out;
  for (const auto& host : result.hosts) out.push_back(host.name);
  return out;
}

// Answers the A and AAAA questions of `host` with `v4` (and no AAAA).
void answer_host(harness& h, const std::string& host, const std::string& v4) {
  h.answer(h.find(host, a), v4.empty() ? nodata() : records({host + ". 300 IN A " + v4}));
  h.answer(h.find(host, aaaa), nodata());
}

TEST(dns_resolver, mx_lookup_resolves_hosts_in_preference_order) {
  harness h;
  const auto id = h.mx("Example.Test");
  ASSERT_EQ(h.sent.size(), 1u);
  EXPECT_EQ(h.sent[0].query.name, "example.test");
  EXPECT_EQ(h.sent[0].query.type, mx);
  EXPECT_EQ(h.sent[0].server, 0u);
  EXPECT_EQ(h.sent[0].via, transport::udp);
  EXPECT_EQ(h.sent[0].query.edns_payload_bytes, 1232);
  h.answer(0, records({"example.test. 300 IN MX 20 mx2.example.test.",
                       "example.test. 300 IN MX 10 mx1.example.test."}));
  EXPECT_EQ(h.sent.size(), 5u);  // A and AAAA for both hosts, all at once
  answer_host(h, "mx2.example.test", "127.0.0.3");
  EXPECT_EQ(h.results.count(id), 0u);
  h.answer(h.find("mx1.example.test", a), records({"mx1.example.test. 300 IN A 127.0.0.2"}));
  h.answer(h.find("mx1.example.test", aaaa), records({"mx1.example.test. 300 IN AAAA ::1"}));
  ASSERT_EQ(h.results.count(id), 1u);
  const auto& result = h.results[id];
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_FALSE(result.implicit_mx);
  EXPECT_EQ(host_names(result), (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
  EXPECT_EQ(result.hosts[0].preference, 10);
  ASSERT_EQ(result.hosts[0].addresses.size(), 2u);
  EXPECT_EQ(result.hosts[0].addresses[0].to_string(), "127.0.0.2");  // IPv4 first by default
  EXPECT_EQ(result.hosts[0].addresses[1].to_string(), "::1");
  EXPECT_EQ(h.r.lookups_in_flight(), 0u);
  EXPECT_EQ(h.r.queries_in_flight(), 0u);
  EXPECT_EQ(h.r.next_deadline_ms(), resolver::no_deadline);
}

TEST(dns_resolver, query_ids_are_random_and_distinct) {
  harness h;
  for (int i = 0; i < 20; ++i) h.mx("d" + std::to_string(i) + ".test");
  std::set<std::uint16_t> ids;
  for (const auto& packet : h.sent) ids.insert(packet.query.id);
  EXPECT_EQ(ids.size(), 20u);
}

TEST(dns_resolver, mismatched_replies_are_ignored) {
  harness h;
  const auto id = h.mx("example.test");
  const auto query = h.sent[0].query;
  reply_spec good = records({"example.test. 300 IN MX 10 mx.example.test."});
  // Wrong id, wrong name, wrong type, wrong server, garbage: all ignored.
  h.r.on_udp_packet(0, make_reply(query.id ^ 1, "example.test", mx, good), h.now_ms);
  h.r.on_udp_packet(0, make_reply(query.id, "evil.test", mx, good), h.now_ms);
  h.r.on_udp_packet(0, make_reply(query.id, "example.test", a, good), h.now_ms);
  h.r.on_udp_packet(1, make_reply(query.id, "example.test", mx, good), h.now_ms);
  h.r.on_udp_packet(7, make_reply(query.id, "example.test", mx, good), h.now_ms);
  h.r.on_udp_packet(0, std::vector<std::uint8_t>{1, 2, 3}, h.now_ms);
  h.drain();
  EXPECT_EQ(h.sent.size(), 1u);
  EXPECT_EQ(h.r.counters().mismatched, 6u);
  EXPECT_EQ(h.results.count(id), 0u);
  h.answer(0, good);  // the genuine reply still works
  answer_host(h, "mx.example.test", "127.0.0.2");
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
}

TEST(dns_resolver, truncated_reply_retries_over_tcp) {
  harness h;
  const auto id = h.mx("big.test");
  reply_spec truncated;
  truncated.truncated = true;
  h.answer(0, truncated);
  ASSERT_EQ(h.sent.size(), 2u);
  const auto tcp = h.sent[1];
  EXPECT_EQ(tcp.via, transport::tcp);
  EXPECT_EQ(tcp.server, 0u);
  EXPECT_EQ(tcp.query.name, "big.test");
  EXPECT_EQ(h.r.counters().truncated, 1u);
  // The reply arrives over the stream in three pieces, length prefix split.
  std::vector<std::string> many;
  for (int i = 0; i < 40; ++i)
    many.push_back("big.test. 300 IN MX " + std::to_string(i) + " mx" + std::to_string(i) +
                   ".big.test.");
  reply_spec full = records(many);
  full.tcp = true;
  const auto bytes = make_reply(tcp.query.id, "big.test", mx, full);
  ASSERT_GT(bytes.size(), 600u);
  const std::span<const std::uint8_t> all(bytes);
  h.r.on_tcp_data(tcp.exchange, all.subspan(0, 1), h.now_ms);
  h.r.on_tcp_data(tcp.exchange, all.subspan(1, 300), h.now_ms);
  h.drain();
  EXPECT_TRUE(h.closed.empty());
  h.r.on_tcp_data(tcp.exchange, all.subspan(301), h.now_ms);
  h.drain();
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0], tcp.exchange);
  // mx_hosts_max (10) hosts are resolved, lowest preferences first.
  EXPECT_EQ(h.count("mx0.big.test", a), 1u);
  EXPECT_EQ(h.count("mx9.big.test", a), 1u);
  EXPECT_EQ(h.count("mx10.big.test", a), 0u);
  for (int i = 0; i < 10; ++i) answer_host(h, "mx" + std::to_string(i) + ".big.test", "127.0.0.9");
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
  EXPECT_EQ(h.results.at(id).hosts.size(), 10u);
}

TEST(dns_resolver, tcp_connection_closed_early_moves_to_next_server) {
  harness h;
  const auto id = h.mx("big.test");
  reply_spec truncated;
  truncated.truncated = true;
  h.answer(0, truncated);
  ASSERT_EQ(h.sent.back().via, transport::tcp);
  h.r.on_tcp_data(h.sent.back().exchange, std::vector<std::uint8_t>{0, 200, 1, 2}, h.now_ms);
  h.r.on_tcp_closed(h.sent.back().exchange, h.now_ms);
  h.drain();
  EXPECT_TRUE(h.closed.empty());  // the embedder closed it: nothing to close
  ASSERT_EQ(h.sent.size(), 3u);
  EXPECT_EQ(h.sent[2].via, transport::udp);
  EXPECT_EQ(h.sent[2].server, 1u);
  h.answer(2, nxdomain());
  EXPECT_EQ(h.results.at(id).failure, failure_kind::no_such_domain);
}

TEST(dns_resolver, timeout_retries_the_next_server_and_accepts_a_late_reply) {
  harness h;
  const auto id = h.mx("example.test");
  EXPECT_EQ(h.r.next_deadline_ms(), h.now_ms + 1000);
  h.advance_time(999);
  EXPECT_EQ(h.sent.size(), 1u);
  h.advance_time(1);
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].server, 1u);
  EXPECT_EQ(h.sent[1].query.id, h.sent[0].query.id);
  EXPECT_EQ(h.r.counters().timeouts, 1u);
  h.answer(0, records({"example.test. 300 IN MX 10 mx.example.test."}));  // late, from server 0
  answer_host(h, "mx.example.test", "127.0.0.2");
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
}

TEST(dns_resolver, all_attempts_timing_out_is_a_temporary_failure) {
  harness h;  // two servers, two attempts: four tries
  const auto id = h.mx("slow.test");
  for (int i = 0; i < 4; ++i) h.advance_time(1000);
  ASSERT_EQ(h.sent.size(), 4u);
  EXPECT_EQ(h.sent[0].server, 0u);
  EXPECT_EQ(h.sent[1].server, 1u);
  EXPECT_EQ(h.sent[2].server, 0u);
  EXPECT_EQ(h.sent[3].server, 1u);
  const auto& result = h.results.at(id);
  EXPECT_EQ(result.status, lookup_status::temporary_failure);
  EXPECT_EQ(result.failure, failure_kind::timeout);
  EXPECT_STREQ(result.enhanced_code(), "4.4.3");
  EXPECT_NE(result.text.find("slow.test"), std::string::npos);
  EXPECT_EQ(h.r.queries_in_flight(), 0u);
}

TEST(dns_resolver, servfail_moves_on_at_once_and_ends_as_server_failure) {
  harness h;
  const auto id = h.mx("broken.test");
  h.answer(0, rcode(LDNS_RCODE_SERVFAIL));
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].server, 1u);
  h.answer(1, rcode(LDNS_RCODE_REFUSED));
  h.answer(2, rcode(LDNS_RCODE_SERVFAIL));
  h.answer(3, rcode(LDNS_RCODE_SERVFAIL));
  const auto& result = h.results.at(id);
  EXPECT_EQ(result.status, lookup_status::temporary_failure);
  EXPECT_EQ(result.failure, failure_kind::server_failure);
  // A failure is not cached: the next lookup asks again.
  h.mx("broken.test");
  EXPECT_EQ(h.sent.size(), 5u);
}

TEST(dns_resolver, malformed_reply_is_a_failed_attempt) {
  harness h;
  const auto id = h.mx("example.test");
  auto bytes = make_reply(h.sent[0].query.id, "example.test", mx,
                          records({"example.test. 300 IN MX 10 mx.example.test."}));
  bytes.resize(bytes.size() - 5);
  h.r.on_udp_packet(0, bytes, h.now_ms);
  h.drain();
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].server, 1u);
  EXPECT_EQ(h.r.counters().server_failures, 1u);
  h.answer(1, records({"example.test. 300 IN MX 10 mx.example.test."}));
  answer_host(h, "mx.example.test", "127.0.0.2");
  EXPECT_EQ(h.results.at(id).status, lookup_status::ok);
}

TEST(dns_resolver, formerr_retries_without_edns) {
  harness h;
  h.mx("old.test");
  h.answer(0, rcode(LDNS_RCODE_FORMERR));
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].server, 0u);
  EXPECT_EQ(h.sent[1].query.edns_payload_bytes, 0);
}

TEST(dns_resolver, send_failure_moves_to_next_server) {
  harness h;
  h.mx("example.test");
  h.r.on_send_failed(h.sent[0].exchange, h.now_ms);
  h.drain();
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].server, 1u);
}

TEST(dns_resolver, rotate_spreads_first_attempts) {
  auto config = test_config(3);
  config.rotate = true;
  harness h(config);
  for (int i = 0; i < 3; ++i) h.mx("d" + std::to_string(i) + ".test");
  ASSERT_EQ(h.sent.size(), 3u);
  EXPECT_EQ(h.sent[0].server, 0u);
  EXPECT_EQ(h.sent[1].server, 1u);
  EXPECT_EQ(h.sent[2].server, 2u);
}

TEST(dns_resolver, implicit_mx_uses_the_domains_addresses) {
  harness h;
  const auto id = h.mx("plain.test");
  h.answer(0, nodata());
  answer_host(h, "plain.test", "127.0.0.5");
  const auto& result = h.results.at(id);
  ASSERT_EQ(result.status, lookup_status::ok);
  EXPECT_TRUE(result.implicit_mx);
  ASSERT_EQ(result.hosts.size(), 1u);
  EXPECT_EQ(result.hosts[0].name, "plain.test");
  EXPECT_EQ(result.hosts[0].preference, 0);
}

TEST(dns_resolver, no_mx_and_no_address_is_permanent) {
  harness h;
  const auto id = h.mx("empty.test");
  h.answer(0, nodata());
  answer_host(h, "empty.test", "");
  EXPECT_EQ(h.results.at(id).status, lookup_status::permanent_failure);
  EXPECT_STREQ(h.results.at(id).enhanced_code(), "5.4.4");
}

TEST(dns_resolver, null_mx_is_a_permanent_failure) {
  harness h;
  const auto id = h.mx("nomail.test");
  h.answer(0, records({"nomail.test. 300 IN MX 0 ."}));
  EXPECT_EQ(h.sent.size(), 1u);
  const auto& result = h.results.at(id);
  EXPECT_EQ(result.status, lookup_status::permanent_failure);
  EXPECT_EQ(result.failure, failure_kind::null_mx);
  EXPECT_STREQ(result.enhanced_code(), "5.1.10");
}

TEST(dns_resolver, nxdomain_is_a_permanent_failure_and_is_cached) {
  harness h;
  const auto id = h.mx("gone.test");
  h.answer(0, nxdomain(120));
  EXPECT_EQ(h.results.at(id).failure, failure_kind::no_such_domain);
  EXPECT_STREQ(h.results.at(id).enhanced_code(), "5.1.2");
  h.now_ms += 119'000;
  const auto again = h.mx("gone.test");
  EXPECT_EQ(h.sent.size(), 1u);  // negative cache, RFC 2308
  EXPECT_EQ(h.results.at(again).failure, failure_kind::no_such_domain);
  h.now_ms += 1'000;
  h.mx("gone.test");
  EXPECT_EQ(h.sent.size(), 2u);  // SOA minimum passed
}

TEST(dns_resolver, nodata_is_negatively_cached) {
  harness h;
  h.mx("plain.test");
  h.answer(0, nodata(300));
  answer_host(h, "plain.test", "127.0.0.5");
  const auto sent = h.sent.size();
  const auto id = h.mx("plain.test");
  EXPECT_EQ(h.sent.size(), sent);
  EXPECT_TRUE(h.results.at(id).implicit_mx);
  EXPECT_GE(h.r.counters().cache_hits, 3u);
}

TEST(dns_resolver, host_without_address_is_skipped) {
  harness h;
  const auto id = h.mx("example.test");
  h.answer(0, records({"example.test. 300 IN MX 10 dead.example.test.",
                       "example.test. 300 IN MX 20 live.example.test."}));
  h.answer(h.find("dead.example.test", a), nxdomain());
  h.answer(h.find("dead.example.test", aaaa), nxdomain());
  answer_host(h, "live.example.test", "127.0.0.7");
  const auto& result = h.results.at(id);
  ASSERT_EQ(result.status, lookup_status::ok);
  EXPECT_EQ(host_names(result), (std::vector<std::string>{"live.example.test"}));
}

TEST(dns_resolver, all_hosts_without_address_and_temporary_host_failure) {
  harness h;
  auto id = h.mx("example.test");
  h.answer(0, records({"example.test. 300 IN MX 10 dead.example.test."}));
  answer_host(h, "dead.example.test", "");
  EXPECT_EQ(h.results.at(id).failure, failure_kind::no_mail_route);

  id = h.mx("flaky.test");
  h.answer(h.find("flaky.test", mx), records({"flaky.test. 300 IN MX 10 mx.flaky.test."}));
  h.answer(h.find("mx.flaky.test", aaaa), nodata());
  for (int i = 0; i < 4; ++i) h.advance_time(1000);  // the A question times out everywhere
  EXPECT_EQ(h.results.at(id).status, lookup_status::temporary_failure);
  EXPECT_EQ(h.results.at(id).failure, failure_kind::timeout);
}

TEST(dns_resolver, cname_in_answer_is_followed) {
  harness h;
  const auto id = h.mx("alias.test");
  h.answer(0, records({"alias.test. 300 IN CNAME real.test.",
                       "real.test. 300 IN MX 10 mx.real.test."}));
  answer_host(h, "mx.real.test", "127.0.0.8");
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
  EXPECT_EQ(h.results.at(id).hosts[0].name, "mx.real.test");
}

TEST(dns_resolver, cname_to_another_zone_is_chased_with_a_new_question) {
  harness h;
  const auto id = h.mx("alias.test");
  h.answer(0, records({"alias.test. 60 IN CNAME real.other.test."}));
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].query.name, "real.other.test");
  EXPECT_EQ(h.sent[1].query.type, mx);
  EXPECT_NE(h.sent[1].query.id, h.sent[0].query.id);
  h.answer(1, records({"real.other.test. 300 IN MX 10 mx.other.test."}));
  answer_host(h, "mx.other.test", "127.0.0.8");
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
  // Cached under the asked name with the CNAME's shorter TTL.
  h.now_ms += 59'000;
  h.mx("alias.test");
  EXPECT_EQ(h.count("alias.test", mx), 1u);
  h.now_ms += 1'000;
  h.mx("alias.test");
  EXPECT_EQ(h.count("alias.test", mx), 2u);
}

TEST(dns_resolver, positive_answers_are_cached_until_ttl) {
  harness h;
  h.mx("example.test");
  h.answer(0, records({"example.test. 60 IN MX 10 mx.example.test."}));
  answer_host(h, "mx.example.test", "127.0.0.2");
  const auto sent = h.sent.size();
  h.now_ms += 59'999;
  auto id = h.mx("example.test");
  EXPECT_EQ(h.sent.size(), sent);
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
  h.now_ms += 1;
  id = h.mx("example.test");
  EXPECT_EQ(h.sent.size(), sent + 1);  // the MX expired, host addresses (300 s) did not
  EXPECT_EQ(h.sent.back().query.type, mx);
}

TEST(dns_resolver, concurrent_lookups_share_one_query) {
  harness h;
  const auto first = h.mx("example.test");
  const auto second = h.mx("EXAMPLE.test.");
  EXPECT_EQ(h.sent.size(), 1u);
  EXPECT_EQ(h.r.counters().coalesced, 1u);
  h.answer(0, records({"example.test. 300 IN MX 10 mx.example.test."}));
  EXPECT_EQ(h.count("mx.example.test", a), 1u);
  answer_host(h, "mx.example.test", "127.0.0.2");
  EXPECT_EQ(h.results.at(first).status, lookup_status::ok);
  EXPECT_EQ(h.results.at(second).status, lookup_status::ok);
}

TEST(dns_resolver, address_literals_need_no_dns) {
  harness h;
  const auto v4 = h.mx("[127.0.0.1]");
  const auto v6 = h.mx("[IPv6:::1]");
  const auto bad = h.mx("[999.0.0.1]");
  EXPECT_TRUE(h.sent.empty());
  ASSERT_EQ(h.results.at(v4).status, lookup_status::ok);
  EXPECT_EQ(h.results.at(v4).hosts[0].addresses[0], ip_address::v4(127, 0, 0, 1));
  EXPECT_EQ(h.results.at(v4).hosts[0].name, "[127.0.0.1]");
  EXPECT_EQ(h.results.at(v6).hosts[0].addresses[0].family, 6);
  EXPECT_EQ(h.results.at(bad).failure, failure_kind::bad_domain);
  EXPECT_STREQ(h.results.at(bad).enhanced_code(), "5.1.3");
}

TEST(dns_resolver, lookup_deadline_ends_a_stuck_lookup) {
  auto config = test_config();
  config.timeout_ms = 5000;
  harness h(config);
  const auto id = h.r.start_mx_lookup("slow.test", h.now_ms, h.now_ms + 2000);
  h.drain();
  h.advance_time(2000);
  ASSERT_EQ(h.results.count(id), 1u);
  EXPECT_EQ(h.results.at(id).failure, failure_kind::timeout);
  EXPECT_EQ(h.r.lookups_in_flight(), 0u);
  EXPECT_EQ(h.r.queries_in_flight(), 1u);  // the question goes on, to fill the cache
}

// next_deadline_ms is the top of a heap whose entries go stale (answered, cancelled, retried):
// it must name the earliest deadline still live, never one that ended.
TEST(dns_resolver, next_deadline_follows_the_earliest_live_deadline) {
  auto config = test_config();
  config.timeout_ms = 1000;
  harness h(config);
  const auto early = h.r.start_mx_lookup("early.test", h.now_ms, h.now_ms + 500);
  h.mx("late.test");
  h.drain();
  EXPECT_EQ(h.r.next_deadline_ms(), h.now_ms + 500);  // the lookup's own, before any attempt's
  h.r.cancel(early);  // its question goes on: the attempt's deadline is next
  EXPECT_EQ(h.r.next_deadline_ms(), h.now_ms + 1000);
  h.answer(h.find("early.test", mx), nxdomain());
  EXPECT_EQ(h.r.next_deadline_ms(), h.now_ms + 1000);  // late.test's first attempt
  h.advance_time(1000);  // late.test's first attempt times out, the second goes to server 1
  EXPECT_EQ(h.r.next_deadline_ms(), h.now_ms + 1000);
  h.answer(h.find("late.test", mx), nxdomain());
  EXPECT_EQ(h.r.next_deadline_ms(), resolver::no_deadline);
  EXPECT_EQ(h.results.count(early), 0u);
}

// Many lookups that end before their deadlines leave stale entries earlier than the live one;
// they are skipped (and the heap rebuilt from the live slots), never reported as due.
TEST(dns_resolver, stale_deadlines_do_not_hide_a_live_one) {
  auto config = test_config();
  config.timeout_ms = 1000;
  harness h(config);
  const std::uint64_t start_ms = h.now_ms;
  h.mx("waiting.test");  // its first attempt ends at start + 1000
  for (int i = 0; i < 600; ++i) {
    h.now_ms += 1;
    h.r.start_mx_lookup("gone" + std::to_string(i) + ".test", h.now_ms, h.now_ms + 100);
    h.drain();
    h.answer(h.sent.size() - 1, nxdomain());  // ends long before its 100 ms
    ASSERT_EQ(h.r.next_deadline_ms(), start_ms + 1000);
  }
  h.advance_time(start_ms + 1000 - h.now_ms);
  EXPECT_EQ(h.count("waiting.test", mx), 2u);  // the second attempt went out on time
  EXPECT_EQ(h.r.next_deadline_ms(), start_ms + 2000);
}

TEST(dns_resolver, cancelled_lookup_reports_nothing) {
  harness h;
  const auto id = h.mx("example.test");
  h.r.cancel(id);
  h.answer(0, records({"example.test. 300 IN MX 10 mx.example.test."}));
  EXPECT_TRUE(h.results.empty());
  EXPECT_EQ(h.sent.size(), 1u);
}

TEST(dns_resolver, bounded_queries_queue_lookups_until_a_slot_frees) {
  auto config = test_config();
  config.queries_in_flight_max = 1;
  harness h(config);
  const auto first = h.mx("one.test");
  const auto second = h.mx("two.test");
  EXPECT_EQ(h.sent.size(), 1u);
  EXPECT_EQ(h.r.queries_in_flight(), 1u);
  h.answer(0, nxdomain());
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].query.name, "two.test");
  h.answer(1, nxdomain());
  EXPECT_EQ(h.results.at(first).failure, failure_kind::no_such_domain);
  EXPECT_EQ(h.results.at(second).failure, failure_kind::no_such_domain);
}

TEST(dns_resolver, bounded_lookups_refuse_past_the_waiting_bound) {
  auto config = test_config();
  config.lookups_max = 2;
  config.lookups_waiting_max = 0;
  harness h(config);
  h.mx("one.test");
  h.mx("two.test");
  const auto third = h.mx("three.test");
  EXPECT_EQ(h.results.at(third).failure, failure_kind::overloaded);
  EXPECT_EQ(h.results.at(third).status, lookup_status::temporary_failure);
  EXPECT_EQ(h.sent.size(), 2u);
}

// Issue 15: a restart asks for every destination at once; lookups past lookups_max wait for a
// slot (oldest first) instead of failing, and only past lookups_waiting_max more are refused.
TEST(dns_resolver, lookups_past_the_bound_wait_for_a_slot_in_order) {
  auto config = test_config();
  config.lookups_max = 2;
  config.lookups_waiting_max = 2;
  harness h(config);
  const auto one = h.mx("one.test");
  const auto two = h.mx("two.test");
  const auto three = h.mx("three.test");
  const auto four = h.mx("four.test");
  const auto five = h.mx("five.test");
  EXPECT_EQ(h.sent.size(), 2u);  // only the running two ask
  EXPECT_EQ(h.r.lookups_waiting(), 2u);
  EXPECT_EQ(h.results.count(three), 0u);
  EXPECT_EQ(h.results.count(four), 0u);
  ASSERT_EQ(h.results.count(five), 1u);  // past the waiting bound: refused as before
  EXPECT_EQ(h.results.at(five).failure, failure_kind::overloaded);
  h.answer(1, nxdomain());  // two ends: three (the oldest waiting) starts, not four
  EXPECT_EQ(h.results.at(two).failure, failure_kind::no_such_domain);
  ASSERT_EQ(h.sent.size(), 3u);
  EXPECT_EQ(h.sent[2].query.name, "three.test");
  EXPECT_EQ(h.r.lookups_waiting(), 1u);
  h.answer(0, nxdomain());
  ASSERT_EQ(h.sent.size(), 4u);
  EXPECT_EQ(h.sent[3].query.name, "four.test");
  h.answer(2, nxdomain());
  h.answer(3, nxdomain());
  EXPECT_EQ(h.results.at(one).failure, failure_kind::no_such_domain);
  EXPECT_EQ(h.results.at(three).failure, failure_kind::no_such_domain);
  EXPECT_EQ(h.results.at(four).failure, failure_kind::no_such_domain);
  EXPECT_EQ(h.r.lookups_in_flight(), 0u);
  EXPECT_EQ(h.r.counters().lookups_started, h.r.counters().lookups_done);
}

TEST(dns_resolver, cancel_works_for_a_waiting_lookup_and_frees_a_slot_for_the_next) {
  auto config = test_config();
  config.lookups_max = 1;
  config.lookups_waiting_max = 2;
  harness h(config);
  const auto one = h.mx("one.test");
  const auto two = h.mx("two.test");
  const auto three = h.mx("three.test");
  h.r.cancel(two);  // waiting: it never asks and never finishes
  EXPECT_EQ(h.r.lookups_waiting(), 1u);
  h.r.cancel(one);  // running: its slot goes to three, which asks at once
  h.drain();
  ASSERT_EQ(h.sent.size(), 2u);
  EXPECT_EQ(h.sent[1].query.name, "three.test");
  h.answer(1, nxdomain());
  EXPECT_EQ(h.results.at(three).failure, failure_kind::no_such_domain);
  EXPECT_EQ(h.results.count(one), 0u);
  EXPECT_EQ(h.results.count(two), 0u);
  EXPECT_EQ(h.r.lookups_in_flight(), 0u);
}

TEST(dns_resolver, waiting_lookup_deadline_counts_from_when_it_was_asked) {
  auto config = test_config();
  config.lookups_max = 1;
  config.lookup_timeout_ms = 10'000;
  config.timeout_ms = 60'000;  // the running lookup's question outlives the waiting one
  harness h(config);
  h.r.start_mx_lookup("one.test", h.now_ms, h.now_ms + 60'000);  // keeps the slot
  h.drain();
  const auto waiting = h.mx("two.test");
  h.now_ms += 10'000;
  EXPECT_EQ(h.r.next_deadline_ms(), h.now_ms);
  h.r.on_time(h.now_ms);
  h.drain();
  ASSERT_EQ(h.results.count(waiting), 1u);
  EXPECT_EQ(h.results.at(waiting).failure, failure_kind::timeout);
  EXPECT_NE(h.results.at(waiting).text.find("waited for a lookup slot"), std::string::npos);
  EXPECT_EQ(h.sent.size(), 1u);  // it never asked
  EXPECT_EQ(h.r.lookups_waiting(), 0u);
}

TEST(dns_resolver, waiting_address_literal_and_cached_lookups_finish_in_a_loop) {
  auto config = test_config();
  config.lookups_max = 1;
  config.lookups_waiting_max = 300;
  harness h(config);
  const auto first = h.mx("one.test");
  std::vector<std::uint64_t> literals;
  for (int i = 0; i < 300; ++i)
    literals.push_back(h.mx("[192.0.2." + std::to_string(i % 250) + "]"));
  EXPECT_EQ(h.results.size(), 0u);
  h.answer(0, nxdomain());  // each literal ends as it starts: the next takes its slot
  EXPECT_EQ(h.results.at(first).failure, failure_kind::no_such_domain);
  for (const auto id : literals) EXPECT_EQ(h.results.at(id).status, lookup_status::ok);
  EXPECT_EQ(h.r.lookups_in_flight(), 0u);
}

TEST(dns_resolver, host_lookup_for_a_smarthost) {
  harness h;
  const auto id = h.r.start_host_lookup("relay.test", h.now_ms);
  h.drain();
  answer_host(h, "relay.test", "127.0.0.9");
  ASSERT_EQ(h.results.at(id).status, lookup_status::ok);
  EXPECT_EQ(h.results.at(id).hosts[0].name, "relay.test");
  const auto missing = h.r.start_host_lookup("missing.test", h.now_ms);
  h.drain();
  h.answer(h.find("missing.test", a), nxdomain());
  h.answer(h.find("missing.test", aaaa), nxdomain());
  EXPECT_EQ(h.results.at(missing).failure, failure_kind::no_such_domain);
}

TEST(dns_resolver, ipv4_only_asks_no_aaaa) {
  auto config = test_config();
  config.ipv6 = false;
  harness h(config);
  const auto id = h.mx("example.test");
  h.answer(0, records({"example.test. 300 IN MX 10 mx.example.test."}));
  EXPECT_EQ(h.count("mx.example.test", aaaa), 0u);
  h.answer(h.find("mx.example.test", a), records({"mx.example.test. 300 IN A 127.0.0.2"}));
  EXPECT_EQ(h.results.at(id).status, lookup_status::ok);
}

TEST(dns_resolver, actions_stay_valid_while_the_embedder_calls_back_in) {
  harness h;
  const auto literal = h.r.start_mx_lookup("[127.0.0.1]", h.now_ms);
  action* done = h.r.next_action();
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->kind, action_kind::lookup_done);
  // Handling lookup_done by starting more work must not disturb the action in hand.
  for (int i = 0; i < 50; ++i) h.r.start_mx_lookup("d" + std::to_string(i) + ".test", h.now_ms);
  EXPECT_EQ(done->lookup, literal);
  ASSERT_EQ(done->result.hosts.size(), 1u);
  EXPECT_EQ(done->result.hosts[0].name, "[127.0.0.1]");
  std::size_t sends = 0;
  while (action* next = h.r.next_action()) sends += next->kind == action_kind::send;
  EXPECT_EQ(sends, 50u);
}

TEST(dns_resolver, mismatched_or_truncated_tcp_reply_fails_the_attempt) {
  harness h;
  const auto id = h.mx("big.test");
  reply_spec truncated;
  truncated.truncated = true;
  h.answer(0, truncated);
  const auto tcp = h.sent.at(1);
  ASSERT_EQ(tcp.via, transport::tcp);
  reply_spec wrong = records({"big.test. 300 IN MX 10 mx.big.test."});
  wrong.tcp = true;
  h.r.on_tcp_data(tcp.exchange, make_reply(tcp.query.id ^ 1, "big.test", mx, wrong), h.now_ms);
  h.drain();
  ASSERT_EQ(h.closed.size(), 1u);  // one question per connection: closed whatever it said
  ASSERT_EQ(h.sent.size(), 3u);
  EXPECT_EQ(h.sent[2].via, transport::udp);
  EXPECT_EQ(h.sent[2].server, 1u);
  h.answer(2, truncated);  // server 1 truncates too, and its TCP reply is truncated again
  ASSERT_EQ(h.sent.back().via, transport::tcp);
  h.answer(h.sent.size() - 1, truncated);
  EXPECT_EQ(h.closed.size(), 2u);
  EXPECT_EQ(h.sent.back().via, transport::udp);  // second round, server 0
  EXPECT_EQ(h.sent.back().server, 0u);
  EXPECT_EQ(h.results.count(id), 0u);
  EXPECT_GE(h.r.counters().server_failures, 2u);
}

}  // namespace
}  // namespace ringmta::dns
