// Steady-state deliveries allocate nothing (docs/style.md §5): over one reused connection to
// smtp-sink, operator new is counted on the shard's thread between the 20th and the 80th
// delivery, for staged (small) and spliced (large) bodies. The connection, its session, its
// staging buffer and the pipe are all made before the window opens.
#include <cstdlib>
#include <new>

#include <gtest/gtest.h>

#include "harness.h"

namespace {
thread_local bool counting = false;  // only the shard thread counts, only inside the window
std::atomic<long> allocations{0};
}  // namespace

// Every replaceable form that does not take an alignment, so allocation and release pair up.
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (counting) allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new(std::size_t size) {
  if (void* block = operator new(size, std::nothrow)) return block;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return operator new(size, std::nothrow);
}
// GCC cannot see that the replaced operator new above is malloc-based.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* block) noexcept { std::free(block); }
void operator delete(void* block, std::size_t) noexcept { std::free(block); }
void operator delete(void* block, const std::nothrow_t&) noexcept { std::free(block); }
void operator delete[](void* block) noexcept { std::free(block); }
void operator delete[](void* block, std::size_t) noexcept { std::free(block); }
void operator delete[](void* block, const std::nothrow_t&) noexcept { std::free(block); }

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
  allocations = 0;
  h.run(0, [control](harness::shard_parts& parts) {
    parts.embedder->on_delivered = [control](std::uint64_t delivered) {
      if (delivered == 20) counting = true;   // on the shard's thread
      if (delivered == 50 && control) {
        static int* volatile kept;  // volatile: the pair cannot be elided
        kept = new int(1);
        delete kept;
      }
      if (delivered == 80) counting = false;
    };
  });
  h.deliver(0, 1, route{route_kind::host, "127.0.0.1", sink.port()}, jobs);
  if (!h.log.wait_for(1, record::kind::closed, 1)) return -1;
  if (h.embedder(0).accepted.load() != 100) return -1;
  return allocations.load();
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
