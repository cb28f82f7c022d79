// io::buffer_ring on the real kernel: every buffer comes back after recycle, an empty group gives
// -ENOBUFS, held buffers are not reused, batched recycles are published at flush(); and the
// unregistered ring a simulated host uses.
#include "ringmta/io/buffer_ring.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

struct fixture : ::testing::Test {
  void SetUp() override {
    RINGMTA_INIT_OR_SKIP(r, ring_options{});
    if (!r.features().buffer_ring) GTEST_SKIP() << "kernel lacks provided buffer rings";
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  }
  void TearDown() override {
    if (pair[0] >= 0) close(pair[0]);
    if (pair[1] >= 0) close(pair[1]);
  }
  // One single-shot receive from the group; returns its completion.
  completion receive_one(std::uint16_t group) {
    EXPECT_TRUE(r.prep_recv_select(pair[0], group, pack_user_data(20, 0, ++sequence)).ok());
    const auto got = test::wait_completions(r, 1);
    EXPECT_EQ(got.size(), 1u);
    return got.empty() ? completion{} : got[0];
  }
  ring r;
  int pair[2] = {-1, -1};
  std::uint32_t sequence = 0;
};

TEST_F(fixture, rejects_bad_options) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.buffer_count = 3;
  EXPECT_EQ(buffers.init(r, options).error(), EINVAL);
  buffer_ring other;
  options.buffer_count = 4;
  options.group_id = 0xffff;
  EXPECT_EQ(other.init(r, options).error(), EINVAL);
}

TEST_F(fixture, exhaustion_gives_enobufs_and_recycle_restores) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.group_id = 3;
  options.buffer_count = 4;
  options.buffer_bytes = 64;
  options.recycle_batch = 1;
  ASSERT_TRUE(buffers.init(r, options).ok());
  std::set<std::uint16_t> ids;
  for (int i = 0; i < 4; ++i) {
    const std::string message = "message " + std::to_string(i);
    ASSERT_EQ(write(pair[1], message.data(), message.size()),
              static_cast<ssize_t>(message.size()));
    const completion c = receive_one(3);
    ASSERT_TRUE(c.has_buffer()) << c.res;
    const auto bytes = buffers.consume(c);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), message);
    ids.insert(c.buffer_id());
  }
  EXPECT_EQ(ids.size(), 4u);  // four distinct buffers, none reused while held
  EXPECT_EQ(buffers.buffers_out(), 4u);
  ASSERT_EQ(write(pair[1], "x", 1), 1);
  const completion starved = receive_one(3);
  EXPECT_EQ(starved.res, -ENOBUFS);
  EXPECT_FALSE(starved.has_buffer());
  buffers.note_enobufs();
  buffers.recycle(*ids.begin());
  buffers.flush();
  EXPECT_EQ(buffers.buffers_out(), 3u);
  const completion again = receive_one(3);
  ASSERT_TRUE(again.has_buffer()) << again.res;
  EXPECT_EQ(again.buffer_id(), *ids.begin());
  EXPECT_EQ(buffers.consume(again).size(), 1u);
  EXPECT_EQ(buffers.enobufs_seen(), 1u);
  for (std::uint16_t id : ids) buffers.recycle(id);
  buffers.flush();
  EXPECT_EQ(buffers.buffers_out(), 0u);
  EXPECT_EQ(buffers.buffers_held(), 0u);
}

TEST_F(fixture, hold_keeps_a_buffer_until_every_owner_recycles) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.group_id = 4;
  options.buffer_count = 2;
  options.buffer_bytes = 32;
  options.recycle_batch = 1;
  ASSERT_TRUE(buffers.init(r, options).ok());
  ASSERT_EQ(write(pair[1], "abc", 3), 3);
  const completion c = receive_one(4);
  ASSERT_TRUE(c.has_buffer());
  (void)buffers.consume(c);
  buffers.hold(c.buffer_id());  // e.g. the spool write and the session both keep the bytes
  buffers.recycle(c.buffer_id());
  EXPECT_EQ(buffers.buffers_held(), 1u);
  EXPECT_EQ(std::memcmp(buffers.view(c.buffer_id(), 3).data(), "abc", 3), 0);
  buffers.recycle(c.buffer_id());
  EXPECT_EQ(buffers.buffers_held(), 0u);
  EXPECT_EQ(buffers.recycled_total(), 1u);
}

TEST_F(fixture, recycles_are_batched_until_flush) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.group_id = 5;
  options.buffer_count = 16;
  options.buffer_bytes = 32;
  options.recycle_batch = 4;
  ASSERT_TRUE(buffers.init(r, options).ok());
  std::vector<std::uint16_t> held;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(write(pair[1], "z", 1), 1);
    const completion c = receive_one(5);
    ASSERT_TRUE(c.has_buffer());
    (void)buffers.consume(c);
    held.push_back(c.buffer_id());
  }
  for (std::uint16_t id : held) buffers.recycle(id);
  EXPECT_EQ(buffers.recycled_total(), 0u);  // 3 < batch of 4 and supply is plentiful
  EXPECT_EQ(buffers.buffers_out(), 3u);
  buffers.flush();
  EXPECT_EQ(buffers.recycled_total(), 3u);
  EXPECT_EQ(buffers.buffers_out(), 0u);
}

// Unregistered (a simulated host's kernel, tests/sim): take_as_kernel hands out the published
// buffers in ring order, then nothing (the kernel's -ENOBUFS); a buffer comes back once
// consumed, recycled and flushed, as with the kernel.
TEST(unregistered_buffer_ring, the_simulated_kernel_side_takes_what_was_published) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.group_id = 3;
  options.buffer_count = 8;
  options.buffer_bytes = 64;
  options.recycle_batch = 2;  // one recycle stays unpublished until flush()
  ASSERT_TRUE(buffers.init_unregistered(options).ok());
  std::set<std::uint16_t> taken;
  for (int i = 0; i < 8; ++i) {
    const auto pick = buffers.take_as_kernel();
    ASSERT_TRUE(pick.has_value());
    EXPECT_EQ(pick->memory.size(), 64u);
    taken.insert(pick->buffer_id);
  }
  EXPECT_EQ(taken.size(), 8u);
  EXPECT_FALSE(buffers.take_as_kernel().has_value());
  // Buffer 2 "received" 5 bytes: consumed, recycled, then published at flush().
  const completion done{pack_user_data(20, 0, 1), 5, cqe_flag_buffer | (2u << cqe_buffer_shift)};
  EXPECT_EQ(buffers.consume(done).size(), 5u);
  buffers.recycle(2);
  EXPECT_FALSE(buffers.take_as_kernel().has_value());
  buffers.flush();
  const auto again = buffers.take_as_kernel();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->buffer_id, 2);
  EXPECT_FALSE(buffers.take_as_kernel().has_value());
}

TEST(unregistered_buffer_ring, incremental_mode_is_refused) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.incremental = true;
  EXPECT_EQ(buffers.init_unregistered(options).error(), EINVAL);
}

}  // namespace
}  // namespace ringmta::io
