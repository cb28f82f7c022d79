// Ring timeouts: relative expiry, completion-count satisfaction, remove, update, a link timeout
// bounding a recv, and a multishot timeout.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

constexpr std::uint64_t ms = 1'000'000;

int result_of(const std::vector<completion>& got, std::uint64_t user_data) {
  for (const completion& c : got) {
    if (c.user_data == user_data) return c.res;
  }
  return 1;  // not found: no op result is 1 in these tests
}

TEST(timeouts, relative_count_remove_update) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  const std::uint64_t expire = pack_user_data(20, 0, 1);
  ASSERT_TRUE(r.prep_timeout(1 * ms, expire).ok());
  auto got = test::wait_completions(r, 1);
  EXPECT_EQ(result_of(got, expire), -ETIME);

  const std::uint64_t counted = pack_user_data(20, 0, 2);  // satisfied by one other completion
  ASSERT_TRUE(r.prep_timeout(10'000 * ms, counted, 1).ok());
  ASSERT_TRUE(r.prep_nop(pack_user_data(20, 0, 3)).ok());
  got = test::wait_completions(r, 2);
  EXPECT_EQ(result_of(got, counted), 0);

  const std::uint64_t removed = pack_user_data(20, 0, 4);
  ASSERT_TRUE(r.prep_timeout(10'000 * ms, removed).ok());
  ASSERT_TRUE(r.submit().ok());
  ASSERT_TRUE(r.prep_timeout_remove(removed, pack_user_data(20, 0, 5)).ok());
  got = test::wait_completions(r, 2);
  EXPECT_EQ(result_of(got, removed), -ECANCELED);
  EXPECT_EQ(result_of(got, pack_user_data(20, 0, 5)), 0);

  const std::uint64_t updated = pack_user_data(20, 0, 6);
  ASSERT_TRUE(r.prep_timeout(10'000 * ms, updated).ok());
  ASSERT_TRUE(r.submit().ok());
  ASSERT_TRUE(r.prep_timeout_update(updated, 1 * ms, pack_user_data(20, 0, 7)).ok());
  got = test::wait_completions(r, 2);
  EXPECT_EQ(result_of(got, updated), -ETIME);  // fired at the new, short deadline
  EXPECT_EQ(result_of(got, pack_user_data(20, 0, 7)), 0);
}

TEST(timeouts, link_timeout_cancels_a_silent_recv) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  char buffer[4];
  const std::uint64_t recv_ud = pack_user_data(20, 0, 1), timer_ud = pack_user_data(20, 0, 2);
  ASSERT_TRUE(r.reserve(2).ok());
  ASSERT_TRUE(r.prep_recv(pair[0], buffer, sizeof buffer, recv_ud, sqe::link).ok());
  ASSERT_TRUE(r.prep_link_timeout(5 * ms, timer_ud).ok());
  auto got = test::wait_completions(r, 2);
  EXPECT_EQ(result_of(got, recv_ud), -ECANCELED);
  EXPECT_EQ(result_of(got, timer_ud), -ETIME);
  // With data in time, the recv wins and the link timeout is cancelled instead.
  ASSERT_EQ(write(pair[1], "ok", 2), 2);
  ASSERT_TRUE(r.prep_recv(pair[0], buffer, sizeof buffer, recv_ud, sqe::link).ok());
  ASSERT_TRUE(r.prep_link_timeout(5000 * ms, timer_ud).ok());
  got = test::wait_completions(r, 2);
  EXPECT_EQ(result_of(got, recv_ud), 2);
  EXPECT_EQ(result_of(got, timer_ud), -ECANCELED);
  close(pair[0]);
  close(pair[1]);
}

TEST(timeouts, multishot_timeout_fires_repeatedly) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  if (!r.features().multishot_timeout) GTEST_SKIP() << "kernel lacks IORING_TIMEOUT_MULTISHOT";
  const std::uint64_t ud = pack_user_data(20, 0, 9);
  ASSERT_TRUE(r.prep_timeout_multishot(1 * ms, 3, ud).ok());
  const auto got = test::wait_completions(r, 3);
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].user_data, ud);
    EXPECT_EQ(got[i].res, -ETIME);
    EXPECT_EQ(got[i].more(), i < 2) << i;  // the last expiry ends it
  }
}

}  // namespace
}  // namespace ringmta::io
