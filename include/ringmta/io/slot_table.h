// slot_table<T>: a fixed-capacity table of T with generation-checked handles, for modules that
// own in-flight ring operations (connections, spool writes, DNS queries).
//
// acquire() hands out a free slot and its current generation; pack both into the op's user_data
// (io::pack_user_data). When the completion arrives, get(slot, generation) returns the object,
// or nullptr when the slot was released (and maybe reused) since: a stale completion. release()
// bumps the slot's generation so every op still in flight for the old owner becomes stale.
//
// Invariants: capacity is fixed at construction (the one allocation; start-up only); a live slot
// is never handed out twice; generations wrap at 2^24 (a completion would have to be 16 million
// reuses late to alias).
// Never: allocates after construction, throws, or is shared between threads.
//
// Releasing a slot while one of its ops is still in flight is allowed, but the owner must still
// honour the stale completion's side effects: a stale CQE that carries a provided buffer
// (completion::has_buffer()) must still recycle that buffer, and a stale accept must close the fd.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "ringmta/core/assert.h"
#include "ringmta/io/user_data.h"

namespace ringmta::io {

template <typename T>
class slot_table {
 public:
  struct handle {
    std::uint32_t slot;
    std::uint32_t generation;
  };

  explicit slot_table(std::uint32_t capacity)
      : _entries(std::make_unique<entry[]>(capacity)), _capacity(capacity) {
    RINGMTA_ASSERT(capacity > 0);
    for (std::uint32_t i = 0; i < capacity; ++i) _entries[i].next_free = i + 1;
  }

  // nullopt when every slot is live: the caller applies its limit (e.g. refuses a connection).
  std::optional<handle> acquire() noexcept {
    if (_free_head == _capacity) return std::nullopt;
    const std::uint32_t slot = _free_head;
    entry& e = _entries[slot];
    _free_head = e.next_free;
    e.live = true;
    e.value = T{};
    ++_live_count;
    return handle{slot, e.generation};
  }

  void release(std::uint32_t slot) noexcept {
    RINGMTA_ASSERT(slot < _capacity && _entries[slot].live);
    entry& e = _entries[slot];
    e.live = false;
    e.generation = (e.generation + 1) & generation_mask;
    e.next_free = _free_head;
    _free_head = slot;
    --_live_count;
  }

  // The live object for (slot, generation), or nullptr when the handle is stale or out of range
  // (a corrupted user_data must not index out of bounds).
  T* get(std::uint32_t slot, std::uint32_t generation) noexcept {
    if (slot >= _capacity) return nullptr;
    entry& e = _entries[slot];
    if (!e.live || e.generation != (generation & generation_mask)) return nullptr;
    return &e.value;
  }
  T* get(const op_tag& tag) noexcept { return get(tag.slot, tag.generation); }

  std::uint64_t user_data(op_kind kind, const handle& h) const noexcept {
    return pack_user_data(kind, h.generation, h.slot);
  }
  std::uint32_t generation(std::uint32_t slot) const noexcept {
    RINGMTA_ASSERT(slot < _capacity);
    return _entries[slot].generation;
  }

  std::uint32_t capacity() const noexcept { return _capacity; }
  std::uint32_t live_count() const noexcept { return _live_count; }

 private:
  struct entry {
    T value{};
    std::uint32_t generation = 0;
    std::uint32_t next_free = 0;
    bool live = false;
  };

  std::unique_ptr<entry[]> _entries;
  std::uint32_t _capacity;
  std::uint32_t _free_head = 0;
  std::uint32_t _live_count = 0;
};

}  // namespace ringmta::io
