// outbound::attempt_plan: address order (MX order, addresses in order, duplicates once,
// families, the bound), DNS failures as replies, and the destination's failure after tries.
#include "ringmta/outbound/attempt_plan.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "ringmta/dns/mx_policy.h"

namespace ringmta::outbound {
namespace {

dns::ip_address v4(std::uint8_t last) { return dns::ip_address::v4(192, 0, 2, last); }

dns::ip_address v6(std::uint8_t last) {
  dns::ip_address ip;
  ip.family = 6;
  ip.bytes = {0x20, 0x01, 0x0d, 0xb8};
  ip.bytes[15] = last;
  return ip;
}

dns::mx_result hosts(std::vector<dns::mx_host> list) {
  dns::mx_result result;
  result.status = dns::lookup_status::ok;
  result.hosts = std::move(list);
  return result;
}

std::vector<std::string> describe(const std::vector<candidate>& planned) {
  std::vector<std::string> out;
  for (const auto& c : planned) out.push_back(c.host_name + " " + c.address.to_string());
  return out;
}

TEST(plan_candidates, keeps_mx_order_then_address_order_with_the_port) {
  const auto result = hosts({{"mx1.test", 10, {v4(1), v6(1)}}, {"mx2.test", 20, {v4(2)}}});
  const auto planned = plan_candidates(result, plan_options{2525, 10, true, true});
  EXPECT_EQ(describe(planned),
            (std::vector<std::string>{"mx1.test 192.0.2.1:2525", "mx1.test [2001:db8::1]:2525",
                                      "mx2.test 192.0.2.2:2525"}));
}

TEST(plan_candidates, tries_an_address_shared_by_two_hosts_once) {
  const auto result = hosts({{"a.test", 10, {v4(1)}}, {"b.test", 20, {v4(1), v4(2)}}});
  EXPECT_EQ(describe(plan_candidates(result, plan_options{25, 10, true, true})),
            (std::vector<std::string>{"a.test 192.0.2.1:25", "b.test 192.0.2.2:25"}));
}

TEST(plan_candidates, drops_ourselves_and_every_less_preferred_host) {
  // RFC 5321 §5.1: we are mx2 (by address and port); only the better mx1 may be tried.
  const auto result = hosts({{"mx1.test", 10, {v4(1)}},
                             {"mx2.test", 20, {v4(2)}},
                             {"mx3.test", 30, {v4(3)}},
                             {"mx2b.test", 20, {v4(4)}}});
  const std::vector<core::endpoint> us = {to_endpoint(v4(2), 25)};
  plan_options options{25, 10, true, true, "relay.example", &us};
  bool loops = true;
  EXPECT_EQ(describe(plan_candidates(result, options, &loops)),
            (std::vector<std::string>{"mx1.test 192.0.2.1:25"}));
  EXPECT_FALSE(loops);
  // Another port at the same address is another server, not us.
  options.port = 2525;
  EXPECT_EQ(plan_candidates(result, options, &loops).size(), 4u);
  EXPECT_FALSE(loops);
}

TEST(plan_candidates, the_best_host_being_ourselves_is_a_loop) {
  const auto by_name = hosts({{"Relay.Example.", 10, {v4(9)}}, {"backup.test", 20, {v4(2)}}});
  const plan_options options{25, 10, true, true, "relay.example", nullptr};
  bool loops = false;
  EXPECT_TRUE(plan_candidates(by_name, options, &loops).empty());
  EXPECT_TRUE(loops);
  const auto other = hosts({{"mx.other.test", 10, {v4(1)}}});
  EXPECT_EQ(plan_candidates(other, options, &loops).size(), 1u);
  EXPECT_FALSE(loops);
  // Empty for another reason (no usable family) is not a loop.
  EXPECT_TRUE(plan_candidates(other, plan_options{25, 10, false, false, "relay.example"}, &loops)
                  .empty());
  EXPECT_FALSE(loops);
}

TEST(plan_candidates, skips_disabled_families) {
  const auto result = hosts({{"a.test", 10, {v6(1), v4(1)}}});
  EXPECT_EQ(describe(plan_candidates(result, plan_options{25, 10, true, false})),
            (std::vector<std::string>{"a.test 192.0.2.1:25"}));
  EXPECT_EQ(describe(plan_candidates(result, plan_options{25, 10, false, true})),
            (std::vector<std::string>{"a.test [2001:db8::1]:25"}));
  EXPECT_TRUE(plan_candidates(result, plan_options{25, 10, false, false}).empty());
}

TEST(plan_candidates, stops_at_addresses_max) {
  std::vector<dns::mx_host> many;
  for (std::uint8_t i = 1; i <= 6; ++i) {
    many.push_back({"h" + std::to_string(i), i, {v4(i), v6(i)}});
  }
  const auto planned = plan_candidates(hosts(many), plan_options{25, 5, true, true});
  ASSERT_EQ(planned.size(), 5u);
  EXPECT_EQ(planned.back().host_name, "h3");
}

TEST(plan_candidates, a_failed_lookup_plans_nothing) {
  dns::mx_result failed;
  failed.status = dns::lookup_status::temporary_failure;
  EXPECT_TRUE(plan_candidates(failed, plan_options{}).empty());
}

TEST(dns_failure_reply, maps_each_failure_to_its_code) {
  struct expectation {
    dns::failure_kind kind;
    std::uint16_t code;
    smtp::reply_enhanced_code enhanced;
    smtp::client_outcome outcome;
  };
  using smtp::client_outcome;
  const expectation table[] = {
      {dns::failure_kind::no_such_domain, 550, {5, 1, 2}, client_outcome::permanent_failure},
      {dns::failure_kind::null_mx, 556, {5, 1, 10}, client_outcome::permanent_failure},
      {dns::failure_kind::no_mail_route, 554, {5, 4, 4}, client_outcome::permanent_failure},
      {dns::failure_kind::bad_domain, 550, {5, 1, 3}, client_outcome::permanent_failure},
      {dns::failure_kind::server_failure, 451, {4, 4, 3}, client_outcome::transient_failure},
      {dns::failure_kind::timeout, 451, {4, 4, 3}, client_outcome::transient_failure},
      {dns::failure_kind::overloaded, 451, {4, 3, 0}, client_outcome::transient_failure},
  };
  for (const auto& row : table) {
    dns::mx_result result = dns::failure_result(row.kind, "what happened");
    smtp::parsed_reply reply;
    EXPECT_EQ(dns_failure_reply(result, reply), row.outcome);
    EXPECT_EQ(reply.code, row.code);
    EXPECT_EQ(reply.enhanced, row.enhanced);
    EXPECT_TRUE(reply.local);
    EXPECT_EQ(reply.text(), "what happened");
  }
}

candidate at(const char* name, std::uint8_t last) {
  return candidate{name, to_endpoint(v4(last), 25)};
}

smtp::parsed_reply server_reply(std::uint16_t code, smtp::reply_enhanced_code enhanced,
                                std::string_view text) {
  smtp::parsed_reply reply;
  reply.assign_local(code, enhanced, text);
  reply.local = false;  // as if the server said it
  return reply;
}

TEST(attempt_tracker, every_address_refused_is_transient_no_answer) {
  attempt_tracker tracker;
  tracker.record(at("mx1.test", 1), attempt_failure::connect_failed, ECONNREFUSED, nullptr);
  tracker.record(at("mx2.test", 2), attempt_failure::connect_failed, ETIMEDOUT, nullptr);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(tracker.tries(), 2u);
  EXPECT_EQ(reply.code, 451);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 4, 1}));
  EXPECT_EQ(reply.text(), "connect to mx2.test[192.0.2.2]:25: connection timed out");
}

