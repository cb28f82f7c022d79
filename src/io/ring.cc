#include "ringmta/io/ring.h"

#include <liburing.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "io/uring_compat.h"
#include "ringmta/core/assert.h"

namespace ringmta::io {

static_assert(cqe_flag_buffer == IORING_CQE_F_BUFFER);
static_assert(cqe_flag_more == IORING_CQE_F_MORE);
static_assert(cqe_flag_socket_nonempty == IORING_CQE_F_SOCK_NONEMPTY);
static_assert(cqe_flag_notification == IORING_CQE_F_NOTIF);
static_assert(cqe_flag_buffer_more == compat::cqe_buffer_more);
static_assert(cqe_buffer_shift == IORING_CQE_BUFFER_SHIFT);
static_assert(sqe::fixed_file == IOSQE_FIXED_FILE && sqe::drain == IOSQE_IO_DRAIN);
static_assert(sqe::link == IOSQE_IO_LINK && sqe::hardlink == IOSQE_IO_HARDLINK);
static_assert(sqe::async == IOSQE_ASYNC && sqe::skip_success == IOSQE_CQE_SKIP_SUCCESS);
static_assert(fixed_index_alloc == IORING_FILE_INDEX_ALLOC);

struct ring::timespec_slot {
  __kernel_timespec value;
};

namespace {

constexpr std::uint64_t ns_per_second = 1'000'000'000;

__kernel_timespec to_timespec(std::uint64_t ns) noexcept {
  __kernel_timespec ts{};
  ts.tv_sec = static_cast<long long>(ns / ns_per_second);
  ts.tv_nsec = static_cast<long long>(ns % ns_per_second);
  return ts;
}

constexpr unsigned setup_enomem_retries_max = 8;  // 10 ms doubling: 2.55 s at most

}  // namespace

ring::ring() noexcept = default;

ring::~ring() {
  if (_uring) io_uring_queue_exit(_uring.get());
}

int ring::fd() const noexcept { return _uring ? _uring->ring_fd : -1; }

// Tries the best flag set first and falls back one step at a time; each flag's reason:
core::result<void> ring::setup(const ring_options& options) noexcept {
  const unsigned cq_entries =
      options.cq_entries != 0 ? options.cq_entries : options.sq_entries * 16;
  // CQSIZE: a CQ much larger than the SQ, because one multishot accept/recv SQE can post many
  //   CQEs per loop iteration; overflowing the CQ costs a kernel-side list and an extra enter.
  // SUBMIT_ALL: one bad SQE does not stop the batch; its error comes back as its own CQE, so
  //   no op is left in the SQ silently.
  // SINGLE_ISSUER: one thread per ring (our shard model); lets the kernel skip locking.
  // DEFER_TASKRUN: completion work runs only when we enter to get events, i.e. in our loop,
  //   not by interrupting the thread (fewer context switches, batched completions).
  // Fallback COOP_TASKRUN | TASKRUN_FLAG: no IPI to run task work; the kernel raises
  //   IORING_SQ_TASKRUN and we enter to run it.
  struct attempt {
    unsigned flags;
  };
  const unsigned base = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  const unsigned single = options.single_issuer ? IORING_SETUP_SINGLE_ISSUER : 0u;
  const unsigned defer = options.single_issuer && options.defer_taskrun
                             ? IORING_SETUP_DEFER_TASKRUN : 0u;
  const unsigned coop = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  const attempt attempts[] = {
      {base | single | defer}, {base | single | coop}, {base | coop}, {IORING_SETUP_CQSIZE}};
  int last = EINVAL;
  for (const attempt& a : attempts) {
    io_uring_params params{};
    params.flags = a.flags;
    params.cq_entries = cq_entries;
    int rc = io_uring_queue_init_params(options.sq_entries, _uring.get(), &params);
    // ENOMEM under memory pressure is transient: the kernel allocates the rings' pages in bulk
    // and gives up below its watermarks (seen right after a kill -9 with much dirty page cache).
    // Wait for reclaim, up to about 2.5 s in all, rather than refuse to start.
    for (unsigned retry = 0; rc == -ENOMEM && retry < setup_enomem_retries_max; ++retry) {
      ::usleep(10'000u << retry);
      params = io_uring_params{};
      params.flags = a.flags;
      params.cq_entries = cq_entries;
      rc = io_uring_queue_init_params(options.sq_entries, _uring.get(), &params);
      _features.setup_enomem_retries = retry + 1;
    }
    if (rc == 0) {
      _features.single_issuer = (a.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
      _features.defer_taskrun = (a.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
      _features.coop_taskrun = (a.flags & IORING_SETUP_COOP_TASKRUN) != 0;
      _features.submit_all = (a.flags & IORING_SETUP_SUBMIT_ALL) != 0;
      _features.ext_arg = (params.features & IORING_FEAT_EXT_ARG) != 0;
      _features.nodrop = (params.features & IORING_FEAT_NODROP) != 0;
      _features.recv_bundle = (params.features & compat::feat_recvsend_bundle) != 0;
      _features.sq_entries = params.sq_entries;
      _features.cq_entries = params.cq_entries;
      return {};
    }
    last = -rc;
    if (rc != -EINVAL) break;  // ENOMEM, EMFILE, EPERM: falling back will not help
  }
  return core::fail(last);
}

core::result<void> ring::init(const ring_options& options) noexcept {
  RINGMTA_ASSERT(!_uring);
  RINGMTA_ASSERT(options.sq_entries > 0);
  _uring.reset(new (std::nothrow)::io_uring{});
  if (!_uring) return core::fail(ENOMEM);
  if (auto ok = setup(options); !ok) {
    _uring.reset();
    return ok;
  }
  // Wait timeouts travel in io_uring_enter's extended argument (no timeout SQE per wait).
  if (!_features.ext_arg) {
    io_uring_queue_exit(_uring.get());
    _uring.reset();
    return core::fail(ENOSYS);
  }
  // Identity SQ index array, so an SQE's slot is its position (liburing >= 2.2 does the same).
  if (_uring->sq.array != nullptr) {
    for (unsigned i = 0; i < _uring->sq.ring_entries; ++i) _uring->sq.array[i] = i;
  }
  _enter_fd = _uring->ring_fd;
  // Registered ring fd: io_uring_enter skips the fd table lookup (fdget/fdput) on every call.
  if (options.register_ring_fd && io_uring_register_ring_fd(_uring.get()) == 1) {
    _features.registered_ring_fd = true;
    _enter_fd = _uring->enter_ring_fd;
    _enter_flags = IORING_ENTER_REGISTERED_RING;
  }
  if (options.fixed_file_count > 0) {
    const int rc = io_uring_register_files_sparse(_uring.get(), options.fixed_file_count);
    if (rc < 0) {
      io_uring_queue_exit(_uring.get());
      _uring.reset();
      return core::fail(-rc);
    }
    _features.fixed_file_count = options.fixed_file_count;
  }
  _timespecs.reset(new (std::nothrow) timespec_slot[_uring->sq.ring_entries]);
  if (!_timespecs) {
    io_uring_queue_exit(_uring.get());
    _uring.reset();
    return core::fail(ENOMEM);
  }
  probe_features();
  return {};
}

void ring::probe_features() noexcept {
  utsname name{};
  if (uname(&name) == 0) _features.kernel_release = name.release;
  io_uring_probe* probe = io_uring_get_probe_ring(_uring.get());
  auto has = [probe](unsigned op) {
    return probe != nullptr && io_uring_opcode_supported(probe, op);
  };
  // Multishot accept came with IORING_OP_SOCKET (5.19); multishot recv, MSG_RING fd passing and
  // SEND_ZC all came in 6.0: the opcodes date the kernel where no flag can be probed.
  _features.multishot_accept = has(IORING_OP_SOCKET) && has(IORING_OP_ACCEPT);
  _features.socket_op = has(IORING_OP_SOCKET);
  _features.send_zc = has(IORING_OP_SEND_ZC);
  _features.sendmsg_zc = has(IORING_OP_SENDMSG_ZC);
  _features.multishot_recv = _features.send_zc && has(IORING_OP_RECV);
  _features.msg_ring = has(IORING_OP_MSG_RING);
  _features.msg_ring_fd = _features.msg_ring && _features.send_zc;
  _features.splice = has(IORING_OP_SPLICE);
  _features.fixed_fd_install = has(compat::op_fixed_fd_install);
  if (probe != nullptr) io_uring_free_probe(probe);
  probe_buffer_rings();
  probe_multishot_timeout();
}

// Registers and unregisters a one-entry buffer ring (plain, then incremental): the kernel says
// EINVAL when it lacks the feature. Group 0xffff is reserved for this probe.
void ring::probe_buffer_rings() noexcept {
  const long page = sysconf(_SC_PAGESIZE);
  void* memory = mmap(nullptr, static_cast<std::size_t>(page), PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (memory == MAP_FAILED) return;
  for (const unsigned short flags : {static_cast<unsigned short>(0),
                                     compat::pbuf_ring_incremental}) {
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(memory);
    reg.ring_entries = 1;
    reg.bgid = 0xffff;
    reg.pad = flags;
    if (io_uring_register_buf_ring(_uring.get(), &reg, 0) != 0) break;
    io_uring_unregister_buf_ring(_uring.get(), 0xffff);
    (flags == 0 ? _features.buffer_ring : _features.buffer_ring_incremental) = true;
  }
  munmap(memory, static_cast<std::size_t>(page));
}

// A one-shot multishot timeout of 1 ns: -ETIME when supported, -EINVAL when not. Runs before
// the ring is handed out, so its CQE cannot be confused with anyone's.
void ring::probe_multishot_timeout() noexcept {
  io_uring_sqe* s = io_uring_get_sqe(_uring.get());
  if (s == nullptr) return;
  __kernel_timespec ts = to_timespec(1);
  io_uring_prep_timeout(s, &ts, 1, compat::timeout_multishot);
  s->user_data = 0;
  io_uring_cqe* cqe = nullptr;
  if (io_uring_submit_and_wait(_uring.get(), 1) < 0) return;
  if (io_uring_peek_cqe(_uring.get(), &cqe) == 0 && cqe != nullptr) {
    _features.multishot_timeout = cqe->res == -ETIME;
    io_uring_cqe_seen(_uring.get(), cqe);
  }
}


// ---- Submission plumbing.

void* ring::next_sqe() noexcept {
  io_uring_sqe* s = io_uring_get_sqe(_uring.get());
  if (s != nullptr) return s;
  // SQ full: hand what is queued to the kernel and retry. With SUBMIT_ALL the kernel takes the
  // whole batch unless io_uring_enter itself fails (then we report that errno, dropping nothing).
  ++_counters.sq_full_submits;
  for (int attempt = 0; attempt < 4 && s == nullptr; ++attempt) {
    if (auto submitted = submit(); !submitted) {
      _last_submit_errno = submitted.error();
      if (_last_submit_errno != EAGAIN && _last_submit_errno != EINTR) return nullptr;
    }
    s = io_uring_get_sqe(_uring.get());
  }
  if (s == nullptr && _last_submit_errno == 0) _last_submit_errno = EBUSY;
  return s;
}

template <typename Fill>
core::result<void> ring::queue(std::uint64_t user_data, sqe_flags flags, Fill&& fill) noexcept {
  RINGMTA_ASSERT(_uring);
  auto* s = static_cast<io_uring_sqe*>(next_sqe());
  if (s == nullptr) return core::fail(_last_submit_errno);
  fill(s);  // every fill starts with a liburing prep (which writes every field) or a memset
  s->flags |= flags;
  s->user_data = user_data;
  return {};
}

void* ring::timespec_for(const void* sqe, std::uint64_t timeout_ns) noexcept {
  const auto index = static_cast<std::size_t>(static_cast<const io_uring_sqe*>(sqe) -
                                              _uring->sq.sqes);
  RINGMTA_ASSERT(index < _uring->sq.ring_entries);
  // The kernel copies the timespec while consuming the SQE (timeout prep), and this SQE slot is
  // not handed out again before that: one storage cell per slot is enough.
  _timespecs[index].value = to_timespec(timeout_ns);
  return &_timespecs[index].value;
}

core::result<void> ring::reserve(unsigned count) noexcept {
  RINGMTA_ASSERT(count <= _uring->sq.ring_entries);
  if (io_uring_sq_space_left(_uring.get()) >= count) return {};
  ++_counters.sq_full_submits;
  if (auto submitted = submit(); !submitted) return core::fail(submitted.error());
  if (io_uring_sq_space_left(_uring.get()) < count) return core::fail(EBUSY);
  return {};
}

unsigned ring::pending_sqes() const noexcept {
  const io_uring_sq& sq = _uring->sq;
  return sq.sqe_tail - io_uring_smp_load_acquire(sq.khead);
}

core::result<unsigned> ring::submit() noexcept { return enter(0, -1); }

core::result<unsigned> ring::submit_and_wait(unsigned wait_count,
                                             std::int64_t timeout_ns) noexcept {
  return enter(wait_count, timeout_ns);
}

// One io_uring_enter: submits every queued SQE and, when asked, waits for completions. With
// DEFER_TASKRUN (or a raised TASKRUN/overflow flag) it also asks for events, which is when the
// kernel posts deferred completions.
core::result<unsigned> ring::enter(unsigned wait_count, std::int64_t timeout_ns) noexcept {
  io_uring_sq& sq = _uring->sq;
  if (sq.sqe_tail != sq.sqe_head) {
    sq.sqe_head = sq.sqe_tail;
    io_uring_smp_store_release(sq.ktail, sq.sqe_tail);
  }
  const unsigned to_submit = sq.sqe_tail - io_uring_smp_load_acquire(sq.khead);
  const unsigned kernel_flags = IO_URING_READ_ONCE(*sq.kflags);
  if (kernel_flags & IORING_SQ_CQ_OVERFLOW) ++_counters.cq_overflow_seen;
  if (wait_count > 0 && ready_completions() >= wait_count) wait_count = 0;  // no need to sleep
  unsigned flags = _enter_flags;
  if (wait_count > 0 || _features.defer_taskrun ||
      (kernel_flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN))) {
    flags |= IORING_ENTER_GETEVENTS;
  }
  if (to_submit == 0 && (flags & IORING_ENTER_GETEVENTS) == 0) return 0u;
  if (to_submit == 0 && wait_count == 0 && _features.defer_taskrun && ready_completions() > 0 &&
      (kernel_flags & IORING_SQ_CQ_OVERFLOW) == 0) {
    return 0u;  // completions are waiting anyway: reap them before paying for a syscall
  }
  __kernel_timespec ts{};
  io_uring_getevents_arg arg{};
  void* argument = nullptr;
  std::size_t argument_size = 0;
  if (wait_count > 0 && timeout_ns >= 0) {
    ts = to_timespec(static_cast<std::uint64_t>(timeout_ns));
    arg.ts = reinterpret_cast<std::uintptr_t>(&ts);
    argument = &arg;
    argument_size = sizeof arg;
    flags |= IORING_ENTER_EXT_ARG;
  }
  ++_counters.enters;
  const int rc = io_uring_enter2(static_cast<unsigned>(_enter_fd), to_submit, wait_count, flags,
                                 static_cast<sigset_t*>(argument), argument_size);
  if (rc >= 0) {
    _counters.submitted += static_cast<unsigned>(rc);
    return static_cast<unsigned>(rc);
  }
  // A wait that timed out or was interrupted, or a CQ too full to take more (-EBUSY: reap,
  // then the next enter submits), is not an error for the caller's loop.
  if (rc == -ETIME || rc == -EINTR || rc == -EBUSY) return 0u;
  return core::fail(-rc);
}

unsigned ring::ready_completions() const noexcept {
  const io_uring_cq& cq = _uring->cq;
  return io_uring_smp_load_acquire(cq.ktail) - *cq.khead;
}

unsigned ring::reap(std::span<completion> out) noexcept {
  io_uring_cq& cq = _uring->cq;
  const unsigned head = *cq.khead;
  const unsigned available = io_uring_smp_load_acquire(cq.ktail) - head;
  const auto count = static_cast<unsigned>(std::min<std::size_t>(available, out.size()));
  for (unsigned i = 0; i < count; ++i) {
    const io_uring_cqe& cqe = cq.cqes[(head + i) & cq.ring_mask];
    out[i] = completion{cqe.user_data, cqe.res, cqe.flags};
  }
  io_uring_smp_store_release(cq.khead, head + count);  // the CQ slots are free again
  _counters.completions += count;
  return count;
}

// ---- Network operations.

core::result<void> ring::prep_accept(int listen_fd, std::uint64_t user_data, bool multishot,
                                     bool direct, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    // Accepted sockets stay blocking: io_uring polls them itself, and O_NONBLOCK would turn
    // some ops into -EAGAIN for us to handle. Direct descriptors have no close-on-exec flag
    // (the kernel refuses SOCK_CLOEXEC with them); normal ones get it.
    if (multishot && direct) {
      io_uring_prep_multishot_accept_direct(s, listen_fd, nullptr, nullptr, 0);
    } else if (multishot) {
      io_uring_prep_multishot_accept(s, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    } else if (direct) {
      // liburing stores index + 1: ALLOC - 1 encodes IORING_FILE_INDEX_ALLOC.
      io_uring_prep_accept_direct(s, listen_fd, nullptr, nullptr, 0, IORING_FILE_INDEX_ALLOC - 1);
    } else {
      io_uring_prep_accept(s, listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    }
  });
}

core::result<void> ring::prep_connect(int fd, const sockaddr* address, socklen_t address_length,
                                      std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_connect(s, fd, address, address_length); });
}

core::result<void> ring::prep_recv(int fd, void* buffer, std::uint32_t length,
                                   std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_recv(s, fd, buffer, length, 0); });
}

