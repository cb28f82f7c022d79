// IORING_OP_MSG_RING passing a fixed file to another ring (IORING_MSG_SEND_FD, filled by hand),
// then used there as a fixed file and turned into a normal fd (IORING_OP_FIXED_FD_INSTALL).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

TEST(msg_ring_fd, a_socket_moves_between_rings) {
  ring source;
  ring_options options;
  options.fixed_file_count = 4;
  RINGMTA_INIT_OR_SKIP(source, options);
  if (!source.features().msg_ring_fd) GTEST_SKIP() << "kernel lacks MSG_RING fd passing";
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  ASSERT_TRUE(source.update_fixed_file(2, pair[0]).ok());
  close(pair[0]);  // the fixed table keeps the socket alive
  const std::uint64_t handoff_ud = pack_user_data(40, 1, 123);
  std::atomic<int> target_fd{-1};
  std::atomic<bool> finished{false};
  int received_index = -1, installed_fd = -1, fixed_send = 0;
  std::thread target([&] {
    ring r;
    if (!r.init(options).ok()) return;
    target_fd = r.fd();
    auto got = test::wait_completions(r, 1);
    finished = true;
    if (got.size() != 1 || got[0].user_data != handoff_ud) return;
    received_index = got[0].res;
    if (received_index < 0) return;
    const auto index = static_cast<std::uint32_t>(received_index);
    (void)r.prep_send(received_index, "via-fixed;", 10, pack_user_data(41, 0, 0), sqe::fixed_file);
    got = test::wait_completions(r, 1);
    if (got.size() == 1) fixed_send = got[0].res;
    if (r.features().fixed_fd_install) {
      (void)r.prep_fixed_fd_install(index, pack_user_data(42, 0, 0));
      got = test::wait_completions(r, 1);
      if (got.size() == 1) installed_fd = got[0].res;
    }
    (void)r.prep_close_fixed(index, pack_user_data(43, 0, 0));
    (void)test::wait_completions(r, 1);
    if (installed_fd >= 0) {
      (void)!write(installed_fd, "via-fd", 6);
      close(installed_fd);
    }
  });
  while (target_fd.load() < 0 && !finished) std::this_thread::yield();
  ASSERT_GE(target_fd.load(), 0);
  ASSERT_TRUE(source.prep_msg_ring_fd(target_fd, 2, fixed_index_alloc, handoff_ud,
                                      pack_user_data(44, 0, 0)).ok());
  const auto own = test::wait_completions(source, 1);
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(own[0].res, 0);
  ASSERT_TRUE(source.prep_close_fixed(2, pack_user_data(45, 0, 0)).ok());  // our copy goes
  EXPECT_EQ(test::wait_completions(source, 1).size(), 1u);
  target.join();
  ASSERT_GE(received_index, 0) << "target got " << received_index;
  EXPECT_EQ(fixed_send, 10);
  std::string expected = "via-fixed;";
  if (installed_fd >= 0) expected += "via-fd";
  std::string got(expected.size(), '\0');
  EXPECT_EQ(test::read_full(pair[1], got.data(), got.size()), got.size());
  EXPECT_EQ(got, expected);
  if (source.features().fixed_fd_install) {
    EXPECT_GE(installed_fd, 0);
  }
  close(pair[1]);
}

}  // namespace
}  // namespace ringmta::io
