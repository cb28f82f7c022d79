#include "ringmta/dns/wire.h"

#include <gtest/gtest.h>

#include "dns_test_util.h"

namespace ringmta::dns {
namespace {

using testing::decode_query;
using testing::make_reply;
using testing::reply_spec;

TEST(dns_wire, builds_recursive_query_with_edns) {
  std::vector<std::uint8_t> out;
  ASSERT_TRUE(build_query(0x1234, "Example.TEST", record_type::mx, 1232, false, out).ok());
  const auto info = decode_query(out, false);
  EXPECT_EQ(info.id, 0x1234);
  EXPECT_EQ(info.name, "example.test");
  EXPECT_EQ(info.type, record_type::mx);
  EXPECT_TRUE(info.rd);
  EXPECT_EQ(info.edns_payload_bytes, 1232);
}

TEST(dns_wire, tcp_query_has_length_prefix_and_edns_can_be_off) {
  std::vector<std::uint8_t> out;
  ASSERT_TRUE(build_query(7, "a.example.test", record_type::aaaa, 0, true, out).ok());
  const auto info = decode_query(out, true);
  EXPECT_EQ(info.id, 7);
  EXPECT_EQ(info.type, record_type::aaaa);
  EXPECT_EQ(info.edns_payload_bytes, 0);
}

TEST(dns_wire, rejects_invalid_names) {
  std::vector<std::uint8_t> out;
  EXPECT_FALSE(build_query(1, std::string(64, 'a') + ".test", record_type::a, 0, false, out).ok());
  EXPECT_FALSE(build_query(1, std::string(300, 'a'), record_type::a, 0, false, out).ok());
}

TEST(dns_wire, parses_mx_answer_with_min_ttl) {
  reply_spec spec;
  spec.answer = {"example.test. 300 IN MX 10 MX1.example.test.",
                 "example.test. 200 IN MX 20 mx2.example.test.",
                 "other.test. 5 IN MX 1 ignored.test."};
  const auto bytes = make_reply(99, "example.test", record_type::mx, spec);
  const auto parsed = parse_response(bytes, 99, "example.test", record_type::mx);
  ASSERT_EQ(parsed.kind, response_kind::answer);
  EXPECT_EQ(parsed.result.status, answer_status::ok);
  ASSERT_EQ(parsed.result.mx.size(), 2u);
  EXPECT_EQ(parsed.result.mx[0], (mx_record{10, "mx1.example.test"}));
  EXPECT_EQ(parsed.result.mx[1], (mx_record{20, "mx2.example.test"}));
  EXPECT_EQ(parsed.result.ttl_s, 200u);
}

TEST(dns_wire, null_mx_exchange_is_the_root) {
  reply_spec spec;
  spec.answer = {"nomail.test. 300 IN MX 0 ."};
  const auto bytes = make_reply(5, "nomail.test", record_type::mx, spec);
  const auto parsed = parse_response(bytes, 5, "nomail.test", record_type::mx);
  ASSERT_EQ(parsed.kind, response_kind::answer);
  ASSERT_EQ(parsed.result.mx.size(), 1u);
  EXPECT_EQ(parsed.result.mx[0].exchange, "");
}

TEST(dns_wire, follows_cname_chain_inside_answer) {
  reply_spec spec;
  spec.answer = {"www.example.test. 60 IN CNAME web.example.test.",
                 "web.example.test. 30 IN CNAME host.example.test.",
                 "host.example.test. 300 IN A 192.0.2.7"};
  const auto bytes = make_reply(1, "www.example.test", record_type::a, spec);
  const auto parsed = parse_response(bytes, 1, "www.example.test", record_type::a);
  ASSERT_EQ(parsed.kind, response_kind::answer);
  EXPECT_EQ(parsed.result.canonical_name, "host.example.test");
  ASSERT_EQ(parsed.result.addresses.size(), 1u);
  EXPECT_EQ(parsed.result.addresses[0].to_string(), "192.0.2.7");
  EXPECT_EQ(parsed.result.ttl_s, 30u);
}

TEST(dns_wire, cname_loop_is_a_server_failure) {
  reply_spec spec;
  spec.answer = {"a.test. 60 IN CNAME b.test.", "b.test. 60 IN CNAME a.test."};
  const auto bytes = make_reply(1, "a.test", record_type::a, spec);
  EXPECT_EQ(parse_response(bytes, 1, "a.test", record_type::a).kind,
            response_kind::server_failure);
}

TEST(dns_wire, unfollowed_cname_asks_for_the_target) {
  reply_spec spec;
  spec.answer = {"alias.test. 60 IN CNAME real.elsewhere.test."};
  const auto bytes = make_reply(1, "alias.test", record_type::mx, spec);
  const auto parsed = parse_response(bytes, 1, "alias.test", record_type::mx);
  ASSERT_EQ(parsed.kind, response_kind::cname);
  EXPECT_EQ(parsed.next_name, "real.elsewhere.test");
  EXPECT_EQ(parsed.result.ttl_s, 60u);
}

TEST(dns_wire, negative_answers_use_soa_minimum) {
  reply_spec spec;
  spec.rcode = LDNS_RCODE_NXDOMAIN;
  spec.authority = {"test. 900 IN SOA ns.test. host.test. 1 3600 600 86400 120"};
  auto bytes = make_reply(2, "nope.test", record_type::mx, spec);
  auto parsed = parse_response(bytes, 2, "nope.test", record_type::mx);
  ASSERT_EQ(parsed.kind, response_kind::answer);
  EXPECT_EQ(parsed.result.status, answer_status::nxdomain);
  EXPECT_EQ(parsed.result.ttl_s, 120u);

  spec.rcode = LDNS_RCODE_NOERROR;
  spec.authority = {"test. 30 IN SOA ns.test. host.test. 1 3600 600 86400 120"};
  bytes = make_reply(3, "empty.test", record_type::aaaa, spec);
  parsed = parse_response(bytes, 3, "empty.test", record_type::aaaa);
  EXPECT_EQ(parsed.result.status, answer_status::nodata);
  EXPECT_EQ(parsed.result.ttl_s, 30u);  // min(SOA TTL, MINIMUM): RFC 2308 §5

  spec.authority.clear();
  bytes = make_reply(4, "empty.test", record_type::aaaa, spec);
  EXPECT_EQ(parse_response(bytes, 4, "empty.test", record_type::aaaa).result.ttl_s, 0u);
}

TEST(dns_wire, mismatched_id_or_question_is_ignored) {
  reply_spec spec;
  spec.answer = {"example.test. 300 IN A 192.0.2.1"};
  const auto bytes = make_reply(10, "example.test", record_type::a, spec);
  EXPECT_EQ(parse_response(bytes, 11, "example.test", record_type::a).kind,
            response_kind::mismatch);
  EXPECT_EQ(parse_response(bytes, 10, "other.test", record_type::a).kind,
            response_kind::mismatch);
  EXPECT_EQ(parse_response(bytes, 10, "example.test", record_type::aaaa).kind,
            response_kind::mismatch);
  std::vector<std::uint8_t> query;
  ASSERT_TRUE(build_query(10, "example.test", record_type::a, 0, false, query).ok());
  EXPECT_EQ(parse_response(query, 10, "example.test", record_type::a).kind,
            response_kind::mismatch);  // QR clear: a query, not a reply
}

TEST(dns_wire, classifies_rcodes_truncation_and_garbage) {
  reply_spec spec;
  spec.rcode = LDNS_RCODE_SERVFAIL;
  auto bytes = make_reply(1, "x.test", record_type::a, spec);
  EXPECT_EQ(parse_response(bytes, 1, "x.test", record_type::a).kind,
            response_kind::server_failure);
  spec.rcode = LDNS_RCODE_REFUSED;
  bytes = make_reply(1, "x.test", record_type::a, spec);
  EXPECT_EQ(parse_response(bytes, 1, "x.test", record_type::a).kind,
            response_kind::server_failure);
  spec.rcode = LDNS_RCODE_FORMERR;
  bytes = make_reply(1, "x.test", record_type::a, spec);
  EXPECT_EQ(parse_response(bytes, 1, "x.test", record_type::a).kind, response_kind::format_error);
  spec.rcode = LDNS_RCODE_NOERROR;
  spec.truncated = true;
  bytes = make_reply(1, "x.test", record_type::a, spec);
  EXPECT_EQ(parse_response(bytes, 1, "x.test", record_type::a).kind, response_kind::truncated);
  bytes.resize(bytes.size() - 3);  // cut inside the question
  bytes[2] = 0x80;
  EXPECT_EQ(parse_response(bytes, 1, "x.test", record_type::a).kind, response_kind::malformed);
  EXPECT_EQ(parse_response({}, 1, "x.test", record_type::a).kind, response_kind::mismatch);
}

TEST(dns_wire, parses_aaaa_and_txt) {
  reply_spec spec;
  spec.answer = {"v6.test. 300 IN AAAA 2001:db8::25"};
  auto bytes = make_reply(1, "v6.test", record_type::aaaa, spec);
  auto parsed = parse_response(bytes, 1, "v6.test", record_type::aaaa);
  ASSERT_EQ(parsed.result.addresses.size(), 1u);
  EXPECT_EQ(parsed.result.addresses[0].to_string(), "2001:db8::25");
  spec.answer = {"t.test. 300 IN TXT \"v=spf1 \" \"-all\""};
  bytes = make_reply(1, "t.test", record_type::txt, spec);
  parsed = parse_response(bytes, 1, "t.test", record_type::txt);
  ASSERT_EQ(parsed.result.texts.size(), 1u);
  EXPECT_EQ(parsed.result.texts[0], "v=spf1 -all");
}

}  // namespace
}  // namespace ringmta::dns
