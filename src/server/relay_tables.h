// Compact per-message tables of the relay (docs/notes.md, "Backlog at scale", issue 15): a
// queued message costs memory in every table that knows it, so these replace node-based hash
// maps (a node of 32-80 bytes plus a bucket per message) with flat storage.
// - `slab<T>`: objects with stable addresses (owners on other shards hold `spooled_message*`),
//   in chunks that never move; a freed slot is reused before a new one is taken.
// - `id_table<Entry>`: message id → a small entry, open addressing with linear probing and
//   backward-shift deletion (no tombstones). The table keeps a 32-bit hash of the id, not the
//   id: the entry's payload (a slab index, a message pointer) leads to the full id, and
//   `find` confirms a hash match against it, so a hash collision is never a wrong answer.
//   It grows by half when 7/8 full (so 58-88% full; doubling left a table at 200,000 queued
//   44% full: 2x the bytes per message) and halves below 1/8 full (a drained queue).
// Never: blocks, or allocates except when a table grows or shrinks (amortised).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ringmta/core/assert.h"
#include "ringmta/spool/message_id.h"

namespace ringmta::server {

template <class T>
class slab {
 public:
  // A slot for a default-constructed T; its address is stable until release().
  std::uint32_t allocate() {
    if (!_free.empty()) {
      const std::uint32_t index = _free.back();
      _free.pop_back();
      return index;
    }
    if (_used == _chunks.size() * chunk_objects) _chunks.emplace_back(new T[chunk_objects]);
    return _used++;
  }
  T& at(std::uint32_t index) noexcept {
    RINGMTA_ASSERT(index < _used);
    return _chunks[index / chunk_objects][index % chunk_objects];
  }
  // The slot's object is reset to a default T (releasing what it owned) and reused later.
  void release(std::uint32_t index) {
    at(index) = T{};
    _free.push_back(index);
    if (_free.size() == _used) clear();  // all free (a drained queue): give chunks back
  }
  std::size_t size() const noexcept { return _used - _free.size(); }

 private:
  // 1,024 objects per chunk: 48 KiB of 48-byte messages; the last chunk's slack is bounded.
  static constexpr std::uint32_t chunk_objects = 1024;
  // Keeps the first chunk: a quiet server's queue goes 0 → 1 → 0 with every message, which
  // must not cost a 48 KiB allocation each time.
  void clear() noexcept {
    _chunks.resize(std::min<std::size_t>(_chunks.size(), 1));
    _chunks.shrink_to_fit();
    _free.clear();
    _free.shrink_to_fit();
    _used = 0;
  }
  std::vector<std::unique_ptr<T[]>> _chunks;
  std::vector<std::uint32_t> _free;  // released slots, reused last first
  std::uint32_t _used = 0;           // slots handed out so far (live or free)
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
    for (std::size_t at = home_of(hash);; at = next(at)) {
      Entry& slot = _slots[at];
      if (slot.hash == 0) return nullptr;
      if (slot.hash == hash && is_id(slot)) return &slot;
    }
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
    std::size_t hole = static_cast<std::size_t>(&entry - _slots.data());
    // Backward shift: entries after the hole that may live there move into it, so a probe
    // never stops early at a hole (Knuth 6.4, algorithm R).
    for (std::size_t at = next(hole); _slots[at].hash != 0; at = next(at)) {
      const std::size_t home = home_of(_slots[at].hash);
      const bool movable = hole <= at ? (home <= hole || home > at) : (home <= hole && home > at);
      if (!movable) continue;
      _slots[hole] = _slots[at];
      hole = at;
    }
    _slots[hole] = Entry{};
    --_count;
    // A drained queue gives its memory back (hysteresis: grow at 7/8, shrink below 1/8).
    if (_slots.size() > 16 && _count * 8 < _slots.size())
      resize(std::max<std::size_t>(16, _slots.size() / 2));
  }
  std::size_t size() const noexcept { return _count; }
  std::size_t capacity() const noexcept { return _slots.size(); }

 private:
  std::size_t next(std::size_t at) const noexcept { return at + 1 == _slots.size() ? 0 : at + 1; }
  // The hash scaled to the table (Lemire's multiply-shift: any length, no division), so the
  // high bits decide, where a multiplicative hash is best: consecutive ids spread evenly.
  std::size_t home_of(std::uint32_t hash) const noexcept {
    return static_cast<std::size_t>((std::uint64_t{hash} * _slots.size()) >> 32);
  }
  Entry& place(const Entry& entry) noexcept {
    std::size_t at = home_of(entry.hash);
    while (_slots[at].hash != 0) at = next(at);
    _slots[at] = entry;
    return _slots[at];
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
