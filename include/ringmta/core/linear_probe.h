// The probing of an open-addressing table keyed by a 32-bit hash: linear probing from a home
// slot, deletion by backward shift (no tombstones); and `tagged_slots`, the 4-byte slots of
// issue 15's id tables — the spool index (spool/index.h) and the relay home's id_index
// (src/server/relay_tables.h) — whose entries, sizes and growth differ (each header says why).
//
// Invariant the functions keep: every entry lies on the run of occupied slots that starts at
// its home, so a probe that meets an empty slot may stop. A table is at least one slot long
// and never full (the callers grow before that). Never allocates, never blocks.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ringmta/core/assert.h"

namespace ringmta::core {

// The home slot of `hash` in a table of `slots` (Lemire's multiply-shift: any length, no
// division). The high bits of the hash decide, where a multiplicative or mixed hash is best;
// for a power-of-two length it is the hash's top log2(slots) bits.
inline std::size_t probe_home(std::uint32_t hash, std::size_t slots) noexcept {
  return static_cast<std::size_t>((std::uint64_t{hash} * slots) >> 32);
}

inline std::size_t probe_next(std::size_t at, std::size_t slots) noexcept {
  return at + 1 == slots ? 0 : at + 1;
}

// The first slot from `hash`'s home for which `stop(slot)` holds (the caller's stop includes
// the empty slot, which ends every probe).
template <class Stop>
std::size_t probe(std::uint32_t hash, std::size_t slots, Stop&& stop) noexcept {
  std::size_t at = probe_home(hash, slots);
  while (!stop(at)) at = probe_next(at, slots);
  return at;
}

// Backward-shift deletion (Knuth, TAOCP vol. 3, 6.4, algorithm R) of the entry in `hole`:
// every entry after it in the run whose home is not cyclically in (hole, slot] moves back
// into the hole, which moves to where it was, so no probe sequence is cut. `empty(slot)`,
// `home(slot)` (of the entry there) and `move(from, to)` see the caller's table; returns the
// slot left empty at the end, for the caller to clear.
template <class Empty, class Home, class Move>
std::size_t backward_shift(std::size_t hole, std::size_t slots, Empty&& empty, Home&& home,
                           Move&& move) noexcept {
  for (std::size_t at = probe_next(hole, slots); !empty(at); at = probe_next(at, slots)) {
    const std::size_t from = home(at);
    const bool movable = hole <= at ? (from <= hole || from > at) : (from <= hole && from > at);
    if (!movable) continue;
    move(at, hole);
    hole = at;
  }
  return hole;
}

// Slots from `home` to `at` (1: the entry is in its home), cyclically.
inline std::size_t probe_length(std::size_t home, std::size_t at, std::size_t slots) noexcept {
  return (at >= home ? at - home : at + slots - home) + 1;
}

// splitmix64's finalizer (Steele, Lea, Flood 2014): every input bit changes every output bit
// with probability ~1/2, so message ids differing only in their seconds or sequence (their low
// bits, message_id.h) spread evenly.
inline std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The slots of an index whose entries live elsewhere (issue 15: 4 bytes a message, where a
// slot carrying its hash and payload took 8): a slot holds its entry's position + 1 in the low
// 27 bits (0: empty) and 5 bits of the key's 64-bit hash above, so a probe reads an entry only
// when those bits match. The home comes from the hash's high 32 bits. The slot has no room for
// the hash, so its owner recomputes it from the entry's key (`hash_of(position)`) when a
// deletion shifts a slot, and rebuilds the table from its entries when it grows. Users: the
// spool's message_index (spool/index.h) and the relay home's id_index (relay_tables.h).
class tagged_slots {
 public:
  static constexpr unsigned position_bits = 27;
  static constexpr std::uint32_t position_mask = (std::uint32_t{1} << position_bits) - 1;
  static constexpr std::uint32_t position_limit = position_mask - 1;  // positions below it

  std::size_t size() const noexcept { return _slots == nullptr ? 0 : _size; }  // slots
  std::size_t bytes() const noexcept { return size() * sizeof(std::uint32_t); }
  bool occupied(std::size_t slot) const noexcept { return _slots[slot] != 0; }
  std::uint32_t position_at(std::size_t slot) const noexcept {
    return (_slots[slot] & position_mask) - 1;
  }
  std::size_t home(std::uint64_t hash) const noexcept {
    return probe_home(probe_hash(hash), _size);
  }

  // The slot of the entry with `hash` for which `is(position)` holds, or size().
  template <class Is>
  std::size_t find(std::uint64_t hash, Is&& is) const noexcept {
    if (_slots == nullptr) return 0;
    const std::uint32_t want = tag(hash);
    const std::size_t slot = probe(probe_hash(hash), _size, [&](std::size_t at) {
      const std::uint32_t value = _slots[at];
      return value == 0 || ((value & ~position_mask) == want && is(position_at(at)));
    });
    return _slots[slot] == 0 ? _size : slot;
  }
  // The slot of the entry at `position` whose key has `hash` (it is there): compares slots
  // only.
  std::size_t find_position(std::uint64_t hash, std::uint32_t position) const noexcept {
    const std::size_t slot = probe(probe_hash(hash), _size, [&](std::size_t at) {
      return _slots[at] == 0 || (_slots[at] & position_mask) == position + 1;
    });
    RINGMTA_ASSERT(_slots[slot] != 0);
    return slot;
  }
  // Places the entry at `position` (the table has room). `differs(position)` is asserted of
  // every entry with the same tag on the way: keys are unique.
  template <class Differs>
  void place(std::uint64_t hash, std::uint32_t position, Differs&& differs) noexcept {
    RINGMTA_ASSERT(position < position_limit);
    const std::uint32_t want = tag(hash);
    const std::size_t slot = probe(probe_hash(hash), _size, [&](std::size_t at) {
      const std::uint32_t value = _slots[at];
      RINGMTA_ASSERT(value == 0 || (value & ~position_mask) != want || differs(position_at(at)));
      return value == 0;
    });
    _slots[slot] = want | (position + 1);
  }
  void place(std::uint64_t hash, std::uint32_t position) noexcept {
    place(hash, position, [](std::uint32_t) { return true; });
  }
  void move_position(std::size_t slot, std::uint32_t position) noexcept {
    _slots[slot] = (_slots[slot] & ~position_mask) | (position + 1);
  }
  // Empties `slot` by backward shift; `hash_of(position)` gives a shifted entry's key hash.
  template <class HashOf>
  void remove(std::size_t hole, HashOf&& hash_of) noexcept {
    const std::size_t last = backward_shift(
        hole, _size, [&](std::size_t at) { return _slots[at] == 0; },
        [&](std::size_t at) { return home(hash_of(position_at(at))); },
        [&](std::size_t from, std::size_t to) { _slots[to] = _slots[from]; });
    _slots[last] = 0;
  }
  // `table` (`slots` long, zeroed) replaces the slots; the owner places every entry anew.
  void adopt(std::unique_ptr<std::uint32_t[]> table, std::size_t slots) noexcept {
    _slots = std::move(table);
    _size = slots;
  }
  // Frees the slots first, then takes `slots` empty ones: the only transient is the new table.
  void renew(std::size_t slots) {
    _slots.reset();
    adopt(std::make_unique<std::uint32_t[]>(slots), slots);  // zeroed: every slot empty
  }
  void clear() noexcept { adopt(nullptr, 0); }
  // The longest probe sequence of any entry (slots examined to find it): for tests.
  template <class HashOf>
  std::size_t probe_length_max(HashOf&& hash_of) const noexcept {
    std::size_t longest = 0;
    for (std::size_t slot = 0; slot < size(); ++slot) {
      if (_slots[slot] == 0) continue;
      const std::size_t from = home(hash_of(position_at(slot)));
      longest = std::max(longest, probe_length(from, slot, _size));
    }
    return longest;
  }

 private:
  static std::uint32_t probe_hash(std::uint64_t hash) noexcept {
    return static_cast<std::uint32_t>(hash >> 32);
  }
  static std::uint32_t tag(std::uint64_t hash) noexcept {
    return static_cast<std::uint32_t>(hash) & ~position_mask;
  }
  std::unique_ptr<std::uint32_t[]> _slots;
  std::size_t _size = 0;
};

}  // namespace ringmta::core
