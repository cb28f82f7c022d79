// outbound with the DNS client on the ring against NSD (dns_server.py): MX preference and
// fallback (refused, 5xx greeting, silent server, connect timeout), implicit MX, null MX,
// NXDOMAIN, SERVFAIL, every address refused (bounded tries), every server refusing for good,
// and a smarthost given by name. MX hosts are 127.0.0.x addresses; one scripted sink listens
// on several of them with one port. Skips when NSD is not installed.
#include <gtest/gtest.h>

#include "harness.h"

namespace ringmta::outbound::test {
namespace {

using kind = record::kind;
using smtp::client_outcome;

std::string code_of(const record& r) {
  return std::to_string(r.code) + " " + std::to_string(r.enhanced.status_class) + "." +
         std::to_string(r.enhanced.subject) + "." + std::to_string(r.enhanced.detail);
}

class outbound_dns : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    _sink = new scripted_sink;
    // .3 and .4 serve, .5 greets with 554, .6 accepts and never greets; .2 and .10-.21 have
    // nothing listening (refused); .7 gets a listener whose backlog is full (connect timeout).
    if (!_sink->start({"127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"},
                      {"--greeting", "127.0.0.5=554 5.7.1 go away", "--silent", "127.0.0.6"})) {
      return;
    }
    std::vector<std::string> refused = {"@ MX 10 mx"};
    for (int i = 10; i <= 21; ++i) refused.push_back("mx A 127.0.0." + std::to_string(i));
    nlohmann::json spec;
    spec["zones"] = {
        {"fallback.test", {"@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.2", "mx2 A 127.0.0.3",
                           "relay A 127.0.0.3"}},
        {"greeting.test", {"@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.5", "mx2 A 127.0.0.3"}},
        {"silent.test", {"@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.6", "mx2 A 127.0.0.3"}},
        {"slow.test", {"@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.7", "mx2 A 127.0.0.3"}},
        {"implicit.test", {"@ A 127.0.0.4"}},
        {"nullmx.test", {"@ MX 0 ."}},
        {"refused.test", refused},
        {"rejected.test", {"@ MX 10 mx1", "mx1 A 127.0.0.5"}},
    };
    // 60 MX records with long names: the answer exceeds 1232 bytes, NSD sets TC, the resolver
    // asks again over TCP (RFC 7766).
    std::vector<std::string> large;
    for (int i = 0; i < 60; ++i) {
      const std::string host = "mx" + std::to_string(i) + "-with-a-rather-long-label-to-fill-space";
      large.push_back("@ MX " + std::to_string(10 + i) + " " + host);
      large.push_back(host + " A 127.0.0.3");
    }
    spec["zones"]["large.test"] = large;
    spec["broken_zones"] = {"broken.test"};
    _dns = new dns_server;
    if (!_dns->start(spec)) return;
    _ready = true;
  }
  static void TearDownTestSuite() {
    delete _dns;
    delete _sink;
    _dns = nullptr;
    _sink = nullptr;
  }

  void SetUp() override {
    if (::access("/usr/sbin/nsd", X_OK) != 0) GTEST_SKIP() << "nsd is not installed";
    ASSERT_TRUE(_ready) << "the sink or NSD did not start";
    _harness = std::make_unique<harness>(options());
    ASSERT_TRUE(_harness->started());
  }

  static harness_options options() {
    harness_options o;
    o.config.helo_name = "client.test";
    o.config.timeout_connect_ms = 1000;
    o.config.timeout_greeting_ms = 2000;  // the silent server costs this much; slack for load
    o.config.idle_timeout_ms = 1000;
    o.config.receive_buffer_count = 64;
    o.resolvers.push_back({dns::ip_address::v4(127, 0, 0, 1), _dns->port()});
    return o;
  }

  // Delivers one message to `name` (MX route unless host) and returns the closed record.
  record deliver_to(std::uint64_t destination, const char* name, bool host = false) {
    const auto& job = _spool.add(make_message(1500, static_cast<std::uint32_t>(destination)),
                                 {"user@" + std::string(name)}).job;
    _harness->deliver(0, destination,
                      route{host ? route_kind::host : route_kind::mx, name, _sink->port()},
                      {&job});
    EXPECT_TRUE(_harness->log.wait_for(destination, kind::closed, 1)) << name;
    const auto closed = _harness->log.of(destination, kind::closed);
    return closed.empty() ? record{} : closed[0];
  }

  record delivery_of(std::uint64_t destination) {
    const auto found = _harness->log.of(destination, kind::delivery);
    EXPECT_EQ(found.size(), 1u);
    return found.empty() ? record{} : found[0];
  }

