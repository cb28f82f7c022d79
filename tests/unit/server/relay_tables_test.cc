// slab and id_table (src/server/relay_tables.h): the relay's per-message tables must find
// exactly what is in them through growth, shrinking and backward-shift deletion, confirm a
// hash match against the payload's id, and keep addresses stable.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "relay_tables.h"

namespace ringmta::server {
namespace {

struct item {
  spool::message_id id = 0;
  std::uint64_t payload = 0;
};

struct slot {
  std::uint32_t hash = 0;
  std::uint32_t index = 0;
};

// The home's use: a slab of items found through a table of slab indices.
struct home {
  slab<item> items;
  id_table<slot> ids;
  item* find(spool::message_id id) {
    slot* s = ids.find(id, [&](const slot& e) { return items.at(e.index).id == id; });
    return s != nullptr ? &items.at(s->index) : nullptr;
  }
  item& add(spool::message_id id, std::uint64_t payload) {
    const std::uint32_t index = items.allocate();
    ids.insert(id, slot{0, index});
    item& it = items.at(index);
    it = {id, payload};
    return it;
  }
  void remove(spool::message_id id) {
    slot* s = ids.find(id, [&](const slot& e) { return items.at(e.index).id == id; });
    ASSERT_NE(s, nullptr);
    const std::uint32_t index = s->index;
    ids.erase(*s);
    items.release(index);
  }
};

// Ids shaped like the spool's (message_id.h): seconds | shard | sequence, so one shard's ids
// differ in a few low bits, then random removals and re-additions against a std::map.
TEST(relay_tables, id_table_agrees_with_a_map_through_random_adds_and_removes) {
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
  // Load stays within the bounds that size the memory per message: at most 7/8 full.
  EXPECT_LE(h.ids.size() * 8, h.ids.capacity() * 7);
}

TEST(relay_tables, a_drained_table_and_slab_give_their_memory_back) {
  home h;
  for (spool::message_id id = 1; id <= 100'000; ++id) h.add(id, id);
  const std::size_t full = h.ids.capacity();
  // The bytes per message: between 7/8 and (growing by half) 7/12 full, whatever the count.
  EXPECT_GE(full, 100'000u * 8 / 7);
  EXPECT_LE(full * 7, 100'000u * 12);
  for (spool::message_id id = 1; id <= 99'990; ++id) h.remove(id);
  EXPECT_LE(h.ids.capacity(), 128u);
  for (spool::message_id id = 99'991; id <= 100'000; ++id) EXPECT_EQ(h.find(id)->payload, id);
  for (spool::message_id id = 99'991; id <= 100'000; ++id) h.remove(id);
  EXPECT_EQ(h.items.size(), 0u);
  EXPECT_EQ(h.find(5), nullptr);
  h.add(5, 6);  // usable again after it gave everything back
  EXPECT_EQ(h.find(5)->payload, 6u);
}

// Entries whose ids share a hash: the table keeps only the hash, so it must ask the payload.
TEST(relay_tables, equal_hashes_are_told_apart_by_the_payload) {
  struct entry {
    std::uint32_t hash = 0;
    std::uint32_t unused = 0;
    const item* message = nullptr;
  };
  // Find ids whose 32-bit hashes are equal among random ids (birthday bound: ~2^16 tries;
  // consecutive ids would spread evenly and take ~2^32).
  std::mt19937_64 random(16);
  std::map<std::uint32_t, spool::message_id> seen;
  spool::message_id a = 0, b = 0;
  while (b == 0) {
    const spool::message_id id = random();
    const auto [at, added] = seen.emplace(id_hash(id), id);
    if (!added) a = at->second, b = id;
  }
  ASSERT_EQ(id_hash(a), id_hash(b));
  const item ia{a, 1}, ib{b, 2};
  id_table<entry> table;
  table.insert(a, entry{0, 0, &ia});
  table.insert(b, entry{0, 0, &ib});
  auto find = [&](spool::message_id id) {
    entry* e = table.find(id, [id](const entry& x) { return x.message->id == id; });
    return e != nullptr ? e->message : nullptr;
  };
  EXPECT_EQ(find(a), &ia);
  EXPECT_EQ(find(b), &ib);
  table.erase(*table.find(a, [a](const entry& x) { return x.message->id == a; }));
  EXPECT_EQ(find(a), nullptr);
  EXPECT_EQ(find(b), &ib);  // moved back into the hole, still found
}

}  // namespace
}  // namespace ringmta::server
