// slab and id_index (src/server/relay_tables.h): the relay's per-message tables must find
// exactly what is in them through growth, shrinking and backward-shift deletion, confirm a
// tag match against the object's id, and keep addresses stable.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <unordered_map>
#include <vector>

#include "relay_tables.h"

namespace ringmta::server {
namespace {

struct item {
  spool::message_id id = 0;
  std::uint64_t payload = 0;
};

// The home's use: a slab of items found through an index of slab indices.
struct home {
  slab<item> items;
  id_index<item> ids{items};
  item* find(spool::message_id id) {
    const std::uint32_t index = ids.find(id);
    return index != ids.none ? &items.at(index) : nullptr;
  }
  item& add(spool::message_id id, std::uint64_t payload) {
    const std::uint32_t index = items.allocate();
    item& it = items.at(index);
    it = {id, payload};
    ids.insert(index);
    return it;
  }
  void remove(spool::message_id id) {
    const item* it = find(id);
    ASSERT_NE(it, nullptr);
    const std::uint32_t index = ids.erase(id);
    ASSERT_EQ(&items.at(index), it);
    items.release(index);
  }
};

// Ids shaped like the spool's (message_id.h): seconds | shard | sequence, so one shard's ids
// differ in a few low bits, then random removals and re-additions against a std::map.
TEST(relay_tables, id_index_agrees_with_a_map_through_random_adds_and_removes) {
  std::mt19937_64 random(15);
  home h;
  std::map<spool::message_id, std::uint64_t> model;
  std::map<spool::message_id, const item*> addresses;
  std::uint64_t sequence = 0;
  for (int round = 0; round < 60'000; ++round) {
    const bool add = model.empty() || random() % 5 < 3;
    if (add) {
      const std::uint64_t seconds = 1'765'000'000ull + static_cast<std::uint64_t>(round) / 500;
      const spool::message_id id = (seconds << 30) | (std::uint64_t{3} << 22) | sequence++;
      const std::uint64_t payload = random();
      addresses[id] = &h.add(id, payload);
      model[id] = payload;
    } else {
      auto victim = model.begin();
      std::advance(victim, static_cast<long>(random() % model.size()));
      h.remove(victim->first);
      addresses.erase(victim->first);
      model.erase(victim);
    }
    ASSERT_EQ(h.ids.size(), model.size());
    ASSERT_EQ(h.items.size(), model.size());
  }
  for (const auto& [id, payload] : model) {
    const item* found = h.find(id);
    ASSERT_NE(found, nullptr);
    EXPECT_EQ(found->payload, payload);
    EXPECT_EQ(found, addresses[id]) << "an item moved";
  }
  EXPECT_EQ(h.find(model.rbegin()->first + 1), nullptr);
  // Load stays within the bounds that size the memory per message: at most 3/4 full.
  EXPECT_LE(h.ids.size() * 4, h.ids.capacity() * 3);
}

TEST(relay_tables, a_drained_table_and_slab_give_their_memory_back) {
  home h;
  for (spool::message_id id = 1; id <= 100'000; ++id) h.add(id, id);
  const std::size_t full = h.ids.capacity();
  // Between 3/4 and (growing by half) 1/2 full, whatever the count.
  EXPECT_GE(full * 3, 100'000u * 4);
  EXPECT_LE(full, 100'000u * 2);
  for (spool::message_id id = 1; id <= 99'990; ++id) h.remove(id);
  EXPECT_LE(h.ids.capacity(), 128u);
  for (spool::message_id id = 99'991; id <= 100'000; ++id) EXPECT_EQ(h.find(id)->payload, id);
  for (spool::message_id id = 99'991; id <= 100'000; ++id) h.remove(id);
  EXPECT_EQ(h.items.size(), 0u);
  EXPECT_EQ(h.ids.bytes(), 0u);
  EXPECT_EQ(h.find(5), nullptr);
  h.add(5, 6);  // usable again after it gave everything back
  EXPECT_EQ(h.find(5)->payload, 6u);
}

// Issue 15: the home's id table costs at most 8 bytes a queued message at any count (4-byte
// slots at least half full; its 8-byte entries took 9.1-13.7), and its probes stay short.
TEST(relay_tables, at_most_eight_bytes_a_message_at_any_count) {
  home h;
  spool::message_id id = 0;
  for (const std::size_t count : {1'000u, 10'000u, 100'000u, 530'000u, 1'000'000u}) {
    while (h.ids.size() < count) {
      ++id;
      h.add(id, id);
    }
    const double per_message = static_cast<double>(h.ids.bytes()) / count;
    std::printf("%zu messages: %.2f bytes each, longest probe %zu\n", count, per_message,
                h.ids.probe_length_max());
    EXPECT_LE(per_message, 8.0) << count;
    // Linear probing at <= 3/4 load: the longest run grows like log(n) (183 at 1,000,000, 74%
    // full); an unmixed hash of these sequential ids would make runs of thousands.
    EXPECT_LE(h.ids.probe_length_max(), 256u) << count;
  }
}

// Ids whose hashes agree in their home bits and their tag: the slot cannot tell them apart,
// so the index must ask the object (and the backward shift must keep both reachable).
TEST(relay_tables, equal_tags_and_homes_are_told_apart_by_the_object) {
  // The home is the hash's top 32 bits, the tag bits 27-31: find two ids agreeing in both
  // (birthday bound over 37 bits: ~2^18.5 random ids).
  std::mt19937_64 random(16);
  std::unordered_map<std::uint64_t, spool::message_id> seen;
  spool::message_id a = 0, b = 0;
  while (b == 0) {
    const spool::message_id id = random() | 1;
    const std::uint64_t hash = id_hash(id);
    const std::uint64_t key = (hash >> 32) << 5 | ((hash >> 27) & 31);
    const auto [at, added] = seen.emplace(key, id);
    if (!added && at->second != id) a = at->second, b = id;
  }
  home h;
  h.add(a, 1);
  h.add(b, 2);
  EXPECT_EQ(h.find(a)->payload, 1u);
  EXPECT_EQ(h.find(b)->payload, 2u);
  h.remove(a);
  EXPECT_EQ(h.find(a), nullptr);
  EXPECT_EQ(h.find(b)->payload, 2u);  // moved back into the hole, still found
}

}  // namespace
}  // namespace ringmta::server
