// The inbound daemon's pure policies (issue 10): session deadlines for slow senders, and the
// recipient policy (own names, postmaster, relay rights).
#include <gtest/gtest.h>

#include "ringmta/server/inbound.h"
#include "ringmta/server/recipient_policy.h"
#include "session_deadline.h"

namespace ringmta::server {
namespace {

TEST(session_deadline, partial_command_lines_buy_no_time) {
  session_deadline d({2000, 3000, 1000, 500});
  EXPECT_EQ(d.expect_command(10'000, false), 12'000u);
  // A byte every second that completes nothing: the deadline stays where it was.
  EXPECT_EQ(d.received(11'000, 1, false, false, false), 12'000u);
  EXPECT_EQ(d.received(11'900, 1, false, false, false), 12'000u);
  // A completed line starts a new one.
  EXPECT_EQ(d.received(11'950, 6, false, true, false), 13'950u);
}

TEST(session_deadline, data_earns_time_at_the_minimum_rate_up_to_the_block_timeout) {
  session_deadline d({2000, 3000, 1000, 500});
  d.expect_command(0, false);
  EXPECT_EQ(d.received(100, 10, true, true, false), 3100u);   // DATA: the block timeout
  EXPECT_EQ(d.received(1100, 500, true, false, false), 3600u);  // +500 ms for 500 octets
  EXPECT_EQ(d.received(1200, 100000, true, false, false), 4200u);  // never beyond now + 3 s
  // A trickle of 1 octet every 100 ms earns 1 ms each: the deadline comes.
  std::uint64_t now = 1200;
  std::uint64_t deadline = 4200;
  while (now < deadline) {
    now += 100;
    deadline = d.received(now, 1, true, false, false);
  }
  EXPECT_LE(now, 4300u);  // about the block timeout after the last real block
  // The message ends: the next command has the command timeout.
  EXPECT_EQ(d.received(5000, 5, false, true, false), 7000u);
}

TEST(session_deadline, load_caps_every_deadline) {
  session_deadline d({300'000, 180'000, 500, 10'000});
  EXPECT_EQ(d.expect_command(0, false), 300'000u);
  EXPECT_EQ(d.shorten(1000, true), 11'000u);        // load came: open sessions shortened
  EXPECT_EQ(d.expect_command(2000, true), 12'000u);  // new deadlines capped too
  EXPECT_EQ(d.received(3000, 10, true, true, true), 13'000u);
  session_deadline unchanged({300'000, 180'000, 500, 0});  // under_load 0: no change
  EXPECT_EQ(unchanged.expect_command(0, true), 300'000u);
}

smtp::mailbox box(std::string_view address, std::string_view local, std::string_view domain) {
  smtp::mailbox m;
  m.address = address;
  m.local_part = local;
  m.domain = domain;
  return m;
}

TEST(recipient_policy, own_names_postmaster_and_relay) {
  relay_policy relay;
  relay.relay_domains = {"relay.example", "mx.example"};
  recipient_policy policy;
  policy.hostname = "host.example";
  policy.own_literals = {"[192.0.2.1]"};
  policy.routed = {"routed.example"};
  policy.postmaster = "hostmaster@elsewhere.example";
  smtp::mailbox bare;
  bare.is_postmaster = true;
  bare.local_part = "Postmaster";
  const auto pm = policy.decide(bare, false, relay);
  EXPECT_EQ(pm.verdict, recipient_verdict::accept);
  EXPECT_EQ(pm.address, "hostmaster@elsewhere.example");
  EXPECT_EQ(policy.decide(box("POSTMASTER@Host.Example", "POSTMASTER", "Host.Example"), false,
                          relay).address, "hostmaster@elsewhere.example");
  EXPECT_EQ(policy.decide(box("postmaster@[192.0.2.1]", "postmaster", "[192.0.2.1]"), false,
                          relay).verdict, recipient_verdict::accept);
  EXPECT_EQ(policy.decide(box("u@host.example", "u", "host.example"), true, relay).verdict,
            recipient_verdict::no_mailbox);  // even for mynetworks: no mailbox here
  EXPECT_EQ(policy.decide(box("u@localhost", "u", "localhost"), true, relay).verdict,
            recipient_verdict::no_mailbox);
  EXPECT_EQ(policy.decide(box("u@relay.example", "u", "relay.example"), false, relay).verdict,
            recipient_verdict::accept);
  EXPECT_EQ(policy.decide(box("u@other.example", "u", "other.example"), false, relay).verdict,
            recipient_verdict::relay_denied);
  EXPECT_EQ(policy.decide(box("u@other.example", "u", "other.example"), true, relay).verdict,
            recipient_verdict::accept);
  // A host name listed in relay_domains or routed is relayed, not ours.
  policy.hostname = "mx.example";
  EXPECT_EQ(policy.decide(box("u@mx.example", "u", "mx.example"), false, relay).verdict,
            recipient_verdict::accept);
  policy.hostname = "routed.example";
  EXPECT_EQ(policy.decide(box("u@routed.example", "u", "routed.example"), true, relay).verdict,
            recipient_verdict::accept);
  policy.postmaster.clear();
  EXPECT_EQ(policy.decide(bare, true, relay).verdict, recipient_verdict::no_postmaster);
}

}  // namespace
}  // namespace ringmta::server
