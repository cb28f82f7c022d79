// io::ring on the real kernel: set-up and feature report, NOP round trips, SQ-full handling,
// vectored file writes at an offset, cancellation by user_data, and the io::operations
// contract the glue relies on, exercised through the interface.
#include "ringmta/io/ring.h"

#include <fcntl.h>
#include <poll.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>
#include <type_traits>

#include "support.h"

namespace ringmta::io {
namespace {

TEST(ring, init_reports_features) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  EXPECT_GT(r.fd(), 0);
  const std::string line = r.features().describe();
  EXPECT_NE(line.find("io_uring on Linux"), std::string::npos) << line;
  EXPECT_GE(r.features().cq_entries, r.features().sq_entries * 2);
  std::printf("%s\n", line.c_str());
}

TEST(ring, nop_returns_its_user_data) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  const std::uint64_t ud = pack_user_data(op_kind_first_free, 5, 77);
  ASSERT_TRUE(r.prep_nop(ud).ok());
  EXPECT_EQ(r.pending_sqes(), 1u);
  const auto got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].user_data, ud);
  EXPECT_EQ(got[0].res, 0);
  EXPECT_EQ(r.pending_sqes(), 0u);
}

TEST(ring, full_submission_queue_submits_and_never_drops) {
  ring r;
  ring_options options;
  options.sq_entries = 8;
  options.cq_entries = 256;
  RINGMTA_INIT_OR_SKIP(r, options);
  constexpr unsigned count = 200;
  for (unsigned i = 0; i < count; ++i) ASSERT_TRUE(r.prep_nop(pack_user_data(20, 0, i)).ok());
  EXPECT_GT(r.counters().sq_full_submits, 0u);
  const auto got = test::wait_completions(r, count);
  ASSERT_EQ(got.size(), count);
  std::vector<bool> seen(count, false);
  for (const completion& c : got) seen.at(c.tag().slot) = true;
  for (unsigned i = 0; i < count; ++i) EXPECT_TRUE(seen[i]) << i;
}

TEST(ring, reserve_keeps_a_chain_whole) {
  ring r;
  ring_options options;
  options.sq_entries = 4;
  RINGMTA_INIT_OR_SKIP(r, options);
  for (unsigned i = 0; i < 3; ++i) ASSERT_TRUE(r.prep_nop(pack_user_data(20, 0, i)).ok());
  ASSERT_TRUE(r.reserve(2).ok());  // only one slot was left: the three NOPs went to the kernel
  EXPECT_EQ(r.pending_sqes(), 0u);
  ASSERT_TRUE(r.prep_nop(pack_user_data(21, 0, 0), sqe::link).ok());
  ASSERT_TRUE(r.prep_nop(pack_user_data(21, 0, 1)).ok());
  EXPECT_EQ(test::wait_completions(r, 5).size(), 5u);
}

TEST(ring, writev_at_offset_then_read_back) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  char path[] = "/tmp/ringmta-io-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  char first[] = "hello ", second[] = "ring";
  iovec pieces[] = {{first, 6}, {second, 4}};
  ASSERT_TRUE(r.prep_writev(fd, pieces, 2, 100, pack_user_data(20, 0, 1), sqe::link).ok());
  ASSERT_TRUE(r.prep_fdatasync(fd, pack_user_data(20, 0, 2)).ok());
  auto got = test::wait_completions(r, 2);
  ASSERT_EQ(got.size(), 2u);
  for (const completion& c : got) {
    EXPECT_EQ(c.res, c.tag().slot == 1 ? 10 : 0) << c.tag().slot;
  }
  char back[10] = {};
  ASSERT_TRUE(r.prep_read(fd, back, sizeof back, 100, pack_user_data(20, 0, 3)).ok());
  got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].res, 10);
  EXPECT_EQ(std::string(back, 10), "hello ring");
  close(fd);
}

