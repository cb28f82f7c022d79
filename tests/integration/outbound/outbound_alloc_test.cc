// Steady-state deliveries allocate nothing (docs/style.md §5): over one reused connection to
// smtp-sink, operator new is counted on the shard's thread between the 20th and the 80th
// delivery, for staged (small) and spliced (large) bodies. The connection, its session, its
// staging buffer and the pipe are all made before the window opens.
#include <cstdlib>
#include <new>

#include <gtest/gtest.h>

#include "allocation_counter.h"
#include "harness.h"


namespace ringmta::outbound::test {
namespace {

// control: one allocation of our own inside the window, so the count is shown to work.
long allocations_per_window(std::size_t size, bool control = false) {
  postfix_sink sink;
  if (!sink.start("127.0.0.1")) return -1;
  harness_options options;
  options.count_only = true;
  options.config.helo_name = "client.test";
  harness h(options);
  if (!h.started()) return -1;
  test_spool spool;
  const delivery& job = spool.add(make_message(size, 1), {"a@example.net"}).job;
  std::vector<const delivery*> jobs(100, &job);
  ::ringmta::testing::set_counting_allocations(false);
  ::ringmta::testing::reset_allocations();
  h.run(0, [control](harness::shard_parts& parts) {
    parts.embedder->on_delivered = [control](std::uint64_t delivered) {
      if (delivered == 20) ::ringmta::testing::set_counting_allocations_on_this_thread(true);
      if (delivered == 50 && control) {
        static int* volatile kept;  // volatile: the pair cannot be elided
        kept = new int(1);
        delete kept;
      }
      if (delivered == 80) ::ringmta::testing::set_counting_allocations_on_this_thread(false);
    };
  });
  h.deliver(0, 1, route{route_kind::host, "127.0.0.1", sink.port()}, jobs);
  if (!h.log.wait_for(1, record::kind::closed, 1)) return -1;
  if (h.embedder(0).accepted.load() != 100) return -1;
  return static_cast<long>(::ringmta::testing::allocations());
}

TEST(outbound_alloc, the_count_sees_an_allocation_in_the_window) {
  EXPECT_EQ(allocations_per_window(1000, true), 1);
}

TEST(outbound_alloc, a_small_staged_delivery_allocates_nothing) {
  EXPECT_EQ(allocations_per_window(1000), 0);
}

TEST(outbound_alloc, a_large_spliced_delivery_allocates_nothing) {
  EXPECT_EQ(allocations_per_window(300 * 1024), 0);
}

}  // namespace
}  // namespace ringmta::outbound::test
