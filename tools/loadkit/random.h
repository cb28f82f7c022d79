// loadkit::random: a small seeded generator (xoshiro256**, seeded through splitmix64) so fault
// injection and size sampling replay from --seed. One per shard; never shared between threads.
#pragma once

#include <cstdint>

namespace ringmta::loadkit {

class random {
 public:
  explicit random(std::uint64_t seed = 1) noexcept { reseed(seed); }

  void reseed(std::uint64_t seed) noexcept {
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
  // Uniform in [0, 1).
  double uniform() noexcept { return double(next() >> 11) * 0x1.0p-53; }
  bool chance(double probability) noexcept { return probability > 0 && uniform() < probability; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  std::uint64_t _state[4];
};

}  // namespace ringmta::loadkit