TEST(attempt_tracker, every_server_refusing_for_good_is_permanent) {
  attempt_tracker tracker;
  const auto no = server_reply(554, {5, 7, 1}, "no mail from you");
  tracker.record(at("mx1.test", 1), attempt_failure::rejected, 0, &no);
  tracker.record(at("mx2.test", 2), attempt_failure::rejected, 0, &no);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::permanent_failure);
  EXPECT_EQ(reply.code, 554);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{5, 7, 1}));
  EXPECT_EQ(reply.text(), "mx2.test[192.0.2.2]:25 said: 554 no mail from you");
}

TEST(attempt_tracker, a_refusal_among_unreachable_servers_stays_transient) {
  attempt_tracker tracker;
  const auto no = server_reply(554, {5, 7, 1}, "no");
  tracker.record(at("mx1.test", 1), attempt_failure::connect_failed, ECONNREFUSED, nullptr);
  tracker.record(at("mx2.test", 2), attempt_failure::rejected, 0, &no);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 4, 1}));
}

TEST(attempt_tracker, a_last_4xx_greeting_is_passed_on) {
  attempt_tracker tracker;
  const auto busy = server_reply(421, {4, 3, 2}, "busy");
  tracker.record(at("mx1.test", 1), attempt_failure::rejected, 0, &busy);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.code, 421);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 3, 2}));
}

