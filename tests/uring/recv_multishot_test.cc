// Multishot recv with a provided buffer ring: a buffer per arrival, -ENOBUFS (ending the
// multishot) when the group is empty, re-arm after recycling, EOF; and incremental buffers.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "ringmta/io/buffer_ring.h"
#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

std::string text(std::span<std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

struct recv_fixture : ::testing::Test {
  void SetUp() override {
    RINGMTA_INIT_OR_SKIP(r, ring_options{});
    if (!r.features().multishot_recv || !r.features().buffer_ring) {
      GTEST_SKIP() << "kernel lacks multishot recv or provided buffer rings";
    }
    std::uint16_t port = 0;
    const int listen_fd = test::listen_loopback(&port);
    ASSERT_GE(listen_fd, 0);
    client = test::connect_loopback(port);
    server = accept(listen_fd, nullptr, nullptr);
    close(listen_fd);
    ASSERT_GE(client, 0);
    ASSERT_GE(server, 0);
  }
  void TearDown() override {
    if (client >= 0) close(client);
    if (server >= 0) close(server);
  }
  void send_text(const std::string& s) {
    ASSERT_EQ(write(client, s.data(), s.size()), static_cast<ssize_t>(s.size()));
  }
  ring r;
  int client = -1, server = -1;
};

TEST_F(recv_fixture, buffers_per_arrival_then_enobufs_then_rearm_then_eof) {
  buffer_ring buffers;
  buffer_ring_options options;
  options.group_id = 7;
  options.buffer_count = 4;
  options.buffer_bytes = 16;
  options.recycle_batch = 1;
  ASSERT_TRUE(buffers.init(r, options).ok());
  const std::uint64_t ud = pack_user_data(20, 0, 1);
  ASSERT_TRUE(r.prep_recv_multishot(server, 7, ud).ok());
  ASSERT_TRUE(r.submit().ok());
  std::vector<std::uint16_t> held;
  for (int i = 0; i < 4; ++i) {
    const std::string message = "part" + std::to_string(i);
    send_text(message);
    const auto got = test::wait_completions(r, 1);
    ASSERT_EQ(got.size(), 1u);
    ASSERT_TRUE(got[0].has_buffer()) << got[0].res;
    EXPECT_TRUE(got[0].more());
    EXPECT_EQ(text(buffers.consume(got[0])), message);
    held.push_back(got[0].buffer_id());
  }
  send_text("starved");
  auto got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].res, -ENOBUFS);
  EXPECT_FALSE(got[0].more()) << "-ENOBUFS ends the multishot recv";
  for (std::uint16_t id : held) buffers.recycle(id);
  buffers.flush();
  ASSERT_TRUE(r.prep_recv_multishot(server, 7, ud).ok());  // re-arm: the queued bytes arrive
  got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].has_buffer());
  EXPECT_EQ(text(buffers.consume(got[0])), "starved");
  buffers.recycle(got[0].buffer_id());
  shutdown(client, SHUT_WR);
  got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].res, 0);  // EOF
  EXPECT_FALSE(got[0].more());
  if (got[0].has_buffer()) {  // some kernels hand a buffer with the EOF: it must come back
    (void)buffers.consume(got[0]);
    buffers.recycle(got[0].buffer_id());
  }
  buffers.flush();
  EXPECT_EQ(buffers.buffers_out(), 0u);
}

TEST_F(recv_fixture, incremental_buffers_are_shared_by_successive_receives) {
  if (!r.features().buffer_ring_incremental) GTEST_SKIP() << "kernel lacks IOU_PBUF_RING_INC";
  buffer_ring buffers;
  buffer_ring_options options;
  options.group_id = 8;
  options.buffer_count = 4;
  options.buffer_bytes = 64;
  options.incremental = true;
  options.recycle_batch = 1;
  ASSERT_TRUE(buffers.init(r, options).ok());
  ASSERT_TRUE(r.prep_recv_multishot(server, 8, pack_user_data(20, 0, 2)).ok());
  send_text("abc");
  auto got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(got[0].has_buffer());
  EXPECT_TRUE(got[0].buffer_more()) << "61 bytes are left in this buffer";
  const std::uint16_t first = got[0].buffer_id();
  EXPECT_EQ(text(buffers.consume(got[0])), "abc");
  send_text("defg");
  got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].buffer_id(), first);  // the same buffer, continued
  EXPECT_EQ(text(buffers.consume(got[0])), "defg");
  EXPECT_EQ(buffers.buffers_out(), 0u);  // the kernel still uses it
  // 60 more bytes: 57 finish the first buffer, the rest starts another.
  const std::string big(60, 'x');
  send_text(big);
  std::string assembled;
  std::vector<std::uint16_t> ids;
  const auto rest = test::wait_until(r, [&](const std::vector<completion>& seen) {
    std::size_t bytes = 0;
    for (const completion& c : seen) bytes += c.res > 0 ? static_cast<std::size_t>(c.res) : 0;
    return bytes >= big.size();
  });
  for (const completion& c : rest) {
    ASSERT_TRUE(c.has_buffer());
    assembled += text(buffers.consume(c));
    ids.push_back(c.buffer_id());
  }
  EXPECT_EQ(assembled, big);
  EXPECT_EQ(ids.front(), first);
  EXPECT_EQ(buffers.buffers_out(), 1u);  // the first buffer is full: ours until recycled
  buffers.recycle(first);
  buffers.recycle(first);
  for (std::uint16_t id : ids) buffers.recycle(id);
  buffers.flush();
  EXPECT_EQ(buffers.buffers_held(), 0u);
  EXPECT_EQ(buffers.buffers_out(), 0u);
  EXPECT_EQ(buffers.recycled_total(), 1u);
  ASSERT_TRUE(r.prep_cancel_fd(server, pack_user_data(21, 0, 0)).ok());
  EXPECT_EQ(test::wait_completions(r, 2).size(), 2u);
}

}  // namespace
}  // namespace ringmta::io