  std::string at(const char* address) const {
    return std::string(address) + ":" + std::to_string(_sink->port());
  }

  static scripted_sink* _sink;
  static dns_server* _dns;
  static bool _ready;
  test_spool _spool;
  std::unique_ptr<harness> _harness;
};

scripted_sink* outbound_dns::_sink = nullptr;
dns_server* outbound_dns::_dns = nullptr;
bool outbound_dns::_ready = false;

TEST_F(outbound_dns, first_mx_refuses_so_the_second_gets_the_mail) {
  const record closed = deliver_to(1, "fallback.test");
  EXPECT_EQ(closed.reason, close_reason::released);
  EXPECT_EQ(closed.tries, 2u);
  const record done = delivery_of(1);
  EXPECT_EQ(done.outcome, client_outcome::accepted);
  EXPECT_EQ(done.host, "mx2.fallback.test");
  EXPECT_EQ(done.address, at("127.0.0.3"));
}

TEST_F(outbound_dns, a_554_greeting_moves_on_to_the_next_mx) {
  const auto before = _sink->connections("127.0.0.5");
  const record closed = deliver_to(2, "greeting.test");
  EXPECT_EQ(closed.tries, 2u);
  EXPECT_EQ(delivery_of(2).outcome, client_outcome::accepted);
  EXPECT_EQ(delivery_of(2).host, "mx2.greeting.test");
  EXPECT_EQ(_sink->connections("127.0.0.5"), before + 1);
}

TEST_F(outbound_dns, a_silent_server_times_out_and_the_next_mx_gets_the_mail) {
  const record closed = deliver_to(3, "silent.test");
  EXPECT_EQ(closed.tries, 2u);
  EXPECT_EQ(delivery_of(3).outcome, client_outcome::accepted);
  EXPECT_EQ(delivery_of(3).address, at("127.0.0.3"));
  EXPECT_GE(_harness->counters(0).timeouts, 1u);
}

TEST_F(outbound_dns, a_connect_timeout_moves_on_to_the_next_mx) {
  // A listener that never accepts, with its backlog filled: further SYNs are dropped, so a
  // connect to it hangs until our connect timeout.
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(_sink->port());
  ::inet_pton(AF_INET, "127.0.0.7", &address.sin_addr);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 0), 0);
  int fillers[2];
  for (int& filler : fillers) {
    filler = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    (void)::connect(filler, reinterpret_cast<sockaddr*>(&address), sizeof address);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the first handshake completes
  const record closed = deliver_to(4, "slow.test");
  EXPECT_EQ(closed.tries, 2u);
  EXPECT_EQ(delivery_of(4).outcome, client_outcome::accepted);
  EXPECT_EQ(delivery_of(4).host, "mx2.slow.test");
  EXPECT_GE(_harness->counters(0).timeouts, 1u);
  for (const int filler : fillers) ::close(filler);
  ::close(listener);
}

TEST_F(outbound_dns, a_domain_without_mx_gets_mail_at_its_own_address) {
  deliver_to(5, "implicit.test");
  EXPECT_EQ(delivery_of(5).outcome, client_outcome::accepted);
  EXPECT_EQ(delivery_of(5).host, "implicit.test");
  EXPECT_EQ(delivery_of(5).address, at("127.0.0.4"));
}

TEST_F(outbound_dns, dns_failures_end_the_destination) {
  struct expectation {
    const char* domain;
    client_outcome outcome;
    const char* code;
  };
  const expectation table[] = {
      {"nullmx.test", client_outcome::permanent_failure, "556 5.1.10"},    // RFC 7505
      {"nosuch.fallback.test", client_outcome::permanent_failure, "550 5.1.2"},  // NXDOMAIN
      {"broken.test", client_outcome::transient_failure, "451 4.4.3"},     // SERVFAIL
  };
  std::uint64_t destination = 10;
  for (const auto& row : table) {
    const record closed = deliver_to(destination, row.domain);
    EXPECT_EQ(closed.reason, close_reason::destination_failed) << row.domain;
    EXPECT_EQ(closed.outcome, row.outcome) << row.domain;
    EXPECT_EQ(code_of(closed), row.code) << row.domain << ": " << closed.text;
    EXPECT_TRUE(closed.local);
    EXPECT_FALSE(closed.ever_ready);
    EXPECT_EQ(closed.tries, 0u);
    EXPECT_TRUE(_harness->log.of(destination, kind::delivery).empty());
    ++destination;
  }
}

