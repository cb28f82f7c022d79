// io::operations: the asynchronous operations the glue submits, as an interface (issue 16
// item 1). The glue (src/outbound first) names only this type, never io::ring, so the same code
// runs on the kernel's ring in production and on a simulated one in tests/sim: no #ifdef SIM.
//
// Contract (the one io::ring documents op by op, see io/ring.h): a prep_* only queues the
// operation; its completion arrives later, once per op (multishot ops: once per CQE until one
// without cqe_flag_more), carrying the caller's user_data, through the owner's dispatch by op
// kind (shard::shard). A prep never completes synchronously, never calls back into the caller,
// and fails only when the op could not be queued (errno kept; the caller still owns its
// buffers). Buffers, iovecs, msghdrs, sockaddrs and paths stay valid until the op completes.
// Timeouts are relative durations: an implementation measures them on its own clock (the
// kernel's CLOCK_MONOTONIC, or the simulator's), never the caller.
//
// Cost: one indirect call per queued op. io::ring is final, so code holding an io::ring& (the
// shard loop, src/server, src/spool) calls it directly; only code holding an operations& pays
// the indirection, which is a few nanoseconds next to the io_uring_enter each op ends in.
// A template parameter would save those and cost every glue file becoming a header.
//
// Defaults of the arguments match io::ring's declarations (C++ takes defaults from the static
// type): change both together.
// Never: includes <liburing.h>, throws, allocates.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>

#include "ringmta/core/result.h"

