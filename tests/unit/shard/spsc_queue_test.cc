// spsc_queue: order, bound, batch drain, and no loss between two threads under back-pressure.
#include "ringmta/shard/spsc_queue.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "ringmta/core/clock.h"

namespace ringmta::shard {
namespace {

TEST(spsc_queue, fifo_and_bounded) {
  spsc_queue<int> q(4);
  EXPECT_TRUE(q.empty_for_consumer());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(q.try_push(i));
  EXPECT_FALSE(q.try_push(99)) << "full: refused, not overwritten";
  EXPECT_EQ(q.size_approx(), 4u);
  int out = -1;
  ASSERT_TRUE(q.try_pop(out));
  EXPECT_EQ(out, 0);
  EXPECT_TRUE(q.try_push(4));
  std::vector<int> rest;
  EXPECT_EQ(q.drain([&](const int& v) { rest.push_back(v); }, 100), 4u);
  EXPECT_EQ(rest, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_FALSE(q.try_pop(out));
  EXPECT_TRUE(q.empty_for_consumer());
}

TEST(spsc_queue, drain_respects_its_limit) {
  spsc_queue<int> q(8);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(q.try_push(i));
  int sum = 0;
  EXPECT_EQ(q.drain([&](const int& v) { sum += v; }, 2), 2u);
  EXPECT_EQ(sum, 1);
  EXPECT_EQ(q.size_approx(), 4u);
}

TEST(spsc_queue, two_threads_lose_nothing_and_keep_order) {
  constexpr std::uint64_t count = 300'000;
  spsc_queue<std::uint64_t> q(64);  // small: the producer meets a full queue often
  std::uint64_t refused = 0;
  const std::uint64_t deadline = core::monotonic_ns() + 60'000'000'000ull;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < count;) {
      if (q.try_push(i)) {
        ++i;
      } else {
        ++refused;
        std::this_thread::yield();  // the machine's cores are shared: do not spin hard
        if (core::monotonic_ns() > deadline) return;
      }
    }
  });
  std::uint64_t expected = 0;
  bool in_order = true;
  while (expected < count && core::monotonic_ns() < deadline) {
    if (q.drain([&](const std::uint64_t& v) { in_order = in_order && v == expected++; }, 32) == 0) {
      std::this_thread::yield();
    }
  }
  producer.join();
  EXPECT_EQ(expected, count);
  EXPECT_TRUE(in_order);
  EXPECT_TRUE(q.empty_for_consumer());
  std::printf("producer met a full queue %llu times\n", static_cast<unsigned long long>(refused));
}

}  // namespace
}  // namespace ringmta::shard