core::result<void> ring::prep_recv_select(int fd, std::uint16_t group, std::uint64_t user_data,
                                          sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_recv(s, fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = group;
  });
}

core::result<void> ring::prep_recv_multishot(int fd, std::uint16_t group, std::uint64_t user_data,
                                             sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = group;
  });
}

core::result<void> ring::prep_send(int fd, const void* data, std::uint32_t length,
                                   std::uint64_t user_data, sqe_flags flags,
                                   int msg_flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_send(s, fd, data, length, msg_flags); });
}

core::result<void> ring::prep_sendmsg(int fd, const msghdr* message, std::uint64_t user_data,
                                      sqe_flags flags, int msg_flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_sendmsg(s, fd, message, static_cast<unsigned>(msg_flags));
  });
}

core::result<void> ring::prep_send_zc(int fd, const void* data, std::uint32_t length,
                                      std::uint64_t user_data, bool report_usage,
                                      sqe_flags flags, int msg_flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_send_zc(s, fd, data, length, msg_flags,
                          report_usage ? compat::send_zc_report_usage : 0u);
  });
}

core::result<void> ring::prep_shutdown(int fd, int how, std::uint64_t user_data,
                                       sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) { io_uring_prep_shutdown(s, fd, how); });
}

core::result<void> ring::prep_poll(int fd, std::uint32_t poll_events, std::uint64_t user_data,
                                   bool multishot, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    if (multishot) {
      io_uring_prep_poll_multishot(s, fd, poll_events);
    } else {
      io_uring_prep_poll_add(s, fd, poll_events);
    }
  });
}

