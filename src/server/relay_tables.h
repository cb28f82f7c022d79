// Compact per-message tables of the relay (docs/notes.md, "Backlog at scale", issue 15): a
// queued message costs memory in every table that knows it, so these replace node-based hash
// maps (a node of 32-80 bytes plus a bucket per message) with flat storage.
// - `slab<T>`: objects with stable addresses (owners on other shards hold `spooled_message*`),
//   in chunks that never move; a freed slot is reused before a new one is taken
//   (core::chunked_slab, the storage the spool index and the scheduler use too).
// - `id_index<T>`: message id → the index of its object in a slab<T>, 4 bytes a message
//   (core::tagged_slots, the spool index's slots; issue 15: its 8-byte entries carrying a
//   32-bit hash were 13.6 B a message at 1 M queued). A slot keeps 5 bits of the id's hash
//   and the slab index; `find` confirms a tag match against the object's id, so a collision is
//   never a wrong answer, and a deletion's backward shift reads the shifted objects' ids for
//   their homes. It grows by half when 3/4 full (so 50-75% full: 5.3-8 B a message; the
//   looser bound keeps probe runs, hence the ids read per deletion, short) and halves below
//   1/8 full (a drained queue). A resize frees the slots, then rebuilds them in one walk over
//   the slab (sequential: the objects' ids), so no old and new table stand side by side.
// Never: blocks, or allocates except when a table grows or shrinks (amortised).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ringmta/core/assert.h"
#include "ringmta/core/chunked_slab.h"
#include "ringmta/core/linear_probe.h"
#include "ringmta/spool/message_id.h"

namespace ringmta::server {

// The relay's use of the core slab: at() checks the slot, release() resets the object (what it
// owned is freed now, not when the slot is reused), and a drained slab gives its chunks back
// but the first: a quiet server's queue goes 0 -> 1 -> 0 with every message, which must not
// cost a 48 KiB allocation each time.
template <class T>
class slab {
 public:
  // A slot for a default-constructed T; its address is stable until release().
  std::uint32_t allocate() { return _objects.allocate(); }
  T& at(std::uint32_t index) noexcept {
    RINGMTA_ASSERT(index < _objects.used());
    return _objects[index];
  }
  const T& at(std::uint32_t index) const noexcept {
    RINGMTA_ASSERT(index < _objects.used());
    return _objects[index];
  }
  std::uint32_t used() const noexcept { return _objects.used(); }  // slots ever handed out
  void release(std::uint32_t index) {
    at(index) = T{};
    _objects.release(index);
    if (_objects.live() == 0) _objects.reset(1);
  }
  std::size_t size() const noexcept { return _objects.live(); }
  std::size_t bytes() const noexcept { return _objects.bytes(); }

 private:
  // 1,024 objects per chunk: 32 KiB of 32-byte messages; the last chunk's slack is bounded.
  core::chunked_slab<T, 10> _objects;
};

// Ids of one shard differ mostly in their low bits (sequence, message_id.h): mixed.
inline std::uint64_t id_hash(spool::message_id id) noexcept { return core::mix64(id); }

// T: has `spool::message_id id`, 0 while its slab slot is free (slab::release resets it).
template <class T>
class id_index {
 public:
  static constexpr std::uint32_t none = 0xffffffffu;

  explicit id_index(const slab<T>& objects) noexcept : _objects(objects) {}

  // The slab index of id's object, or none.
  std::uint32_t find(spool::message_id id) const noexcept {
    const std::size_t slot = slot_of(id);
    return slot < _slots.size() ? _slots.position_at(slot) : none;
  }
  // Adds the object at `index`, whose id is set (and not in the table yet: asserted).
  void insert(std::uint32_t index) {
    ++_count;
    if (_count * 4 > _slots.size() * 3) return rebuild(std::max<std::size_t>(
                                            slots_min, _slots.size() + _slots.size() / 2));
    const spool::message_id id = _objects.at(index).id;
    _slots.place(id_hash(id), index,
                 [&](std::uint32_t other) { return _objects.at(other).id != id; });
  }
  // Removes id's entry (it is there) and gives its slab index, before its object is released
  // (the probe reads the object's id; a shrinking rebuild here walks the slab and leaves the
  // object out).
  std::uint32_t erase(spool::message_id id) noexcept {
    const std::size_t slot = slot_of(id);
    RINGMTA_ASSERT(slot < _slots.size() && _count > 0);
    const std::uint32_t index = _slots.position_at(slot);
    _slots.remove(slot, [&](std::uint32_t at) { return id_hash(_objects.at(at).id); });
    --_count;
    if (_count == 0) _slots.clear();  // a quiet server's queue goes 0 -> 1 -> 0 often
    else if (_slots.size() > slots_min && _count * 8 < _slots.size())
      rebuild(std::max<std::size_t>(slots_min, _slots.size() / 2), index);
    return index;
  }
  std::size_t size() const noexcept { return _count; }
  std::size_t capacity() const noexcept { return _slots.size(); }
  std::size_t bytes() const noexcept { return _slots.bytes(); }
  std::size_t probe_length_max() const noexcept {
    return _slots.probe_length_max([&](std::uint32_t at) { return id_hash(_objects.at(at).id); });
  }

 private:
  static constexpr std::size_t slots_min = 16;

  std::size_t slot_of(spool::message_id id) const noexcept {
    return _slots.find(id_hash(id),
                       [&](std::uint32_t index) { return _objects.at(index).id == id; });
  }
  // Every live object of the slab but `skip` (one being erased) goes into `slots` new slots.
  void rebuild(std::size_t slots, std::uint32_t skip = none) {
    _slots.renew(slots);
    std::size_t placed = 0;
    for (std::uint32_t index = 0; index < _objects.used(); ++index) {
      const spool::message_id id = _objects.at(index).id;
      if (id == 0 || index == skip) continue;
      _slots.place(id_hash(id), index);
      ++placed;
    }
    RINGMTA_ASSERT(placed == _count);
  }

  const slab<T>& _objects;
  core::tagged_slots _slots;
  std::size_t _count = 0;
};

}  // namespace ringmta::server
