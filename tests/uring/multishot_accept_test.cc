// Multishot accept: one SQE, one CQE per connection, each with IORING_CQE_F_MORE while armed.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <set>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

TEST(multishot_accept, one_sqe_accepts_many_connections) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  if (!r.features().multishot_accept) GTEST_SKIP() << "kernel lacks multishot accept";
  std::uint16_t port = 0;
  const int listen_fd = test::listen_loopback(&port);
  ASSERT_GE(listen_fd, 0);
  const std::uint64_t ud = pack_user_data(20, 0, 0);
  ASSERT_TRUE(r.prep_accept(listen_fd, ud, /*multishot=*/true).ok());
  ASSERT_TRUE(r.submit().ok());
  constexpr int count = 5;
  int clients[count];
  for (int& c : clients) {
    c = test::connect_loopback(port);
    ASSERT_GE(c, 0);
  }
  const auto got = test::wait_completions(r, count);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(count));
  std::set<int> fds;
  for (const completion& c : got) {
    EXPECT_EQ(c.user_data, ud);
    ASSERT_GE(c.res, 0);
    EXPECT_TRUE(c.more()) << "multishot accept should stay armed";
    fds.insert(c.res);
  }
  EXPECT_EQ(fds.size(), static_cast<std::size_t>(count));
  // Cancelling ends it: a final CQE without F_MORE.
  ASSERT_TRUE(r.prep_cancel(ud, pack_user_data(21, 0, 0)).ok());
  const auto end = test::wait_completions(r, 2);
  ASSERT_EQ(end.size(), 2u);
  for (const completion& c : end) {
    if (c.user_data == ud) {
      EXPECT_EQ(c.res, -ECANCELED);
      EXPECT_FALSE(c.more());
    }
  }
  for (int fd : fds) close(fd);
  for (int c : clients) close(c);
  close(listen_fd);
}

TEST(multishot_accept, direct_accept_fills_the_fixed_table) {
  ring r;
  ring_options options;
  options.fixed_file_count = 8;
  RINGMTA_INIT_OR_SKIP(r, options);
  if (!r.features().multishot_accept) GTEST_SKIP() << "kernel lacks multishot accept";
  std::uint16_t port = 0;
  const int listen_fd = test::listen_loopback(&port);
  ASSERT_GE(listen_fd, 0);
  ASSERT_TRUE(r.prep_accept(listen_fd, pack_user_data(20, 0, 0), true, /*direct=*/true).ok());
  ASSERT_TRUE(r.submit().ok());
  const int client = test::connect_loopback(port);
  ASSERT_GE(client, 0);
  auto got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_GE(got[0].res, 0);
  ASSERT_LT(got[0].res, 8);  // an index into the fixed table, not an fd
  const auto index = static_cast<std::uint32_t>(got[0].res);
  ASSERT_TRUE(r.prep_send(static_cast<int>(index), "hi", 2, pack_user_data(22, 0, 0),
                          sqe::fixed_file).ok());
  got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].res, 2);
  char buffer[2];
  EXPECT_EQ(test::read_full(client, buffer, 2), 2u);
  ASSERT_TRUE(r.prep_close_fixed(index, pack_user_data(23, 0, 0)).ok());
  ASSERT_TRUE(r.prep_cancel_fd(listen_fd, pack_user_data(24, 0, 0)).ok());
  EXPECT_GE(test::wait_completions(r, 3).size(), 3u);
  close(client);
  close(listen_fd);
}

}  // namespace
}  // namespace ringmta::io
