// io::system_descriptors: each member is the system call it names (io/descriptors.h).
#include "ringmta/io/descriptors.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace ringmta::io {

core::result<int> system_descriptors::open_socket(int family, int type) noexcept {
  const int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return core::fail(errno);
  return fd;
}

core::result<void> system_descriptors::set_option(int fd, int level, int name,
                                                  int value) noexcept {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) return core::fail(errno);
  return {};
}

core::result<void> system_descriptors::bind(int fd, const sockaddr* address,
                                            socklen_t address_length) noexcept {
  if (::bind(fd, address, address_length) != 0) return core::fail(errno);
  return {};
}

core::result<void> system_descriptors::connect_datagram(int fd, const sockaddr* address,
                                                        socklen_t address_length) noexcept {
  if (::connect(fd, address, address_length) != 0) return core::fail(errno);
  return {};
}

void system_descriptors::shutdown(int fd, int how) noexcept { (void)::shutdown(fd, how); }

void system_descriptors::close(int fd) noexcept { (void)::close(fd); }

core::result<pipe_ends> system_descriptors::open_pipe(std::uint32_t bytes) noexcept {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return core::fail(errno);
  pipe_ends ends;
  ends.read_end = fds[0];
  ends.write_end = fds[1];
  (void)::fcntl(ends.write_end, F_SETPIPE_SZ, static_cast<int>(bytes));  // best effort
  const int capacity = ::fcntl(ends.write_end, F_GETPIPE_SZ);
  ends.capacity = capacity > 0 ? static_cast<std::uint32_t>(capacity) : 4096;
  return ends;
}

core::result<std::size_t> system_descriptors::read_cached(int fd, void* buffer,
                                                          std::size_t length,
                                                          std::uint64_t offset) noexcept {
  iovec part{buffer, length};
  const ssize_t got = ::preadv2(fd, &part, 1, static_cast<off_t>(offset), RWF_NOWAIT);
  if (got < 0) return core::fail(errno);
  return static_cast<std::size_t>(got);
}

core::result<void> system_descriptors::peer_name(int fd, sockaddr_storage& address,
                                                 socklen_t& length) noexcept {
  length = sizeof address;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0)
    return core::fail(errno);
  return {};
}

void system_descriptors::send_now(int fd, const void* data, std::size_t length) noexcept {
  (void)::send(fd, data, length, MSG_DONTWAIT | MSG_NOSIGNAL);
}

}  // namespace ringmta::io
