// A steady-state transaction of smtp::client_session allocates nothing (DESIGN principle 8):
// global operator new is replaced here to count, and must stay at zero while a warmed-up
// session sends messages to an in-memory server, pipelined and one command at a time.
#include <atomic>
#include <cstdlib>
#include <new>

#include <gtest/gtest.h>

#include "allocation_counter.h"
#include "canned_server.h"
#include "ringmta/smtp/client_session.h"


namespace ringmta::smtp {
namespace {

using client_testing::canned_loop_counts;
using client_testing::canned_server;
using client_testing::run_until_idle;

void steady_state_allocates_nothing(bool pipelining) {
  client_config config;
  config.helo_name = "client.example";
  client_session session(config);
  canned_server server(pipelining);
  canned_loop_counts counts;
  ASSERT_EQ(run_until_idle(session, server, counts), client_event_kind::ready);

  const client_recipient recipients[] = {
      {"a@example.org", "SUCCESS,FAILURE", "rfc822;a@example.org"},
      {"b@example.org", {}, {}},
      {"c@example.org", {}, {}}};
  client_envelope envelope;
  envelope.reverse_path = "sender@example.com";
  envelope.recipients = recipients;
  envelope.size_bytes = 4321;
  envelope.body = client_body_type::eight_bit_mime;
  envelope.dsn_envid = "ID1";
  envelope.dsn_ret = "HDRS";

  // Warm-up transaction, then count over many.
  session.start_transaction(envelope);
  ASSERT_EQ(run_until_idle(session, server, counts), client_event_kind::ready);
  constexpr std::size_t transactions = 2000;
  ::ringmta::testing::reset_allocations();
  ::ringmta::testing::set_counting_allocations(true);
  for (std::size_t i = 0; i < transactions; ++i) {
    session.start_transaction(envelope);
    if (run_until_idle(session, server, counts) != client_event_kind::ready) break;
  }
  session.quit();
  const client_event_kind last = run_until_idle(session, server, counts);
  ::ringmta::testing::set_counting_allocations(false);
  EXPECT_EQ(::ringmta::testing::allocations(), 0u);
  EXPECT_EQ(last, client_event_kind::closed);
  EXPECT_EQ(server.messages(), transactions + 1);
  EXPECT_EQ(counts.accepted_messages, transactions + 1);
  EXPECT_EQ(counts.recipient_results, 3 * (transactions + 1));
}

TEST(client_session_allocation, pipelined_transactions_allocate_nothing) {
  steady_state_allocates_nothing(true);
}

TEST(client_session_allocation, one_command_at_a_time_allocates_nothing) {
  steady_state_allocates_nothing(false);
}

TEST(client_session_allocation, the_counter_counts) {
  // Guards the test itself: an allocation while counting is seen.
  ::ringmta::testing::reset_allocations();
  ::ringmta::testing::set_counting_allocations(true);
  auto* leak_check = new int(7);
  ::ringmta::testing::set_counting_allocations(false);
  EXPECT_EQ(::ringmta::testing::allocations(), 1u);
  delete leak_check;
}

}  // namespace
}  // namespace ringmta::smtp
