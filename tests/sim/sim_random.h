// sim::random: the simulator's only source of randomness (xoshiro256**, seeded by splitmix64).
//
// Every decision of a simulated run (latencies, faults, split points, crash moments) comes from
// one instance seeded by the run's seed, so a seed replays a run exactly. Our own generator and
// distributions rather than <random>: std::uniform_int_distribution may differ between library
// versions, and a seed must mean the same run wherever it is replayed.
// Never: read a clock or any other outside entropy.
#pragma once

#include <cstdint>

namespace ringmta::sim {

class random {
 public:
  explicit random(std::uint64_t seed) noexcept {
    for (auto& word : _state) {
      seed += 0x9e3779b97f4a7c15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      word = z ^ (z >> 31);
    }
  }

  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(_state[1] * 5, 7) * 9;
    const std::uint64_t t = _state[1] << 17;
    _state[2] ^= _state[0];
    _state[3] ^= _state[1];
    _state[1] ^= _state[2];
    _state[0] ^= _state[3];
    _state[2] ^= t;
    _state[3] = rotl(_state[3], 45);
    return result;
  }
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
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  std::uint64_t _state[4];
};

}  // namespace ringmta::sim
