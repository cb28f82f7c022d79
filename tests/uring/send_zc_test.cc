// IORING_OP_SEND_ZC: a result CQE with F_MORE, then a notification CQE (F_NOTIF, same
// user_data) when the kernel has released the buffer; with usage reporting on loopback the
// notification says the data was copied.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

TEST(send_zc, result_then_notification) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  if (!r.features().send_zc) GTEST_SKIP() << "kernel lacks IORING_OP_SEND_ZC";
  std::uint16_t port = 0;
  const int listen_fd = test::listen_loopback(&port);
  ASSERT_GE(listen_fd, 0);
  const int client = test::connect_loopback(port);
  const int server = accept(listen_fd, nullptr, nullptr);
  ASSERT_GE(server, 0);
  std::vector<char> data(16384);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('A' + i % 23);
  const std::uint64_t ud = pack_user_data(20, 3, 4);
  ASSERT_TRUE(r.prep_send_zc(server, data.data(), static_cast<std::uint32_t>(data.size()), ud,
                             /*report_usage=*/true).ok());
  // Until the notification, or a result that says none will follow.
  const auto got = test::wait_until(r, [](const std::vector<completion>& seen) {
    for (const completion& c : seen) {
      if (c.notification() || !c.more()) return true;
    }
    return false;
  });
  ASSERT_GE(got.size(), 1u);
  const completion& result = got[0];
  EXPECT_EQ(result.user_data, ud);
  EXPECT_FALSE(result.notification());
  ASSERT_EQ(result.res, static_cast<int>(data.size()));
  ASSERT_TRUE(result.more()) << "a notification must follow a zero-copy send";
  ASSERT_EQ(got.size(), 2u);
  const completion& notification = got[1];
  EXPECT_EQ(notification.user_data, ud);
  EXPECT_TRUE(notification.notification());
  EXPECT_FALSE(notification.more());
  // Loopback cannot do zero copy: the kernel reports it copied (bit 31 of res).
  EXPECT_NE(static_cast<std::uint32_t>(notification.res) & (1u << 31), 0u);
  std::vector<char> back(data.size());
  EXPECT_EQ(test::read_full(client, back.data(), back.size()), back.size());
  EXPECT_EQ(back, data);
  close(server);
  close(client);
  close(listen_fd);
}

}  // namespace
}  // namespace ringmta::io