// ---- File operations.

core::result<void> ring::prep_read(int fd, void* buffer, std::uint32_t length,
                                   std::uint64_t offset, std::uint64_t user_data,
                                   sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buffer, length, offset); });
}

core::result<void> ring::prep_write(int fd, const void* data, std::uint32_t length,
                                    std::uint64_t offset, std::uint64_t user_data,
                                    sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_write(s, fd, data, length, offset); });
}

core::result<void> ring::prep_writev(int fd, const iovec* pieces, unsigned piece_count,
                                     std::uint64_t offset, std::uint64_t user_data,
                                     sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_writev(s, fd, pieces, piece_count, offset); });
}

core::result<void> ring::prep_fsync(int fd, std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, 0); });
}

core::result<void> ring::prep_fdatasync(int fd, std::uint64_t user_data,
                                        sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC); });
}

core::result<void> ring::prep_openat(int directory_fd, const char* path, int open_flags,
                                     mode_t mode, std::uint64_t user_data,
                                     sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_openat(s, directory_fd, path, open_flags, mode);
  });
}

core::result<void> ring::prep_close(int fd, std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) { io_uring_prep_close(s, fd); });
}

core::result<void> ring::prep_close_fixed(std::uint32_t fixed_index, std::uint64_t user_data,
                                          sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_close_direct(s, fixed_index); });
}

