#include "ringmta/io/buffer_ring.h"

#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <new>

#include "io/uring_compat.h"
#include "ringmta/core/assert.h"
#include "ringmta/io/ring.h"

namespace ringmta::io {

namespace {

std::size_t round_up_to_page(std::size_t bytes) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

void* map_anonymous(std::size_t bytes) {
  void* memory =
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  return memory == MAP_FAILED ? nullptr : memory;
}

}  // namespace

buffer_ring::buffer_ring() noexcept = default;

buffer_ring::~buffer_ring() { release_memory(); }

void buffer_ring::release_memory() noexcept {
  if (_registered) {
    // The kernel stops using the ring memory once unregistered; only then may we unmap it.
    io_uring_unregister_buf_ring(_owner->native(), _options.group_id);
    _registered = false;
  }
  if (_ring != nullptr) munmap(_ring, _ring_bytes);
  if (_buffers != nullptr) munmap(_buffers, _buffers_bytes);
  _ring = nullptr;
  _buffers = nullptr;
}

// liburing 2.3 has io_uring_register_buf_ring but not io_uring_setup_buf_ring: we map the ring
// (page aligned, as the kernel requires), fill it with every buffer, and register it.
core::result<void> buffer_ring::allocate(const buffer_ring_options& options) noexcept {
  RINGMTA_ASSERT(_owner == nullptr && _ring == nullptr);
  if (options.buffer_count == 0 || options.buffer_count > 32768 ||
      !std::has_single_bit(options.buffer_count) || options.buffer_bytes == 0 ||
      options.group_id == 0xffff || options.recycle_batch == 0) {
    return core::fail(EINVAL);
  }
  _options = options;
  _ring_bytes = round_up_to_page(sizeof(io_uring_buf) * options.buffer_count);
  _buffers_bytes = round_up_to_page(std::size_t{options.buffer_count} * options.buffer_bytes);
  _ring = static_cast<io_uring_buf_ring*>(map_anonymous(_ring_bytes));
  _buffers = static_cast<std::byte*>(map_anonymous(_buffers_bytes));
  _states.reset(new (std::nothrow) buffer_state[options.buffer_count]);
  if (_ring == nullptr || _buffers == nullptr || !_states) {
    release_memory();
    return core::fail(ENOMEM);
  }
  io_uring_buf_ring_init(_ring);
  return {};
}

void buffer_ring::publish_every_buffer() noexcept {
  const int mask = io_uring_buf_ring_mask(_options.buffer_count);
  for (std::uint32_t id = 0; id < _options.buffer_count; ++id) {
    io_uring_buf_ring_add(_ring, _buffers + std::size_t{id} * _options.buffer_bytes,
                          _options.buffer_bytes, static_cast<unsigned short>(id), mask,
                          static_cast<int>(id));
  }
  io_uring_buf_ring_advance(_ring, static_cast<int>(_options.buffer_count));
  _tail = static_cast<std::uint16_t>(_options.buffer_count);
}

core::result<void> buffer_ring::init(ring& owner, const buffer_ring_options& options) noexcept {
  if (!owner.features().buffer_ring) return core::fail(EOPNOTSUPP);
  if (options.incremental && !owner.features().buffer_ring_incremental) {
    return core::fail(EOPNOTSUPP);
  }
  if (auto allocated = allocate(options); !allocated) return allocated;
  _owner = &owner;
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uintptr_t>(_ring);
  reg.ring_entries = options.buffer_count;
  reg.bgid = options.group_id;
  reg.pad = options.incremental ? compat::pbuf_ring_incremental : 0;  // `flags` in newer UAPI
  if (const int rc = io_uring_register_buf_ring(owner.native(), &reg, 0); rc != 0) {
    release_memory();
    return core::fail(-rc);
  }
  _registered = true;
  publish_every_buffer();
  return {};
}

core::result<void> buffer_ring::init_unregistered(const buffer_ring_options& options) noexcept {
  if (options.incremental) return core::fail(EINVAL);
  if (auto allocated = allocate(options); !allocated) return allocated;
  publish_every_buffer();
  return {};
}

// What the kernel does for a receive on the group (io_uring/kbuf.c): the entry at head, if
// head has not reached the published tail, then head + 1.
std::optional<buffer_ring::kernel_pick> buffer_ring::take_as_kernel() noexcept {
  RINGMTA_ASSERT(_ring != nullptr && !_registered);
  if (_simulated_head == _tail) return std::nullopt;
  const int mask = io_uring_buf_ring_mask(_options.buffer_count);
  const io_uring_buf& entry = _ring->bufs[_simulated_head & mask];
  ++_simulated_head;
  kernel_pick pick;
  pick.buffer_id = entry.bid;
  pick.memory = {reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(entry.addr)),
                 entry.len};
  return pick;
}