TEST_F(outbound_dns, every_address_refused_is_transient_after_a_bounded_number_of_tries) {
  const record closed = deliver_to(20, "refused.test");
  EXPECT_EQ(closed.reason, close_reason::destination_failed);
  EXPECT_EQ(closed.outcome, client_outcome::transient_failure);
  EXPECT_EQ(code_of(closed), "451 4.4.1") << closed.text;
  EXPECT_EQ(closed.tries, 10u);  // 12 addresses, addresses_max 10
  EXPECT_NE(closed.text.find("refused"), std::string::npos) << closed.text;
}

TEST_F(outbound_dns, every_server_refusing_for_good_is_permanent) {
  const record closed = deliver_to(21, "rejected.test");
  EXPECT_EQ(closed.reason, close_reason::destination_failed);
  EXPECT_EQ(closed.outcome, client_outcome::permanent_failure);
  EXPECT_EQ(code_of(closed), "554 5.7.1") << closed.text;
  EXPECT_EQ(closed.host, "mx1.rejected.test");
}

TEST_F(outbound_dns, a_truncated_mx_answer_is_asked_again_over_tcp) {
  deliver_to(23, "large.test");
  EXPECT_EQ(delivery_of(23).outcome, client_outcome::accepted);
  EXPECT_EQ(delivery_of(23).host, "mx0-with-a-rather-long-label-to-fill-space.large.test");
  const auto counters = _harness->dns_counters(0);
  EXPECT_GE(counters.first.truncated, 1u);
  EXPECT_GE(counters.first.tcp_sent, 1u);
  EXPECT_GE(counters.second.tcp_connections, 1u);
}

TEST_F(outbound_dns, a_resolver_that_cannot_be_reached_is_skipped) {
  auto o = options();
  // A link-local IPv6 address without a scope: connect() refuses it (EINVAL) on any host.
  o.resolvers.insert(o.resolvers.begin(),
                     {dns::ip_address::parse("fe80::1").value(), 53});
  _harness = std::make_unique<harness>(o);
  ASSERT_TRUE(_harness->started());
  deliver_to(24, "fallback.test");
  EXPECT_EQ(delivery_of(24).outcome, client_outcome::accepted);
  EXPECT_GE(_harness->dns_counters(0).second.udp_sends_refused, 1u);  // failed over at once
}

// A resolver port nobody listens on (ICMP port unreachable: fails at once) and one that never
// answers (the resolver's timeout, driven by the shard's timer wheel): both 4.4.3.
TEST(outbound_dns_servers, unreachable_or_silent_resolvers_fail_transiently) {
  const int silent = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof at;
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&at), &length);
  const std::uint16_t silent_port = ntohs(at.sin_port);
  for (const bool unreachable : {true, false}) {
    harness_options o;
    // A UDP port just bound and closed again is free: its datagrams get port unreachable.
    std::uint16_t port = silent_port;
    if (unreachable) {
      const int probe = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in any{};
      any.sin_family = AF_INET;
      any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t any_length = sizeof any;
      ::bind(probe, reinterpret_cast<sockaddr*>(&any), sizeof any);
      ::getsockname(probe, reinterpret_cast<sockaddr*>(&any), &any_length);
      port = ntohs(any.sin_port);
      ::close(probe);
    }
    o.resolvers.push_back({dns::ip_address::v4(127, 0, 0, 1), port});
    harness h(o);
    ASSERT_TRUE(h.started());
    h.run(0, [](harness::shard_parts& parts) {
      if (!parts.out->open_connection(1, route{route_kind::mx, "example.test", 25})) std::abort();
    });
    ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
    const record closed = h.log.of(1, kind::closed)[0];
    EXPECT_EQ(closed.reason, close_reason::destination_failed);
    EXPECT_EQ(closed.outcome, client_outcome::transient_failure);
    EXPECT_EQ(code_of(closed), "451 4.4.3") << closed.text;
    const auto counters = h.dns_counters(0);
    if (unreachable) {
      EXPECT_GE(counters.second.port_unreachable, 1u);
    } else {
      EXPECT_GE(counters.first.timeouts, 1u);
    }
  }
  ::close(silent);
}

TEST_F(outbound_dns, a_smarthost_given_by_name_is_resolved_to_its_address) {
  deliver_to(22, "relay.fallback.test", /*host=*/true);
  EXPECT_EQ(delivery_of(22).outcome, client_outcome::accepted);
  EXPECT_EQ(delivery_of(22).host, "relay.fallback.test");
  EXPECT_EQ(delivery_of(22).address, at("127.0.0.3"));
}

}  // namespace
}  // namespace ringmta::outbound::test