core::result<void> ring::prep_splice(int fd_in, std::int64_t offset_in, int fd_out,
                                     std::int64_t offset_out, std::uint32_t length,
                                     std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_splice(s, fd_in, offset_in, fd_out, offset_out, length, SPLICE_F_MOVE);
  });
}

// ---- Time and control.

core::result<void> ring::prep_timeout(std::uint64_t timeout_ns, std::uint64_t user_data,
                                      unsigned count, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    auto* ts = static_cast<__kernel_timespec*>(timespec_for(s, timeout_ns));
    io_uring_prep_timeout(s, ts, count, 0);
  });
}

core::result<void> ring::prep_timeout_multishot(std::uint64_t timeout_ns, unsigned repeat_count,
                                                std::uint64_t user_data,
                                                sqe_flags flags) noexcept {
  if (!_features.multishot_timeout) return core::fail(EOPNOTSUPP);
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    auto* ts = static_cast<__kernel_timespec*>(timespec_for(s, timeout_ns));
    io_uring_prep_timeout(s, ts, repeat_count, compat::timeout_multishot);
  });
}

core::result<void> ring::prep_timeout_update(std::uint64_t target_user_data,
                                             std::uint64_t timeout_ns, std::uint64_t user_data,
                                             sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    auto* ts = static_cast<__kernel_timespec*>(timespec_for(s, timeout_ns));
    io_uring_prep_timeout_update(s, ts, target_user_data, 0);
  });
}