std::span<std::byte> buffer_ring::consume(const completion& done) noexcept {
  RINGMTA_ASSERT(done.has_buffer());
  const std::uint16_t id = done.buffer_id();
  RINGMTA_ASSERT(id < _options.buffer_count);
  buffer_state& state = _states[id];
  const std::uint32_t length = done.res > 0 ? static_cast<std::uint32_t>(done.res) : 0;
  std::byte* start = _buffers + std::size_t{id} * _options.buffer_bytes;
  if (state.references++ == 0) ++_held_count;
  if (!_options.incremental) {
    RINGMTA_ASSERT(!state.kernel_done && length <= _options.buffer_bytes);
    state.kernel_done = true;
    ++_out_count;
    return {start, length};
  }
  // Incremental: this completion's bytes start where the previous one on this buffer stopped.
  // A completion without data consumed nothing, so the kernel still owns the buffer.
  RINGMTA_ASSERT(!state.kernel_done && state.offset + length <= _options.buffer_bytes);
  std::span<std::byte> bytes{start + state.offset, length};
  state.offset += length;
  if (length > 0 && !done.buffer_more()) {
    state.kernel_done = true;
    ++_out_count;
  }
  return bytes;
}

std::span<std::byte> buffer_ring::view(std::uint16_t buffer_id, std::uint32_t length) noexcept {
  RINGMTA_ASSERT(buffer_id < _options.buffer_count && length <= _options.buffer_bytes);
  RINGMTA_ASSERT(_states[buffer_id].references > 0);
  return {_buffers + std::size_t{buffer_id} * _options.buffer_bytes, length};
}

void buffer_ring::hold(std::uint16_t buffer_id) noexcept {
  RINGMTA_ASSERT(buffer_id < _options.buffer_count && _states[buffer_id].references > 0);
  ++_states[buffer_id].references;
}

void buffer_ring::recycle(std::uint16_t buffer_id) noexcept {
  RINGMTA_ASSERT(buffer_id < _options.buffer_count);
  buffer_state& state = _states[buffer_id];
  RINGMTA_ASSERT(state.references > 0);
  if (--state.references > 0) return;
  --_held_count;
  if (state.kernel_done) give_back(buffer_id);
}

void buffer_ring::give_back(std::uint16_t buffer_id) noexcept {
  _states[buffer_id] = buffer_state{};
  const int mask = io_uring_buf_ring_mask(_options.buffer_count);
  // Writing at tail + unpublished cannot overwrite an entry the kernel has yet to take: the
  // ring has buffer_count entries and at most buffer_count buffers exist.
  io_uring_buf_ring_add(_ring, _buffers + std::size_t{buffer_id} * _options.buffer_bytes,
                        _options.buffer_bytes, buffer_id, mask, static_cast<int>(_unpublished));
  ++_unpublished;
  const std::uint32_t kernel_supply = _options.buffer_count - _out_count;
  if (_unpublished >= _options.recycle_batch || kernel_supply < _options.recycle_batch) flush();
}

void buffer_ring::flush() noexcept {
  if (_unpublished == 0) return;
  _tail = static_cast<std::uint16_t>(_tail + _unpublished);
  io_uring_smp_store_release(&_ring->tail, _tail);  // the entries above are visible before it
  _out_count -= _unpublished;
  _recycled_total += _unpublished;
  _unpublished = 0;
}

}  // namespace ringmta::io
