// io::ring: one io_uring instance, owned and driven by one thread (one per shard).
//
// Setup picks flags from what the kernel supports (each flag's reason is beside it in
// src/io/ring.cc) and probes the opcodes and features we use; features() reports them and
// describe() gives the line the daemon logs at start-up.
//
// Operations are small prep_* functions taking our own arguments, a 64-bit user_data (see
// io/user_data.h) and optional SQE flags (io::sqe::link, ...). They only queue the SQE; the
// kernel sees it at the next submit()/submit_and_wait(). When the SQ is full a prep submits what
// is queued and retries: an op is never dropped silently. The only failure is the kernel
// refusing submission (errno kept; the op was not queued; the caller still owns its buffers).
// Links: call reserve(n) before preparing an n-SQE chain so an implicit submit cannot split it.
//
// Lifetimes: buffers, iovecs, msghdrs, sockaddrs and paths passed to a prep must stay valid
// until the op's completion (the kernel may read them at any time before). Timeouts' timespecs
// are copied into storage owned by the ring (one per SQE slot), so callers pass plain numbers.
//
// Invariants: only the thread that called init() submits or waits (IORING_SETUP_SINGLE_ISSUER;
// the registered ring fd is private to that thread too: elsewhere, enter fails). Every
// user_data the caller passes is returned exactly once per CQE; multishot ops return it once per
// CQE until a CQE without cqe_flag_more.
// Never: includes <liburing.h> in this header, throws, or allocates after init().
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ringmta/core/result.h"
#include "ringmta/io/operations.h"
#include "ringmta/io/user_data.h"

struct io_uring;  // liburing's type, complete only inside src/io

namespace ringmta::io {

struct ring_options {
  unsigned sq_entries = 256;
  unsigned cq_entries = 0;        // 0: 16 x sq_entries (multishot bursts need room)
  unsigned fixed_file_count = 0;  // sparse registered file table; needed to pass fds between rings
  bool single_issuer = true;      // only the creating thread submits (required for defer_taskrun)
  bool defer_taskrun = true;      // run completion work only when we ask for events
  bool register_ring_fd = true;   // enter through a registered index (no fdget per syscall)
};

// What the kernel offers and what this ring uses. Probed once at init().
struct ring_features {
  // Setup flags in effect.
  bool single_issuer = false;
  bool defer_taskrun = false;
  bool coop_taskrun = false;  // the fallback when defer_taskrun is refused
  bool submit_all = false;
  bool registered_ring_fd = false;
  bool ext_arg = false;  // wait timeouts passed to io_uring_enter (no timeout SQE)
  bool nodrop = false;   // CQ overflow kept in the kernel, not dropped
  unsigned sq_entries = 0;
  unsigned cq_entries = 0;
  unsigned fixed_file_count = 0;
  unsigned setup_enomem_retries = 0;  // io_uring_setup refused for memory, then succeeded
  // Operations and op features available.
  bool multishot_accept = false;
  bool multishot_recv = false;
  bool buffer_ring = false;              // provided buffer rings (IORING_REGISTER_PBUF_RING)
  bool buffer_ring_incremental = false;  // IOU_PBUF_RING_INC: partial buffer consumption
  bool msg_ring = false;                 // IORING_OP_MSG_RING with data
  bool msg_ring_fd = false;              // IORING_OP_MSG_RING passing a fixed file
  bool send_zc = false;
  bool sendmsg_zc = false;
  bool splice = false;
  bool multishot_timeout = false;
  bool fixed_fd_install = false;  // turn a received fixed file into a normal fd
  bool socket_op = false;
  bool recv_bundle = false;
  std::string kernel_release;

