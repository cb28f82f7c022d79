// Splice file -> pipe -> socket through the ring (linked pairs): how a spooled message in wire
// form is relayed without passing through user memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

TEST(splice, file_to_socket_through_a_pipe) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  if (!r.features().splice) GTEST_SKIP() << "kernel lacks IORING_OP_SPLICE";
  char path[] = "/tmp/ringmta-splice-XXXXXX";
  const int file = mkstemp(path);
  ASSERT_GE(file, 0);
  unlink(path);
  std::string body;
  for (int i = 0; body.size() < 100'000; ++i) body += "line " + std::to_string(i) + "\r\n";
  ASSERT_EQ(write(file, body.data(), body.size()), static_cast<ssize_t>(body.size()));
  std::uint16_t port = 0;
  const int listen_fd = test::listen_loopback(&port);
  const int client = test::connect_loopback(port);
  const int server = accept(listen_fd, nullptr, nullptr);
  ASSERT_GE(server, 0);
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  std::string received(body.size(), '\0');
  std::size_t read_so_far = 0;
  std::int64_t offset = 0;
  constexpr std::uint32_t chunk = 16384;
  for (int round = 0; offset < static_cast<std::int64_t>(body.size()) && round < 100; ++round) {
    ASSERT_TRUE(r.reserve(2).ok());
    // hardlink, not link: a short splice (fewer bytes than asked, which is normal) counts as a
    // failure for a plain link and would cancel the second half.
    ASSERT_TRUE(r.prep_splice(file, offset, pipe_fds[1], -1, chunk, pack_user_data(20, 0, 1),
                              sqe::hardlink).ok());
    ASSERT_TRUE(r.prep_splice(pipe_fds[0], -1, server, -1, chunk, pack_user_data(20, 0, 2)).ok());
    const auto got = test::wait_completions(r, 2);
    ASSERT_EQ(got.size(), 2u);
    int moved_in = -1, moved_out = -1;
    for (const completion& c : got) (c.tag().slot == 1 ? moved_in : moved_out) = c.res;
    ASSERT_GT(moved_in, 0);
    ASSERT_EQ(moved_out, moved_in);  // whatever entered the pipe left it (chunk < pipe size)
    offset += moved_in;
    read_so_far += test::read_full(client, received.data() + read_so_far,
                                   static_cast<std::size_t>(moved_out));
  }
  EXPECT_EQ(read_so_far, body.size());
  EXPECT_EQ(received, body);
  for (int fd : {file, client, server, listen_fd, pipe_fds[0], pipe_fds[1]}) close(fd);
}

}  // namespace
}  // namespace ringmta::io