TEST(ring, cancel_by_user_data_and_by_fd) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  char buffer[16];
  const std::uint64_t recv_a = pack_user_data(20, 1, 1);
  const std::uint64_t recv_b = pack_user_data(20, 1, 2);
  ASSERT_TRUE(r.prep_recv(pair[0], buffer, sizeof buffer, recv_a).ok());
  ASSERT_TRUE(r.submit().ok());
  ASSERT_TRUE(r.prep_cancel(recv_a, pack_user_data(21, 0, 0)).ok());
  auto got = test::wait_completions(r, 2);
  ASSERT_EQ(got.size(), 2u);
  for (const completion& c : got) {
    EXPECT_EQ(c.res, c.user_data == recv_a ? -ECANCELED : 0);
  }
  ASSERT_TRUE(r.prep_recv(pair[0], buffer, sizeof buffer, recv_b).ok());
  ASSERT_TRUE(r.submit().ok());
  ASSERT_TRUE(r.prep_cancel_fd(pair[0], pack_user_data(21, 0, 1)).ok());
  got = test::wait_completions(r, 2);
  ASSERT_EQ(got.size(), 2u);
  for (const completion& c : got) {
    EXPECT_EQ(c.res, c.user_data == recv_b ? -ECANCELED : 1);  // one op cancelled
  }
  close(pair[0]);
  close(pair[1]);
}

TEST(ring, vectored_send_and_poll) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  const std::uint64_t poll_ud = pack_user_data(20, 0, 1), send_ud = pack_user_data(20, 0, 2);
  ASSERT_TRUE(r.prep_poll(pair[1], POLLIN, poll_ud).ok());
  ASSERT_TRUE(r.submit().ok());
  char reply[] = "250 ok\r\n", body[] = "body";
  iovec pieces[] = {{reply, 8}, {body, 4}};
  msghdr message{};
  message.msg_iov = pieces;
  message.msg_iovlen = 2;
  ASSERT_TRUE(r.prep_sendmsg(pair[0], &message, send_ud).ok());
  const auto got = test::wait_completions(r, 2);
  ASSERT_EQ(got.size(), 2u);
  for (const completion& c : got) {
    EXPECT_EQ(c.res, c.user_data == send_ud ? 12 : POLLIN) << c.user_data;
  }
  char back[12];
  EXPECT_EQ(test::read_full(pair[1], back, sizeof back), sizeof back);
  EXPECT_EQ(std::string(back, 12), "250 ok\r\nbody");
  close(pair[0]);
  close(pair[1]);
}

// The ring is the production io::operations and final, so callers holding a ring& keep
// direct calls (io/operations.h: "Cost").
static_assert(std::is_base_of_v<operations, ring> && std::is_final_v<ring>);

// What src/outbound does through io::operations&: a send and a receive on a stream socket,
// a timeout measured by the implementation, the cancellation of a waiting receive. Every op
// completes once, with its own user_data, after the prep (never inside it).
TEST(ring, operations_interface_keeps_the_completion_contract) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  operations& io = r;
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  const std::uint64_t send_ud = pack_user_data(20, 3, 1), recv_ud = pack_user_data(20, 3, 2);
  const std::uint64_t timeout_ud = pack_user_data(20, 3, 3), idle_ud = pack_user_data(20, 3, 4);
  const std::uint64_t cancel_ud = pack_user_data(21, 3, 5);
  char greeting[] = "220 ready\r\n", received[32] = {}, idle[8];
  ASSERT_TRUE(io.prep_send(pair[0], greeting, 11, send_ud).ok());
  ASSERT_TRUE(io.prep_recv(pair[1], received, sizeof received, recv_ud).ok());
  ASSERT_TRUE(io.prep_timeout(1'000'000, timeout_ud).ok());
  ASSERT_TRUE(io.prep_recv(pair[0], idle, sizeof idle, idle_ud).ok());
  EXPECT_EQ(r.pending_sqes(), 4u);  // queued only: nothing has completed yet
  ASSERT_TRUE(r.submit().ok());
  ASSERT_TRUE(io.prep_cancel(idle_ud, cancel_ud).ok());
  const auto got = test::wait_completions(r, 5);
  ASSERT_EQ(got.size(), 5u);
  std::map<std::uint64_t, std::int32_t> result;
  for (const completion& c : got) EXPECT_TRUE(result.emplace(c.user_data, c.res).second);
  EXPECT_EQ(result.at(send_ud), 11);
  EXPECT_EQ(result.at(recv_ud), 11);
  EXPECT_EQ(std::string(received, 11), "220 ready\r\n");
  EXPECT_EQ(result.at(timeout_ud), -ETIME);
  EXPECT_EQ(result.at(idle_ud), -ECANCELED);
  EXPECT_EQ(result.at(cancel_ud), 0);
  close(pair[0]);
  close(pair[1]);
}

}  // namespace
}  // namespace ringmta::io