  std::string describe() const;  // one line: "io_uring on 6.x: setup ...; ops ...; missing ..."
};

// Counters for metrics; cheap to copy.
struct ring_counters {
  std::uint64_t submitted = 0;         // SQEs handed to the kernel
  std::uint64_t completions = 0;       // CQEs reaped
  std::uint64_t enters = 0;            // io_uring_enter calls
  std::uint64_t sq_full_submits = 0;   // implicit submits because the SQ was full
  std::uint64_t cq_overflow_seen = 0;  // times the kernel flagged a CQ overflow
};

// The kernel's implementation of io::operations (final: callers holding a ring& call directly).
class ring final : public operations {
 public:
  ring() noexcept;
  ~ring();
  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;

  // Creates the ring on the calling thread, which becomes its only submitter.
  core::result<void> init(const ring_options& options) noexcept;
  bool initialised() const noexcept { return _uring != nullptr; }
  const ring_features& features() const noexcept { return _features; }
  const ring_counters& counters() const noexcept { return _counters; }
  int fd() const noexcept;  // the real ring fd: the target of another ring's msg_ring

  // ---- Network.
  // Multishot: one CQE per accepted connection (res = fd, or fixed index when direct) while
  // cqe_flag_more is set. direct: install into the fixed table (fixed_index_alloc) instead.
  core::result<void> prep_accept(int listen_fd, std::uint64_t user_data, bool multishot,
                                 bool direct = false,
                                 sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_connect(int fd, const sockaddr* address, socklen_t address_length,
                                  std::uint64_t user_data,
                                  sqe_flags flags = sqe::none) noexcept override;
  // Into the caller's buffer.
  core::result<void> prep_recv(int fd, void* buffer, std::uint32_t length,
                               std::uint64_t user_data,
                               sqe_flags flags = sqe::none) noexcept override;
  // From provided buffer group `group` (io::buffer_ring); one completion; -ENOBUFS when empty.
  core::result<void> prep_recv_select(int fd, std::uint16_t group, std::uint64_t user_data,
                                      sqe_flags flags = sqe::none) noexcept override;
  // Multishot from a buffer group: a CQE per arrival, each with a buffer id, while
  // cqe_flag_more. Ends on EOF (res 0), error, or -ENOBUFS (group empty): re-arm after
  // recycling. An idle connection holds no buffer.
  core::result<void> prep_recv_multishot(int fd, std::uint16_t group, std::uint64_t user_data,
                                         sqe_flags flags = sqe::none) noexcept override;
  bool recv_multishot_supported() const noexcept override { return _features.multishot_recv; }
  // Ordering: two sends in flight on one stream socket may complete out of order (one can go
  // async while the next does not): keep one send per connection in flight, or link them.
  core::result<void> prep_send(int fd, const void* data, std::uint32_t length,
                               std::uint64_t user_data, sqe_flags flags = sqe::none,
                               int msg_flags = MSG_NOSIGNAL) noexcept override;
  // Vectored send (writev-like), e.g. reply + body pieces in one op.
  core::result<void> prep_sendmsg(int fd, const msghdr* message, std::uint64_t user_data,
                                  sqe_flags flags = sqe::none,
                                  int msg_flags = MSG_NOSIGNAL) noexcept override;
  // Zero-copy send. Usually two CQEs with the same user_data: first the result (res = bytes,
  // cqe_flag_more set when a notification follows), then the notification (cqe_flag_notification,
  // res 0) once the kernel no longer reads `data`: only then may the buffer be reused. With
  // report_usage the notification's res has bit 31 set when the kernel had to copy after all
  // (loopback always does). A failed send (res < 0) may come without a notification: check more().
  core::result<void> prep_send_zc(int fd, const void* data, std::uint32_t length,
                                  std::uint64_t user_data, bool report_usage = false,
                                  sqe_flags flags = sqe::none,
                                  int msg_flags = MSG_NOSIGNAL) noexcept override;
  core::result<void> prep_shutdown(int fd, int how, std::uint64_t user_data,
                                   sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_poll(int fd, std::uint32_t poll_events, std::uint64_t user_data,
                               bool multishot = false,
                               sqe_flags flags = sqe::none) noexcept override;

  // ---- Files. offset ~0ull means "current file position" for read/write.
  core::result<void> prep_read(int fd, void* buffer, std::uint32_t length, std::uint64_t offset,
                               std::uint64_t user_data,
                               sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_write(int fd, const void* data, std::uint32_t length,
                                std::uint64_t offset, std::uint64_t user_data,
                                sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_writev(int fd, const iovec* pieces, unsigned piece_count,
                                 std::uint64_t offset, std::uint64_t user_data,
                                 sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_fsync(int fd, std::uint64_t user_data,
                                sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_fdatasync(int fd, std::uint64_t user_data,
                                    sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_openat(int directory_fd, const char* path, int open_flags,
                                 mode_t mode, std::uint64_t user_data,
                                 sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_close(int fd, std::uint64_t user_data,
                                sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_close_fixed(std::uint32_t fixed_index, std::uint64_t user_data,
                                      sqe_flags flags = sqe::none) noexcept override;
  // One side must be a pipe. offset -1: use/advance the file position (or none for pipes).
  // Chaining file->pipe->socket: a short splice (normal) fails a plain sqe::link and cancels the
  // next op, so chain the halves with sqe::hardlink.
  core::result<void> prep_splice(int fd_in, std::int64_t offset_in, int fd_out,
                                 std::int64_t offset_out, std::uint32_t length,
                                 std::uint64_t user_data,
                                 sqe_flags flags = sqe::none) noexcept override;

  // ---- Time and control. Durations in nanoseconds, relative to now (CLOCK_MONOTONIC).
  // Completes with -ETIME when it expires, 0 when count completions arrived first (count > 0),
  // -ECANCELED when removed.
  core::result<void> prep_timeout(std::uint64_t timeout_ns, std::uint64_t user_data,
                                  unsigned count = 0,
                                  sqe_flags flags = sqe::none) noexcept override;
  // Fires every timeout_ns (cqe_flag_more each time) `repeat_count` times, 0 = forever.
  // Needs features().multishot_timeout.
  core::result<void> prep_timeout_multishot(std::uint64_t timeout_ns, unsigned repeat_count,
                                            std::uint64_t user_data,
                                            sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_timeout_update(std::uint64_t target_user_data,
                                         std::uint64_t timeout_ns, std::uint64_t user_data,
                                         sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_timeout_remove(std::uint64_t target_user_data, std::uint64_t user_data,
                                         sqe_flags flags = sqe::none) noexcept override;
  // Bounds the previous SQE, which must carry sqe::link: it is cancelled (-ECANCELED) if it
  // has not completed within timeout_ns; this op then completes with -ETIME (or -ECANCELED
  // when the bounded op finished first).
  core::result<void> prep_link_timeout(std::uint64_t timeout_ns, std::uint64_t user_data,
                                       sqe_flags flags = sqe::none) noexcept override;
  // Cancels the op(s) with target_user_data; res = 0 found, -ENOENT none, -EALREADY running.
  core::result<void> prep_cancel(std::uint64_t target_user_data, std::uint64_t user_data,
                                 bool all = false, sqe_flags flags = sqe::none) noexcept override;
  // Cancels every op on fd; res = number cancelled or -ENOENT.
  core::result<void> prep_cancel_fd(int fd, std::uint64_t user_data,
                                    sqe_flags flags = sqe::none) noexcept override;
  core::result<void> prep_nop(std::uint64_t user_data,
                              sqe_flags flags = sqe::none) noexcept override;

  // ---- Between rings.
  // Posts a CQE {user_data = target_user_data, res = value, flags 0} on the ring whose fd is
  // target_ring_fd. This ring gets its own CQE for the send (use sqe::skip_success to drop it).
  core::result<void> prep_msg_ring(int target_ring_fd, std::int32_t value,
                                   std::uint64_t target_user_data, std::uint64_t user_data,
                                   sqe_flags flags = sqe::none) noexcept override;
  // Installs our fixed file source_fixed_index into the target ring's fixed table
  // (target_fixed_index, or fixed_index_alloc) and posts a CQE there {user_data =
  // target_user_data, res = the target's index}. The source slot stays installed here: close it
  // with prep_close_fixed when done. Needs features().msg_ring_fd and a target fixed table.
  core::result<void> prep_msg_ring_fd(int target_ring_fd, std::uint32_t source_fixed_index,
                                      std::uint32_t target_fixed_index,
                                      std::uint64_t target_user_data, std::uint64_t user_data,
                                      sqe_flags flags = sqe::none) noexcept override;
  // Turns fixed file fixed_index into a normal fd (res = fd, close-on-exec). The fixed slot
  // stays: close it with prep_close_fixed. Needs features().fixed_fd_install.
  core::result<void> prep_fixed_fd_install(std::uint32_t fixed_index, std::uint64_t user_data,
                                           sqe_flags flags = sqe::none) noexcept override;

  // ---- Registrations (synchronous; set-up or rare paths).
  // Sets fixed table slot `fixed_index` to `fd` (-1 clears it). The table holds its own
  // reference: the caller may close `fd` afterwards.
  core::result<void> update_fixed_file(std::uint32_t fixed_index, int fd) noexcept;

  // ---- Submission and completion.
  // Ensures `count` free SQEs (submitting queued ones if needed) so a linked chain stays whole.
  core::result<void> reserve(unsigned count) noexcept override;
  unsigned pending_sqes() const noexcept;
  core::result<unsigned> submit() noexcept;  // returns SQEs submitted
  // Submits, then sleeps until at least wait_count CQEs are ready or timeout_ns passed
  // (timeout_ns < 0: no limit). A timeout or signal is not an error. Also flushes deferred
  // completion work (DEFER_TASKRUN) so reap() sees it.
  core::result<unsigned> submit_and_wait(unsigned wait_count,
                                         std::int64_t timeout_ns = -1) noexcept;
  // Copies up to out.size() ready CQEs into `out` and frees their CQ slots.
  unsigned reap(std::span<completion> out) noexcept;
  unsigned ready_completions() const noexcept;

  // Calls fn(const completion&) for every ready CQE (in batches of 64), until none is left.
  template <typename Fn>
  unsigned for_each_completion(Fn&& fn) noexcept {
    completion batch[64];
    unsigned total = 0;
    for (;;) {
      const unsigned count = reap(batch);
      for (unsigned i = 0; i < count; ++i) fn(static_cast<const completion&>(batch[i]));
      total += count;
      if (count < std::size(batch)) return total;
    }
  }

  ::io_uring* native() noexcept { return _uring.get(); }  // for src/io only

 private:
  struct timespec_slot;  // a __kernel_timespec, defined in ring.cc

  // Queues one SQE filled by `fill` (defined in ring.cc, the only user).
  template <typename Fill>
  core::result<void> queue(std::uint64_t user_data, sqe_flags flags, Fill&& fill) noexcept;
  void* next_sqe() noexcept;  // io_uring_sqe*, or nullptr if the kernel refused a submission
  void* timespec_for(const void* sqe, std::uint64_t timeout_ns) noexcept;
  core::result<unsigned> enter(unsigned wait_count, std::int64_t timeout_ns) noexcept;
  core::result<void> setup(const ring_options& options) noexcept;
  void probe_features() noexcept;
  void probe_buffer_rings() noexcept;
  void probe_multishot_timeout() noexcept;

  std::unique_ptr<::io_uring> _uring;
  std::unique_ptr<timespec_slot[]> _timespecs;  // one per SQE slot: valid until submitted
  ring_features _features;
  ring_counters _counters;
  unsigned _enter_flags = 0;
  int _enter_fd = -1;
  int _last_submit_errno = 0;
};

}  // namespace ringmta::io
