// io::descriptors: the synchronous calls the glue makes beside the ring (issue 16 item 1, step
// 2): making sockets and pipes, options, bind, a datagram socket's connect, shutdown and close,
// a file read that only copies what the page cache already holds, and for the acceptor an
// accepted socket's peer and a send that never waits.
// None of them blocks (no handshake, no I/O wait), so they run on the shard's thread; they are
// an interface so that a simulated host hands out simulated descriptors that its simulated
// io::operations understands, and the glue never calls the kernel by name.
//
// io::system_descriptors is the kernel's: each member is the one system call it names. A socket
// op on the ring (IORING_OP_SOCKET, kernel 5.19) would make open_socket asynchronous; it is not
// used: socket(2) does not block, and an async step before each connect is one more phase.
// Never: blocks, throws, allocates.
#pragma once

#include <sys/socket.h>

#include <cstdint>

#include "ringmta/core/result.h"

namespace ringmta::io {

struct pipe_ends {
  int read_end = -1;
  int write_end = -1;
  std::uint32_t capacity = 0;  // bytes the pipe holds
};

class descriptors {
 public:
  // socket(2) with SOCK_CLOEXEC; `type` may carry SOCK_NONBLOCK. errno on failure.
  virtual core::result<int> open_socket(int family, int type) noexcept = 0;
  // setsockopt(2) of an int option.
  virtual core::result<void> set_option(int fd, int level, int name, int value) noexcept = 0;
  virtual core::result<void> bind(int fd, const sockaddr* address,
                                  socklen_t address_length) noexcept = 0;
  // connect(2) of a datagram socket: no handshake, it only fixes the peer (and makes the kernel
  // drop datagrams from anyone else). Stream sockets connect on the ring (prep_connect).
  virtual core::result<void> connect_datagram(int fd, const sockaddr* address,
                                              socklen_t address_length) noexcept = 0;
  // shutdown(2): ends pending receives (0) and sends (EPIPE) on the socket.
  virtual void shutdown(int fd, int how) noexcept = 0;
  // close(2), for when the ring's close cannot be queued and in destructors.
  virtual void close(int fd) noexcept = 0;
  // A blocking pipe2(O_CLOEXEC) whose capacity is raised toward `bytes` (best effort).
  virtual core::result<pipe_ends> open_pipe(std::uint32_t bytes) noexcept = 0;
  // Up to `length` bytes of a file at `offset`, only if the page cache holds them
  // (preadv2 RWF_NOWAIT, Linux 4.14): EAGAIN when it would wait for the disk, 0 at the end.
  // The caller then reads through the ring (prep_read). Never waits.
  virtual core::result<std::size_t> read_cached(int fd, void* buffer, std::size_t length,
                                                std::uint64_t offset) noexcept = 0;
  // getpeername(2): the address of an accepted socket's client (or load balancer).
  virtual core::result<void> peer_name(int fd, sockaddr_storage& address,
                                       socklen_t& length) noexcept = 0;
  // A best-effort send(2) that never waits (MSG_DONTWAIT | MSG_NOSIGNAL): a fixed reply on a
  // socket about to be closed (the 421 at the session limit), where a fresh socket's buffer
  // always has room. Bytes the kernel does not take are dropped.
  virtual void send_now(int fd, const void* data, std::size_t length) noexcept = 0;

 protected:
  ~descriptors() = default;
};

class system_descriptors final : public descriptors {
 public:
  core::result<int> open_socket(int family, int type) noexcept override;
  core::result<void> set_option(int fd, int level, int name, int value) noexcept override;
  core::result<void> bind(int fd, const sockaddr* address,
                          socklen_t address_length) noexcept override;
  core::result<void> connect_datagram(int fd, const sockaddr* address,
                                      socklen_t address_length) noexcept override;
  void shutdown(int fd, int how) noexcept override;
  void close(int fd) noexcept override;
  core::result<pipe_ends> open_pipe(std::uint32_t bytes) noexcept override;
  core::result<std::size_t> read_cached(int fd, void* buffer, std::size_t length,
                                        std::uint64_t offset) noexcept override;
  core::result<void> peer_name(int fd, sockaddr_storage& address,
                               socklen_t& length) noexcept override;
  void send_now(int fd, const void* data, std::size_t length) noexcept override;
};

}  // namespace ringmta::io
