// Helpers shared by the real-kernel io_uring tests (tests/uring, tests/unit/io, tests/unit/shard):
// loopback sockets on OS-chosen ports and bounded waits for completions.
// Never: waits without a deadline, or touches an address outside 127.0.0.0/8.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <vector>

#include "ringmta/core/clock.h"
#include "ringmta/io/ring.h"

// Initialises an io::ring in a test body, skipping the test where io_uring itself is missing
// or forbidden (ENOSYS, EPERM: e.g. kernel.io_uring_disabled) and failing on any other error.
#define RINGMTA_INIT_OR_SKIP(ring_object, options)                                   \
  do {                                                                               \
    const auto init_result = (ring_object).init(options);                            \
    if (!init_result.ok() && (init_result.error() == ENOSYS || init_result.error() == EPERM)) { \
      GTEST_SKIP() << "io_uring unavailable: " << init_result.error_text();          \
    }                                                                                \
    ASSERT_TRUE(init_result.ok()) << init_result.error_text();                       \
  } while (0)

namespace ringmta::test {

// A listening TCP socket on 127.0.0.1 and an OS-chosen port; -1 on failure.
inline int listen_loopback(std::uint16_t* port, int backlog = 128) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(fd, backlog) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(address.sin_port);
  return fd;
}

inline sockaddr_in loopback_address(std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  return address;
}

// A blocking client socket connected to 127.0.0.1:port, with a receive timeout so a test that
// expects bytes never hangs; -1 on failure.
inline int connect_loopback(std::uint16_t port, int receive_timeout_ms = 5000) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const sockaddr_in address = loopback_address(port);
  timeval timeout{receive_timeout_ms / 1000, (receive_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads exactly `length` bytes (or fewer on EOF/timeout); returns the count read.
inline std::size_t read_full(int fd, void* buffer, std::size_t length) {
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n = read(fd, static_cast<char*>(buffer) + done, length - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

// Submits and collects completions until `count` arrived or `timeout_ms` passed.
inline std::vector<io::completion> wait_completions(io::ring& ring, std::size_t count,
                                                    std::uint64_t timeout_ms = 5000) {
  std::vector<io::completion> got;
  const std::uint64_t deadline = core::monotonic_ns() + timeout_ms * 1'000'000;
  while (got.size() < count) {
    const std::uint64_t now = core::monotonic_ns();
    if (now >= deadline) break;
    if (!ring.submit_and_wait(1, static_cast<std::int64_t>(deadline - now))) break;
    ring.for_each_completion([&](const io::completion& c) { got.push_back(c); });
  }
  return got;
}

// Like wait_completions, but stops as soon as `done` says so.
inline std::vector<io::completion> wait_until(
    io::ring& ring, const std::function<bool(const std::vector<io::completion>&)>& done,
    std::uint64_t timeout_ms = 5000) {
  std::vector<io::completion> got;
  const std::uint64_t deadline = core::monotonic_ns() + timeout_ms * 1'000'000;
  while (!done(got)) {
    const std::uint64_t now = core::monotonic_ns();
    if (now >= deadline) break;
    if (!ring.submit_and_wait(1, static_cast<std::int64_t>(deadline - now))) break;
    ring.for_each_completion([&](const io::completion& c) { got.push_back(c); });
  }
  return got;
}

}  // namespace ringmta::test