core::result<void> ring::prep_timeout_remove(std::uint64_t target_user_data,
                                             std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_timeout_remove(s, target_user_data, 0); });
}

core::result<void> ring::prep_link_timeout(std::uint64_t timeout_ns, std::uint64_t user_data,
                                           sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    auto* ts = static_cast<__kernel_timespec*>(timespec_for(s, timeout_ns));
    io_uring_prep_link_timeout(s, ts, 0);
  });
}

core::result<void> ring::prep_cancel(std::uint64_t target_user_data, std::uint64_t user_data,
                                     bool all, sqe_flags flags) noexcept {
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    io_uring_prep_cancel64(s, target_user_data, all ? IORING_ASYNC_CANCEL_ALL : 0);
  });
}

core::result<void> ring::prep_cancel_fd(int fd, std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags,
               [&](io_uring_sqe* s) { io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL); });
}

core::result<void> ring::prep_nop(std::uint64_t user_data, sqe_flags flags) noexcept {
  return queue(user_data, flags, [](io_uring_sqe* s) { io_uring_prep_nop(s); });
}

// ---- Between rings.

core::result<void> ring::prep_msg_ring(int target_ring_fd, std::int32_t value,
                                       std::uint64_t target_user_data, std::uint64_t user_data,
                                       sqe_flags flags) noexcept {
  if (!_features.msg_ring) return core::fail(EOPNOTSUPP);
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    // IORING_MSG_DATA: the target CQE gets res = sqe->len and user_data = sqe->off.
    io_uring_prep_msg_ring(s, target_ring_fd, static_cast<unsigned>(value), target_user_data, 0);
  });
}

