// io::buffer_ring: a provided buffer ring (IORING_REGISTER_PBUF_RING) of N buffers of S bytes,
// registered as one buffer group on one io::ring.
//
// Receives name the group instead of a buffer (ring::prep_recv_multishot); the kernel picks a
// buffer only when data arrives, so an idle connection holds no receive memory (DESIGN
// principle 3). Each CQE with cqe_flag_buffer carries the buffer id.
//
// Ownership: once a completion hands a buffer to us, it stays ours until recycle(): a consumer
// may keep it past the completion (e.g. while an SMTP verdict or an fdatasync is pending, with
// the bytes still in place) and recycle it later; hold() adds a reference when several owners
// share one buffer. Recycles are batched: they become visible to the kernel at flush() (the
// reactor calls it once per loop iteration) or sooner when the kernel's supply runs low.
// Holding many buffers starves the group: receives then end with -ENOBUFS (note_enobufs(), then
// re-arm after recycling), which is the back-pressure signal, not an error to log per event.
//
// Incremental mode (IOU_PBUF_RING_INC, kernel 6.12+): a buffer serves several completions, each
// continuing where the last stopped (cqe_flag_buffer_more while the kernel keeps using it);
// consume() returns the right slice and the buffer goes back once the kernel is done with it and
// every slice was recycled.
//
// Invariants: buffer ids are 0..count-1; count is a power of two <= 32768; a buffer is either in
// the kernel's ring or owned by us, never both. Destroy before the io::ring it is registered on.
// Never: allocates after init(), hands the kernel a buffer still referenced, or is used from
// another thread than its ring's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "ringmta/core/result.h"
#include "ringmta/io/user_data.h"

struct io_uring_buf_ring;

namespace ringmta::io {

class ring;

struct buffer_ring_options {
  std::uint16_t group_id = 0;        // 0..0xfffe (0xffff is the feature probe's)
  std::uint32_t buffer_count = 256;  // power of two, <= 32768
  std::uint32_t buffer_bytes = 4096;
  bool incremental = false;          // needs ring_features::buffer_ring_incremental
  std::uint32_t recycle_batch = 32;  // recycles published together
};

class buffer_ring {
 public:
  buffer_ring() noexcept;
  ~buffer_ring();
  buffer_ring(const buffer_ring&) = delete;
  buffer_ring& operator=(const buffer_ring&) = delete;

  core::result<void> init(ring& owner, const buffer_ring_options& options) noexcept;
  // For a simulated host (tests/sim, issue 16): the same memory and ring entries, registered
  // with no kernel; the simulator plays the kernel's side with take_as_kernel(). Not
  // incremental (EINVAL).
  core::result<void> init_unregistered(const buffer_ring_options& options) noexcept;
  // The kernel's side of an unregistered ring: the next buffer published to it (flush()), in
  // ring order, as the kernel picks one for a receive; nullopt when none is (the kernel's
  // -ENOBUFS). The caller writes at most buffer_bytes() into it and completes with its id.
  struct kernel_pick {
    std::uint16_t buffer_id = 0;
    std::span<std::byte> memory;
  };
  std::optional<kernel_pick> take_as_kernel() noexcept;

  std::uint16_t group_id() const noexcept { return _options.group_id; }
  std::uint32_t buffer_count() const noexcept { return _options.buffer_count; }
  std::uint32_t buffer_bytes() const noexcept { return _options.buffer_bytes; }
  bool incremental() const noexcept { return _options.incremental; }

  // Takes ownership of the buffer named by a completion (cqe_flag_buffer must be set) and returns
  // the received bytes (empty for res <= 0). Call exactly once per such completion, stale ones
  // included, then recycle(buffer_id) when done with the bytes.
  std::span<std::byte> consume(const completion& done) noexcept;
  // The first `length` bytes of a buffer we own (non-incremental mode).
  std::span<std::byte> view(std::uint16_t buffer_id, std::uint32_t length) noexcept;
  // One more owner for a buffer we hold; each hold() needs its own recycle().
  void hold(std::uint16_t buffer_id) noexcept;
  // Drops one reference; at zero (and once the kernel is done with it) the buffer goes back.
  void recycle(std::uint16_t buffer_id) noexcept;
  // Makes every recycled buffer visible to the kernel.
  void flush() noexcept;
  // A receive on this group ended with -ENOBUFS.
  void note_enobufs() noexcept { ++_enobufs_seen; }

  // Buffers out of the kernel's reach (held, or recycled but not yet flushed).
  std::uint32_t buffers_out() const noexcept { return _out_count; }
  // Buffers with at least one reference.
  std::uint32_t buffers_held() const noexcept { return _held_count; }
  std::uint64_t enobufs_seen() const noexcept { return _enobufs_seen; }
  std::uint64_t recycled_total() const noexcept { return _recycled_total; }

 private:
  struct buffer_state {
    std::uint32_t offset = 0;      // incremental: where the next completion's data starts
    std::uint16_t references = 0;  // owners that have not recycled yet
    bool kernel_done = false;      // the kernel will not write into it again until re-added
  };

  void give_back(std::uint16_t buffer_id) noexcept;
  void release_memory() noexcept;
  core::result<void> allocate(const buffer_ring_options& options) noexcept;
  void publish_every_buffer() noexcept;

  ring* _owner = nullptr;
  buffer_ring_options _options;
  io_uring_buf_ring* _ring = nullptr;  // mmap'd: buffer_count entries of 16 bytes
  std::size_t _ring_bytes = 0;
  std::byte* _buffers = nullptr;  // mmap'd: buffer_count * buffer_bytes
  std::size_t _buffers_bytes = 0;
  std::unique_ptr<buffer_state[]> _states;
  std::uint16_t _tail = 0;  // the tail last published to the kernel
  std::uint16_t _simulated_head = 0;  // unregistered: the kernel's head, as take_as_kernel saw
  std::uint32_t _unpublished = 0;
  std::uint32_t _out_count = 0;
  std::uint32_t _held_count = 0;
  std::uint64_t _enobufs_seen = 0;
  std::uint64_t _recycled_total = 0;
  bool _registered = false;
};

}  // namespace ringmta::io
