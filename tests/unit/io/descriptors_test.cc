// io::system_descriptors: each member is its system call (a UDP socket connected to a
// loopback peer, a stream socket bound with an option, a pipe whose capacity was raised),
// failures come back as errno.
#include "ringmta/io/descriptors.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ringmta/core/endpoint.h"

namespace ringmta::io {
namespace {

TEST(system_descriptors, a_datagram_socket_connects_to_a_loopback_peer_and_sends) {
  system_descriptors calls;
  const int peer = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(peer, 0);
  const auto any = core::endpoint::parse("127.0.0.1:0");
  ASSERT_TRUE(any.has_value());
  ASSERT_EQ(::bind(peer, any->sockaddr_pointer(), any->length), 0);
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof bound;
  ASSERT_EQ(::getsockname(peer, reinterpret_cast<sockaddr*>(&bound), &bound_length), 0);

  const auto opened = calls.open_socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK);
  ASSERT_TRUE(opened.ok());
  const int fd = opened.value();
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);  // SOCK_CLOEXEC added
  ASSERT_TRUE(calls.connect_datagram(fd, reinterpret_cast<sockaddr*>(&bound), bound_length).ok());
  ASSERT_EQ(::send(fd, "ping", 4, 0), 4);
  char got[8] = {};
  EXPECT_EQ(::recv(peer, got, sizeof got, 0), 4);
  EXPECT_EQ(std::memcmp(got, "ping", 4), 0);
  calls.shutdown(fd, SHUT_RDWR);
  calls.close(fd);
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // closed
  ::close(peer);
}

TEST(system_descriptors, options_bind_and_errors) {
  system_descriptors calls;
  const auto opened = calls.open_socket(AF_INET, SOCK_STREAM);
  ASSERT_TRUE(opened.ok());
  const int fd = opened.value();
  ASSERT_TRUE(calls.set_option(fd, IPPROTO_TCP, TCP_NODELAY, 1).ok());
  int value = 0;
  socklen_t length = sizeof value;
  ASSERT_EQ(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length), 0);
  EXPECT_EQ(value, 1);
  const auto any = core::endpoint::parse("127.0.0.1:0");
  ASSERT_TRUE(any.has_value());
  EXPECT_TRUE(calls.bind(fd, any->sockaddr_pointer(), any->length).ok());
  EXPECT_EQ(calls.bind(fd, any->sockaddr_pointer(), any->length).error(), EINVAL);  // twice
  calls.close(fd);
  EXPECT_EQ(calls.set_option(fd, IPPROTO_TCP, TCP_NODELAY, 1).error(), EBADF);
  EXPECT_EQ(calls.open_socket(AF_INET, 12345).error(), EINVAL);
}

TEST(system_descriptors, a_pipe_with_its_capacity) {
  system_descriptors calls;
  const auto made = calls.open_pipe(256 * 1024);
  ASSERT_TRUE(made.ok());
  const pipe_ends ends = made.value();
  EXPECT_GE(ends.capacity, 4096u);  // the kernel may cap it (pipe-max-size), never below a page
  EXPECT_EQ(::fcntl(ends.write_end, F_GETPIPE_SZ), static_cast<int>(ends.capacity));
  ASSERT_EQ(::write(ends.write_end, "x", 1), 1);
  char got = 0;
  EXPECT_EQ(::read(ends.read_end, &got, 1), 1);
  EXPECT_EQ(got, 'x');
  calls.close(ends.read_end);
  calls.close(ends.write_end);
}

}  // namespace
}  // namespace ringmta::io
