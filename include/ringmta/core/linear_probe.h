// The probing of an open-addressing table keyed by a 32-bit hash: linear probing from a home
// slot, deletion by backward shift (no tombstones). Shared by the id tables of issue 15 — the
// spool index's slots (spool/index.h) and the relay's id_table (src/server/relay_tables.h) —
// whose slots, sizes and growth differ (each header says why); only the walk is here.
//
// Invariant the functions keep: every entry lies on the run of occupied slots that starts at
// its home, so a probe that meets an empty slot may stop. A table is at least one slot long
// and never full (the callers grow before that). Never allocates, never blocks.
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace ringmta::core
