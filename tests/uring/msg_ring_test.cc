// IORING_OP_MSG_RING with data: a CQE posted into another thread's ring, waking it from its wait.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

TEST(msg_ring, posts_a_completion_into_a_sleeping_ring) {
  ring sender;
  RINGMTA_INIT_OR_SKIP(sender, ring_options{});
  if (!sender.features().msg_ring) GTEST_SKIP() << "kernel lacks IORING_OP_MSG_RING";
  std::atomic<int> target_fd{-1};
  std::atomic<bool> done{false};
  completion received{};
  std::size_t received_count = 0;
  const std::uint64_t target_ud = pack_user_data(30, 7, 99);
  std::thread target([&] {
    ring r;  // created on its own thread: SINGLE_ISSUER
    if (!r.init(ring_options{}).ok()) return;
    target_fd = r.fd();
    // Sleeps in io_uring_enter until the message arrives (bounded by the 5 s deadline).
    const auto got = test::wait_completions(r, 2);
    received_count = got.size();
    if (!got.empty()) received = got[0];
    done = true;
  });
  while (target_fd.load() < 0 && !done) std::this_thread::yield();
  ASSERT_GE(target_fd.load(), 0);
  const std::uint64_t own_ud = pack_user_data(31, 0, 1);
  ASSERT_TRUE(sender.prep_msg_ring(target_fd, 4242, target_ud, own_ud).ok());
  ASSERT_TRUE(sender.prep_msg_ring(target_fd, -5, target_ud + 1, own_ud, sqe::skip_success).ok());
  const auto own = test::wait_completions(sender, 1, 1000);
  ASSERT_EQ(own.size(), 1u);  // the second send succeeded silently (skip_success)
  EXPECT_EQ(own[0].user_data, own_ud);
  EXPECT_EQ(own[0].res, 0);
  target.join();
  ASSERT_EQ(received_count, 2u);
  EXPECT_EQ(received.user_data, target_ud);
  EXPECT_EQ(received.res, 4242);
  EXPECT_EQ(received.flags, 0u);
}

TEST(msg_ring, to_a_bad_fd_fails_on_the_sender) {
  ring sender;
  RINGMTA_INIT_OR_SKIP(sender, ring_options{});
  if (!sender.features().msg_ring) GTEST_SKIP() << "kernel lacks IORING_OP_MSG_RING";
  ASSERT_TRUE(sender.prep_msg_ring(0, 1, 1, pack_user_data(31, 0, 2)).ok());  // stdin: no ring
  const auto own = test::wait_completions(sender, 1);
  ASSERT_EQ(own.size(), 1u);
  EXPECT_LT(own[0].res, 0);
}

}  // namespace
}  // namespace ringmta::io
