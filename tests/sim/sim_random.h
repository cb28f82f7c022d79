// sim::random: the simulator's only source of randomness. The generator is loadkit's
// (xoshiro256**, seeded through splitmix64); this class fixes how each kind of decision draws
// from it, so that a seed means the same run wherever it is replayed (std::<random>
// distributions may differ between library versions). Every draw consumes exactly one value,
// even chance(0), so adding a zero-probability fault never shifts a seed's later decisions.
// Never: read a clock or any other outside entropy.
#pragma once

#include <cstdint>

#include "loadkit/random.h"

namespace ringmta::sim {

class random {
 public:
  explicit random(std::uint64_t seed) noexcept : _generator(seed) {}

  std::uint64_t next() noexcept { return _generator.next(); }
  // Uniform in [low, high] (inclusive); the modulo bias is irrelevant at these ranges.
  std::uint64_t between(std::uint64_t low, std::uint64_t high) noexcept {
    return low + next() % (high - low + 1);
  }
  std::uint64_t below(std::uint64_t bound) noexcept { return bound == 0 ? 0 : next() % bound; }
  // True with probability `p` (0..1).
  bool chance(double p) noexcept {
    return static_cast<double>(next() >> 11) * 0x1.0p-53 < p;
  }

 private:
  loadkit::random _generator;
};

}  // namespace ringmta::sim
