// Compact per-message tables of the relay (docs/notes.md, "Backlog at scale", issue 15): a
// queued message costs memory in every table that knows it, so these replace node-based hash
// maps (a node of 32-80 bytes plus a bucket per message) with flat storage.
// - `slab<T>`: objects with stable addresses (owners on other shards hold `spooled_message*`),
//   in chunks that never move; a freed slot is reused before a new one is taken
//   (core::chunked_slab, the storage the spool index and the scheduler use too).
// - `id_table<Entry>`: message id → a small entry, open addressing with linear probing and
//   backward-shift deletion (no tombstones). The table keeps a 32-bit hash of the id, not the
//   id: the entry's payload (the home's: a slab index) leads to the full id, and
//   `find` confirms a hash match against it, so a hash collision is never a wrong answer.
//   It grows by half when 7/8 full (so 58-88% full; doubling left a table at 200,000 queued
//   44% full: 2x the bytes per message) and halves below 1/8 full (a drained queue).
//   The probe and the deletion are core/linear_probe.h's, shared with the spool index's
//   table; the tables differ where their entries do: here an entry carries its 32-bit hash
//   and payload (8 bytes) and is rehashed from the old table, the spool's 4-byte slot
//   carries only a position and 5 hash bits, so that table is rebuilt from the entries.
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
  void release(std::uint32_t index) {
    at(index) = T{};
    _objects.release(index);
    if (_objects.live() == 0) _objects.reset(1);
  }
  std::size_t size() const noexcept { return _objects.live(); }
  std::size_t bytes() const noexcept { return _objects.bytes(); }

 private:
  // 1,024 objects per chunk: 40 KiB of 40-byte messages; the last chunk's slack is bounded.
  core::chunked_slab<T, 10> _objects;
};

// The id's hash as the tables keep it; never 0 (0 marks an empty slot). Ids of one shard
// differ mostly in their low bits (sequence, message_id.h): a multiplicative mix spreads them.
inline std::uint32_t id_hash(spool::message_id id) noexcept {
  const std::uint32_t mixed = static_cast<std::uint32_t>((id * 0x9e3779b97f4a7c15ull) >> 32);
  return mixed == 0 ? 1 : mixed;
}

// Entry: a standard-layout struct with a `std::uint32_t hash` member (0: empty) and its payload.
template <class Entry>
class id_table {
 public:
  // The entry of `id`, or nullptr; `is_id(entry)` says whether an entry with id's hash is id's.
  template <class IsId>
  Entry* find(spool::message_id id, IsId is_id) noexcept {
    if (_slots.empty()) return nullptr;
    const std::uint32_t hash = id_hash(id);
    Entry& slot = _slots[core::probe(hash, _slots.size(), [&](std::size_t at) {
      return _slots[at].hash == 0 || (_slots[at].hash == hash && is_id(_slots[at]));
    })];
    return slot.hash != 0 ? &slot : nullptr;
  }
  // Adds `entry` for `id` (the caller knows it is not there yet) and gives it back in place.
  Entry& insert(spool::message_id id, Entry entry) {
    if ((_count + 1) * 8 > _slots.size() * 7)
      resize(std::max<std::size_t>(16, _slots.size() + _slots.size() / 2));
    entry.hash = id_hash(id);
    ++_count;
    return place(entry);
  }
  // Removes the entry `find` gave (it must not be used afterwards).
  void erase(Entry& entry) {
    RINGMTA_ASSERT(_count > 0 && entry.hash != 0);
    const std::size_t hole = core::backward_shift(
        static_cast<std::size_t>(&entry - _slots.data()), _slots.size(),
        [&](std::size_t at) { return _slots[at].hash == 0; },
        [&](std::size_t at) { return core::probe_home(_slots[at].hash, _slots.size()); },
        [&](std::size_t from, std::size_t to) { _slots[to] = _slots[from]; });
    _slots[hole] = Entry{};
    --_count;
    // A drained queue gives its memory back (hysteresis: grow at 7/8, shrink below 1/8).
    if (_slots.size() > 16 && _count * 8 < _slots.size())
      resize(std::max<std::size_t>(16, _slots.size() / 2));
  }
  std::size_t size() const noexcept { return _count; }
  std::size_t capacity() const noexcept { return _slots.size(); }

 private:
  Entry& place(const Entry& entry) noexcept {
    Entry& slot = _slots[core::probe(entry.hash, _slots.size(),
                                     [&](std::size_t at) { return _slots[at].hash == 0; })];
    slot = entry;
    return slot;
  }
  void resize(std::size_t slots) {
    RINGMTA_ASSERT(slots >= 16 && slots <= (std::size_t{1} << 32));
    std::vector<Entry> old(slots);
    old.swap(_slots);
    for (const Entry& entry : old)
      if (entry.hash != 0) place(entry);
  }
  std::vector<Entry> _slots;  // at least 16 long, or empty
  std::size_t _count = 0;
};

}  // namespace ringmta::server