TEST(attempt_tracker, a_broken_session_is_a_bad_connection) {
  attempt_tracker tracker;
  smtp::parsed_reply lost;
  lost.assign_local(421, {4, 4, 2}, "connection lost");
  tracker.record(at("mx1.test", 1), attempt_failure::broken, 0, &lost);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 4, 2}));
  EXPECT_EQ(reply.text(), "mx1.test[192.0.2.1]:25 failed: 421 connection lost");
  tracker.reset();
  EXPECT_EQ(tracker.tries(), 0u);
}

// TLS that required/verify demand and a server could not give: transient 4.7.x whatever the
// server said (even a 5xx to STARTTLS), with the reason, and never counted as a refusal.
TEST(attempt_tracker, tls_failures_are_transient_security_failures) {
  attempt_tracker tracker;
  smtp::parsed_reply handshake;
  handshake.assign_local(421, {4, 7, 5},
                         "TLS handshake failed: certificate of mx1.test not verified: "
                         "hostname mismatch");
  tracker.record(at("mx1.test", 1), attempt_failure::tls, 0, &handshake);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.code, 451);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 7, 5}));
  EXPECT_EQ(reply.text(), "mx1.test[192.0.2.1]:25: TLS handshake failed: certificate of "
                          "mx1.test not verified: hostname mismatch");
  const auto refused = server_reply(554, {5, 7, 0}, "no TLS for you");
  tracker.record(at("mx2.test", 2), attempt_failure::tls, 0, &refused);
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.code, 451);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 7, 0}));
  EXPECT_EQ(reply.text(), "mx2.test[192.0.2.2]:25 said to STARTTLS: 554 no TLS for you");
  const auto odd = server_reply(454, {4, 3, 0}, "later");  // not a security code: X.7.5
  tracker.record(at("mx2.test", 2), attempt_failure::tls, 0, &odd);
  tracker.summary(reply);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 7, 5}));
}

// A relay host refusing our credentials (535 5.7.8, a 5xx) defers: the password is the
// operator's to fix, and a bounce would lose the mail. The server's reply is kept in the text.
TEST(attempt_tracker, auth_failures_defer_with_the_reply) {
  attempt_tracker tracker;
  const auto refused = server_reply(535, {5, 7, 8}, "Authentication credentials invalid");
  tracker.record(at("relay.test", 1), attempt_failure::auth, 0, &refused);
  smtp::parsed_reply reply;
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.code, 454);
  EXPECT_EQ(reply.enhanced, (smtp::reply_enhanced_code{4, 7, 8}));
  EXPECT_EQ(reply.text(), "relay.test[192.0.2.1]:25 said to AUTH: 535 Authentication "
                          "credentials invalid");
  smtp::parsed_reply local;
  local.assign_local(454, {4, 7, 0}, "AUTH needs TLS here");
  tracker.record(at("relay.test", 1), attempt_failure::auth, 0, &local);
  EXPECT_EQ(tracker.summary(reply), smtp::client_outcome::transient_failure);
  EXPECT_EQ(reply.text(), "relay.test[192.0.2.1]:25: AUTH needs TLS here");
}

}  // namespace
}  // namespace ringmta::outbound