namespace ringmta::io {

// SQE flags (values of IOSQE_*), combinable with |.
using sqe_flags = std::uint8_t;
namespace sqe {
inline constexpr sqe_flags none = 0;
inline constexpr sqe_flags fixed_file = 1u << 0;    // fd is an index into the registered table
inline constexpr sqe_flags drain = 1u << 1;         // start after every earlier SQE completed
inline constexpr sqe_flags link = 1u << 2;          // next SQE starts only if this one succeeds
inline constexpr sqe_flags hardlink = 1u << 3;      // next SQE starts whatever this one's result
inline constexpr sqe_flags async = 1u << 4;         // go straight to a worker (blocking file ops)
inline constexpr sqe_flags skip_success = 1u << 6;  // no CQE unless the op fails
}  // namespace sqe

// Target of a direct (fixed-table) install: let the kernel choose a free index.
inline constexpr std::uint32_t fixed_index_alloc = ~0u;

class operations {
 public:
  // ---- Network.
  virtual core::result<void> prep_accept(int listen_fd, std::uint64_t user_data, bool multishot,
                                         bool direct = false,
                                         sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_connect(int fd, const sockaddr* address,
                                          socklen_t address_length, std::uint64_t user_data,
                                          sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_recv(int fd, void* buffer, std::uint32_t length,
                                       std::uint64_t user_data,
                                       sqe_flags flags = sqe::none) noexcept = 0;
  // From provided buffer group `group`: the completion names the buffer (has_buffer()).
  virtual core::result<void> prep_recv_select(int fd, std::uint16_t group,
                                              std::uint64_t user_data,
                                              sqe_flags flags = sqe::none) noexcept = 0;
  // Multishot from a buffer group: a completion per arrival while cqe_flag_more; the last
  // one (end of stream, an error, -ENOBUFS) has no cqe_flag_more. Only where
  // recv_multishot_supported(): a kernel without it fails the op in its completion.
  virtual core::result<void> prep_recv_multishot(int fd, std::uint16_t group,
                                                 std::uint64_t user_data,
                                                 sqe_flags flags = sqe::none) noexcept = 0;
  // Probed at run time (io::ring: ring_features::multishot_recv, Linux 6.0).
  virtual bool recv_multishot_supported() const noexcept = 0;
  virtual core::result<void> prep_send(int fd, const void* data, std::uint32_t length,
                                       std::uint64_t user_data, sqe_flags flags = sqe::none,
                                       int msg_flags = MSG_NOSIGNAL) noexcept = 0;
  virtual core::result<void> prep_sendmsg(int fd, const msghdr* message, std::uint64_t user_data,
                                          sqe_flags flags = sqe::none,
                                          int msg_flags = MSG_NOSIGNAL) noexcept = 0;
  virtual core::result<void> prep_send_zc(int fd, const void* data, std::uint32_t length,
                                          std::uint64_t user_data, bool report_usage = false,
                                          sqe_flags flags = sqe::none,
                                          int msg_flags = MSG_NOSIGNAL) noexcept = 0;
  virtual core::result<void> prep_shutdown(int fd, int how, std::uint64_t user_data,
                                           sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_poll(int fd, std::uint32_t poll_events,
                                       std::uint64_t user_data, bool multishot = false,
                                       sqe_flags flags = sqe::none) noexcept = 0;

  // ---- Files. offset ~0ull means "current file position" for read/write.
  virtual core::result<void> prep_read(int fd, void* buffer, std::uint32_t length,
                                       std::uint64_t offset, std::uint64_t user_data,
                                       sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_write(int fd, const void* data, std::uint32_t length,
                                        std::uint64_t offset, std::uint64_t user_data,
                                        sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_writev(int fd, const iovec* pieces, unsigned piece_count,
                                         std::uint64_t offset, std::uint64_t user_data,
                                         sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_fsync(int fd, std::uint64_t user_data,
                                        sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_fdatasync(int fd, std::uint64_t user_data,
                                            sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_openat(int directory_fd, const char* path, int open_flags,
                                         mode_t mode, std::uint64_t user_data,
                                         sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_close(int fd, std::uint64_t user_data,
                                        sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_close_fixed(std::uint32_t fixed_index, std::uint64_t user_data,
                                              sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_splice(int fd_in, std::int64_t offset_in, int fd_out,
                                         std::int64_t offset_out, std::uint32_t length,
                                         std::uint64_t user_data,
                                         sqe_flags flags = sqe::none) noexcept = 0;

  // ---- Time and control. Durations in nanoseconds, relative to the implementation's now.
  virtual core::result<void> prep_timeout(std::uint64_t timeout_ns, std::uint64_t user_data,
                                          unsigned count = 0,
                                          sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_timeout_multishot(std::uint64_t timeout_ns,
                                                    unsigned repeat_count,
                                                    std::uint64_t user_data,
                                                    sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_timeout_update(std::uint64_t target_user_data,
                                                 std::uint64_t timeout_ns,
                                                 std::uint64_t user_data,
                                                 sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_timeout_remove(std::uint64_t target_user_data,
                                                 std::uint64_t user_data,
                                                 sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_link_timeout(std::uint64_t timeout_ns,
                                               std::uint64_t user_data,
                                               sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_cancel(std::uint64_t target_user_data,
                                         std::uint64_t user_data, bool all = false,
                                         sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_cancel_fd(int fd, std::uint64_t user_data,
                                            sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_nop(std::uint64_t user_data,
                                      sqe_flags flags = sqe::none) noexcept = 0;

  // ---- Between rings (cross-shard messages and file hand-over).
  virtual core::result<void> prep_msg_ring(int target_ring_fd, std::int32_t value,
                                           std::uint64_t target_user_data,
                                           std::uint64_t user_data,
                                           sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_msg_ring_fd(int target_ring_fd,
                                              std::uint32_t source_fixed_index,
                                              std::uint32_t target_fixed_index,
                                              std::uint64_t target_user_data,
                                              std::uint64_t user_data,
                                              sqe_flags flags = sqe::none) noexcept = 0;
  virtual core::result<void> prep_fixed_fd_install(std::uint32_t fixed_index,
                                                   std::uint64_t user_data,
                                                   sqe_flags flags = sqe::none) noexcept = 0;

  // Room for `count` ops queued back to back, so a linked chain is never split.
  virtual core::result<void> reserve(unsigned count) noexcept = 0;

 protected:
  ~operations() = default;
};

}  // namespace ringmta::io