// liburing 2.3 has no helper for IORING_MSG_SEND_FD; the fields, per the kernel's
// io_msg_ring_prep(): addr = command, addr3 = our fixed index, file_index = target index + 1
// (or IORING_FILE_INDEX_ALLOC), off = the target CQE's user_data.
core::result<void> ring::prep_msg_ring_fd(int target_ring_fd, std::uint32_t source_fixed_index,
                                          std::uint32_t target_fixed_index,
                                          std::uint64_t target_user_data,
                                          std::uint64_t user_data, sqe_flags flags) noexcept {
  if (!_features.msg_ring_fd) return core::fail(EOPNOTSUPP);
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    std::memset(s, 0, sizeof *s);
    s->opcode = IORING_OP_MSG_RING;
    s->fd = target_ring_fd;
    s->addr = IORING_MSG_SEND_FD;
    s->addr3 = source_fixed_index;
    s->off = target_user_data;
    s->file_index =
        target_fixed_index == fixed_index_alloc ? IORING_FILE_INDEX_ALLOC : target_fixed_index + 1;
  });
}

// IORING_OP_FIXED_FD_INSTALL (6.8), filled by hand: fd = the fixed index (with IOSQE_FIXED_FILE),
// install_fd_flags 0 = close-on-exec.
core::result<void> ring::prep_fixed_fd_install(std::uint32_t fixed_index, std::uint64_t user_data,
                                               sqe_flags flags) noexcept {
  if (!_features.fixed_fd_install) return core::fail(EOPNOTSUPP);
  return queue(user_data, flags, [&](io_uring_sqe* s) {
    std::memset(s, 0, sizeof *s);
    s->opcode = static_cast<std::uint8_t>(compat::op_fixed_fd_install);
    s->fd = static_cast<int>(fixed_index);
    s->flags = IOSQE_FIXED_FILE;
  });
}

// ---- Registrations.

core::result<void> ring::update_fixed_file(std::uint32_t fixed_index, int fd) noexcept {
  RINGMTA_ASSERT(fixed_index < _features.fixed_file_count);
  const int rc = io_uring_register_files_update(_uring.get(), fixed_index, &fd, 1);
  if (rc < 0) return core::fail(-rc);
  return {};
}

}  // namespace ringmta::io
