// core/linear_probe.h: a table built on probe() and backward_shift() alone must find exactly
// what is in it, against a std::map, when every hash collides, when runs wrap around the end,
// at any table length (not only powers of two), and through a table rebuilt larger or smaller.
#include "ringmta/core/linear_probe.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <vector>

namespace ringmta::core {
namespace {

// The smallest table the functions allow: a slot is {hash (0: empty), key}.
class table {
 public:
  explicit table(std::size_t slots) : _slots(slots) {}
  bool find(std::uint64_t key, std::uint32_t hash) const { return !empty(slot_of(key, hash)); }
  void insert(std::uint64_t key, std::uint32_t hash) {
    const std::size_t at = probe(hash, _slots.size(), [&](std::size_t s) { return empty(s); });
    _slots[at] = {hash, key};
  }
  bool erase(std::uint64_t key, std::uint32_t hash) {
    const std::size_t at = slot_of(key, hash);
    if (empty(at)) return false;
    const std::size_t last = backward_shift(
        at, _slots.size(), [&](std::size_t s) { return empty(s); },
        [&](std::size_t s) { return probe_home(_slots[s].hash, _slots.size()); },
        [&](std::size_t from, std::size_t to) { _slots[to] = _slots[from]; });
    _slots[last] = {};
    return true;
  }
  // Every entry placed again in a table of `slots` (what the users do to grow or shrink).
  void rebuild(std::size_t slots) {
    std::vector<slot> old(slots);
    old.swap(_slots);
    for (const slot& s : old)
      if (s.hash != 0) insert(s.key, s.hash);
  }
  std::size_t longest_probe() const {
    std::size_t longest = 0;
    for (std::size_t s = 0; s < _slots.size(); ++s) {
      if (empty(s)) continue;
      const std::size_t home = probe_home(_slots[s].hash, _slots.size());
      longest = std::max(longest, probe_length(home, s, _slots.size()));
    }
    return longest;
  }
  // Whether slot `s` (occupied) holds an entry that wrapped around the table's end.
  bool wrapped(std::size_t s) const { return probe_home(_slots[s].hash, _slots.size()) > s; }
  std::size_t length() const { return _slots.size(); }

 private:
  struct slot {
    std::uint32_t hash = 0;
    std::uint64_t key = 0;
  };
  bool empty(std::size_t s) const { return _slots[s].hash == 0; }
  std::size_t slot_of(std::uint64_t key, std::uint32_t hash) const {
    return probe(hash, _slots.size(), [&](std::size_t s) {
      return empty(s) || (_slots[s].hash == hash && _slots[s].key == key);
    });
  }
  std::vector<slot> _slots;
};

// Random inserts and erases against a map; the load stays below 3/4 (the users' rule: never
// full). `hash_of` decides how much the hashes collide.
void agree_with_a_map(std::size_t slots, const std::function<std::uint32_t(std::uint64_t)>& hash_of,
                      std::uint32_t seed) {
  std::mt19937_64 random(seed);
  table t(slots);
  std::map<std::uint64_t, bool> model;
  std::uint64_t next_key = 1;
  for (int round = 0; round < 20'000; ++round) {
    const bool add = model.empty() || (model.size() * 4 < slots * 3 && random() % 2 == 0);
    if (add) {
      const std::uint64_t key = next_key++;
      t.insert(key, hash_of(key));
      model[key] = true;
    } else {
      auto victim = model.begin();
      std::advance(victim, static_cast<long>(random() % model.size()));
      ASSERT_TRUE(t.erase(victim->first, hash_of(victim->first)));
      ASSERT_FALSE(t.erase(victim->first, hash_of(victim->first)));
      model.erase(victim);
    }
    if (round % 97 != 0) continue;
    for (std::uint64_t key = 1; key < next_key; ++key)
      ASSERT_EQ(t.find(key, hash_of(key)), model.count(key) == 1) << "key " << key;
  }
}

TEST(linear_probe, every_hash_colliding) {
  agree_with_a_map(37, [](std::uint64_t) { return 0x80000000u; }, 1);
}

TEST(linear_probe, runs_wrapping_around_the_end) {
  // Homes in the last few slots of 64: runs cross the end and entries live in slot 0...
  agree_with_a_map(64, [](std::uint64_t key) { return 0xf0000000u + (key % 4) * 0x1000000u; }, 2);
  table t(16);
  for (std::uint64_t key = 1; key <= 8; ++key) t.insert(key, 0xffffffffu);  // home: slot 15
  EXPECT_TRUE(t.wrapped(0));
  EXPECT_EQ(t.longest_probe(), 8u);
  // ...and erasing the one in the home slot shifts the wrapped ones back across the end.
  EXPECT_TRUE(t.erase(1, 0xffffffffu));
  for (std::uint64_t key = 2; key <= 8; ++key) EXPECT_TRUE(t.find(key, 0xffffffffu)) << key;
  EXPECT_EQ(t.longest_probe(), 7u);
}

TEST(linear_probe, few_distinct_hashes_any_length) {
  for (std::size_t slots : {16u, 17u, 100u, 1000u})
    agree_with_a_map(slots, [](std::uint64_t key) { return std::uint32_t(1 + key % 5) << 28; },
                     static_cast<std::uint32_t>(slots));
}

TEST(linear_probe, mixed_hashes_grow_and_shrink) {
  const auto hash_of = [](std::uint64_t key) {
    const std::uint32_t h = static_cast<std::uint32_t>((key * 0x9e3779b97f4a7c15ull) >> 32);
    return h == 0 ? 1u : h;
  };
  agree_with_a_map(1024, hash_of, 3);
  table t(16);
  std::uint64_t count = 0;
  for (std::uint64_t key = 1; key <= 10'000; ++key) {
    if ((count + 1) * 4 > t.length() * 3) t.rebuild(t.length() * 2);
    t.insert(key, hash_of(key));
    ++count;
  }
  for (std::uint64_t key = 1; key <= 9'900; ++key) {
    ASSERT_TRUE(t.erase(key, hash_of(key)));
    if (--count * 16 < t.length() && t.length() > 16) t.rebuild(t.length() / 2);
  }
  EXPECT_LE(t.length(), 2048u);
  for (std::uint64_t key = 1; key <= 10'000; ++key)
    EXPECT_EQ(t.find(key, hash_of(key)), key > 9'900) << key;
  EXPECT_LT(t.longest_probe(), 20u);
}

TEST(linear_probe, home_is_the_top_bits_at_a_power_of_two) {
  EXPECT_EQ(probe_home(0xffffffffu, 16), 15u);
  EXPECT_EQ(probe_home(0x12345678u, 1u << 12), 0x123u);
  EXPECT_EQ(probe_home(0x80000000u, 37), 18u);  // any length: scaled, no division
  EXPECT_EQ(probe_length(14, 1, 16), 4u);       // 14, 15, 0, 1
}

}  // namespace
}  // namespace ringmta::core
