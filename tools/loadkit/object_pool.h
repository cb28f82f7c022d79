// loadkit::object_pool<T>: per-shard connection objects with stable addresses and
// generation-checked handles (io/user_data.h packing), created on first use and then reused.
//
// Unlike io::slot_table (which value-resets an inline T), objects here are heap-allocated once
// per slot and never moved, so T may hold non-movable members (an smtp::server_session, an
// intrusive timer node) and the kernel may point into them. A connection that ends returns its
// slot; the next connection reuses the object, so steady state allocates nothing.
// Invariants: at most `capacity` slots; a released slot's generation changes, so a completion
// still in flight for the old owner is recognised as stale (get() returns nullptr).
// Never: frees an object before destruction of the pool, or is shared between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ringmta/io/user_data.h"

namespace ringmta::loadkit {

template <typename T>
class object_pool {
 public:
  explicit object_pool(std::uint32_t capacity) : _capacity(capacity) {
    _entries.reserve(capacity);
  }

  struct handle {
    std::uint32_t slot = 0;
    std::uint32_t generation = 0;
    T* object = nullptr;
  };

  // A free object (default-constructed the first time, reused afterwards), or object == nullptr
  // when all `capacity` are live.
  handle acquire() {
    std::uint32_t slot;
    if (!_free.empty()) {
      slot = _free.back();
      _free.pop_back();
    } else if (_entries.size() < _capacity) {
      slot = static_cast<std::uint32_t>(_entries.size());
      _entries.push_back(entry{std::make_unique<T>(), 0, false});
      _free.reserve(_entries.size());
    } else {
      return {};
    }
    entry& e = _entries[slot];
    e.live = true;
    ++_live;
    return {slot, e.generation, e.object.get()};
  }

  void release(std::uint32_t slot) noexcept {
    entry& e = _entries[slot];
    e.live = false;
    e.generation = (e.generation + 1) & io::generation_mask;
    _free.push_back(slot);  // capacity reserved when the slot was created: no allocation
    --_live;
  }

  T* get(std::uint32_t slot, std::uint32_t generation) noexcept {
    if (slot >= _entries.size()) return nullptr;
    entry& e = _entries[slot];
    if (!e.live || e.generation != (generation & io::generation_mask)) return nullptr;
    return e.object.get();
  }
  T* get(const io::op_tag& tag) noexcept { return get(tag.slot, tag.generation); }

  // Calls fn(T&, slot, generation) for every live object.
  template <typename Fn>
  void for_each_live(Fn&& fn) {
    for (std::uint32_t i = 0; i < _entries.size(); ++i) {
      if (_entries[i].live) fn(*_entries[i].object, i, _entries[i].generation);
    }
  }

  std::uint32_t live_count() const noexcept { return _live; }
  std::uint32_t capacity() const noexcept { return _capacity; }

 private:
  struct entry {
    std::unique_ptr<T> object;
    std::uint32_t generation = 0;
    bool live = false;
  };
  std::vector<entry> _entries;
  std::vector<std::uint32_t> _free;
  std::uint32_t _capacity;
  std::uint32_t _live = 0;
};

}  // namespace ringmta::loadkit
