// spool::message_index (index.h): recipient lists inline and out of line, the id table's
// growth, deletion and probe lengths on ids as the generator makes them, and the store using it
// across reclaim and restarts with messages of one and of several recipients.
#include "ringmta/spool/index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "spool_test_util.h"

namespace ringmta::spool {
namespace {

recipient_status status_of(std::size_t i) {
  return recipient_status{i % 2 == 0 ? recipient_state::deferred : recipient_state::delivered,
                          static_cast<std::uint32_t>(i + 1),
                          1'700'000'000 + static_cast<std::int64_t>(i)};
}

TEST(spool_index, recipient_list_inline_and_out_of_line) {
  for (std::size_t count : {1u, 2u, 7u}) {
    recipient_list list(count);
    ASSERT_EQ(list.size(), count);
    for (const recipient_status& status : list) EXPECT_EQ(status, recipient_status{});
    for (std::size_t i = 0; i < count; ++i) list.set(i, status_of(i));
    for (std::size_t i = 0; i < count; ++i) EXPECT_EQ(list[i], status_of(i)) << count;
    const recipient_list copy = list;  // deep: changing one leaves the other
    list.set(count - 1, recipient_status{recipient_state::bounced, 9, 0});
    EXPECT_EQ(copy[count - 1], status_of(count - 1));
    EXPECT_EQ(list.at(count - 1).state, recipient_state::bounced);
    recipient_list moved = std::move(list);
    EXPECT_EQ(list.size(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
    ASSERT_EQ(moved.size(), count);
    EXPECT_EQ(moved[count - 1].attempts, 9u);
    moved = copy;
    EXPECT_TRUE(std::equal(moved.begin(), moved.end(), copy.begin(), copy.end()));
    moved.assign(0);
    EXPECT_TRUE(moved.empty());
  }
}

// A per-id marker in the entry's payload (the commit offset has 34 bits).
std::uint64_t offset_for(message_id id) { return id * 3 % commit_offset_limit; }

message_entry entry_for(message_id id, std::size_t recipients) {
  message_entry entry;
  entry.id = id;
  entry.commit_offset = offset_for(id);
  entry.recipients.assign(recipients);
  for (std::size_t i = 0; i < recipients; ++i) entry.recipients.set(i, status_of(id + i));
  return entry;
}

// `entry` is the one entry_for(id, recipients) made.
void expect_entry(const message_entry* entry, message_id id, std::size_t recipients) {
  ASSERT_NE(entry, nullptr) << id;
  EXPECT_EQ(entry->id, id);
  EXPECT_EQ(entry->commit_offset, offset_for(id));
  ASSERT_EQ(entry->recipients.size(), recipients) << id;
  for (std::size_t i = 0; i < recipients; ++i) EXPECT_EQ(entry->recipients[i], status_of(id + i));
}

// Ids as message_id_generator makes them: `per_second` a second over `seconds` seconds, from
// each of `shards` shards.
std::vector<message_id> generated_ids(std::size_t seconds, std::size_t per_second,
                                      std::uint32_t shards) {
  std::vector<message_id> ids;
  for (std::uint32_t shard = 0; shard < shards; ++shard) {
    message_id_generator generator(shard, 0);
    for (std::size_t s = 0; s < seconds; ++s)
      for (std::size_t i = 0; i < per_second; ++i)
        ids.push_back(generator.next(1'700'000'000 + static_cast<std::int64_t>(s)));
  }
  return ids;
}

std::size_t recipients_of(std::size_t i) {
  return i % 5 == 0 ? 1 + i % 4 : 1;
}

// Growth from empty to 200,000 entries: every id found with its own entry at every size, an
// entry's address never changes while entries are only added, and absent ids are not found.
// The 48-byte entry's packed word: each field at its limits, set in every order, reads back
// exactly and leaves its neighbours alone; the first segment counts back across a wrap.
TEST(spool_index, the_packed_entry_keeps_every_field_at_its_limits) {
  static_assert(sizeof(message_entry) == 48);
  const std::uint64_t offsets[] = {0, 1, 4096, commit_offset_limit / 2 + 1,
                                   commit_offset_limit - 1};
  const message_status statuses[] = {message_status::committing, message_status::queued,
                                     message_status::final};
  const std::uint32_t commits[] = {0, 1, 63, 64, 1000, 0xffffffffu};
  for (const std::uint64_t offset : offsets) {
    for (const message_status status : statuses) {
      for (std::uint8_t flags = 0; flags < 8; ++flags) {
        for (const std::uint32_t commit : commits) {
          for (const std::uint32_t back : {0u, 1u, segment_span_max - 1}) {
            message_entry entry;
            entry.id = ~message_id{0};
            entry.segment_mask = ~std::uint64_t{0};
            entry.commit_segment = commit;
            entry.set_first_segment(commit - back);  // wraps below 0: still `back` behind
            entry.flags = flags;
            entry.commit_offset = offset;
            entry.status = status;
            entry.commit_bytes = 0xffffffffu;
            EXPECT_EQ(entry.commit_offset, offset);
            EXPECT_EQ(entry.first_segment(), commit - back) << commit << " " << back;
            EXPECT_EQ(entry.status, status);
            EXPECT_EQ(entry.flags, flags);
            EXPECT_EQ(entry.commit_segment, commit);
            EXPECT_EQ(entry.commit_bytes, 0xffffffffu);
            EXPECT_EQ(entry.id, ~message_id{0});
            EXPECT_EQ(entry.segment_mask, ~std::uint64_t{0});
            // Rewriting one field keeps the others.
            entry.status = message_status::final;
            entry.flags = static_cast<std::uint8_t>(apply_action(flags, message_action::hold));
            EXPECT_EQ(entry.commit_offset, offset);
            EXPECT_EQ(entry.first_segment(), commit - back);
            entry.commit_offset = 0;
            EXPECT_EQ(entry.status, message_status::final);
            EXPECT_EQ(entry.first_segment(), commit - back);
          }
        }
      }
    }
  }
}

TEST(spool_index, growth_keeps_every_entry_in_place) {
  const auto ids = generated_ids(2000, 100, 1);
  message_index index;
  EXPECT_EQ(index.find(ids[0]), nullptr);
  std::vector<const message_entry*> where;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    where.push_back(&index.insert(entry_for(ids[i], recipients_of(i))));
    if ((i & (i + 1)) == 0) {  // at 1, 2, 4, ...: across every growth of the slot table
      for (std::size_t j = 0; j <= i; ++j) ASSERT_EQ(index.find(ids[j]), where[j]) << i;
    }
  }
  EXPECT_EQ(index.size(), ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    expect_entry(index.find(ids[i]), ids[i], recipients_of(i));
    EXPECT_EQ(index.find(ids[i]), where[i]);
  }
  EXPECT_EQ(index.find(ids.back() + 1), nullptr);
  EXPECT_LE(index.size() * 4, index.slot_count() * 3);  // at most 3/4 full
  EXPECT_GT(index.size() * 8, index.slot_count() * 3);  // not grown beyond need
}

// Erase a random half, then find the rest (entries moved into the holes keep their states),
// erase everything, and use the index again.
TEST(spool_index, find_after_erase) {
  const auto ids = generated_ids(500, 64, 2);
  message_index index;
  for (std::size_t i = 0; i < ids.size(); ++i) index.insert(entry_for(ids[i], recipients_of(i)));
  std::vector<std::size_t> order(ids.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  const std::size_t half = order.size() / 2;
  for (std::size_t k = 0; k < half; ++k) ASSERT_TRUE(index.erase(ids[order[k]]));
  EXPECT_FALSE(index.erase(ids[order[0]]));  // gone already
  EXPECT_EQ(index.size(), ids.size() - half);
  for (std::size_t k = 0; k < order.size(); ++k) {
    const std::size_t i = order[k];
    if (k < half) {
      EXPECT_EQ(index.find(ids[i]), nullptr);
    } else {
      expect_entry(index.find(ids[i]), ids[i], recipients_of(i));
    }
  }
  std::size_t visited = 0;
  for (const auto& entry : index) visited += index.find(entry.id) == &entry ? 1 : 0;
  EXPECT_EQ(visited, index.size());
  const std::size_t slots_full = index.slot_count();
  const std::size_t bytes_full = index.bytes();
  for (std::size_t k = half; k < order.size() - 10; ++k) ASSERT_TRUE(index.erase(ids[order[k]]));
  EXPECT_LT(index.slot_count(), slots_full);  // shrunk with its entries
  // The chunk in use and one spare are left (of 32 at 32,000 entries).
  EXPECT_LE(index.bytes(), 2 * message_entries::chunk_entries * sizeof(message_entry) + 1024);
  EXPECT_LT(index.bytes() * 10, bytes_full);
  for (std::size_t k = order.size() - 10; k < order.size(); ++k)
    expect_entry(index.find(ids[order[k]]), ids[order[k]], recipients_of(order[k]));
  for (std::size_t k = order.size() - 10; k < order.size(); ++k) index.erase(ids[order[k]]);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.slot_count(), 0u);
  index.insert(entry_for(ids[3], 2));  // the ids come back (as after a failed commit)
  expect_entry(index.find(ids[3]), ids[3], 2);
}

// erase_if reads the entry before it goes (the store's callers take fields from it) and keeps
// it when the predicate says no; the entry moved into the hole is found, and in its place.
TEST(spool_index, erase_if_asks_before_erasing) {
  const auto ids = generated_ids(40, 50, 1);
  message_index index;
  for (std::size_t i = 0; i < ids.size(); ++i) index.insert(entry_for(ids[i], recipients_of(i)));
  std::size_t asked = 0;
  EXPECT_FALSE(index.erase_if(ids[7], [&](const message_entry& entry) {
    ++asked;
    EXPECT_EQ(entry.id, ids[7]);
    return false;
  }));
  EXPECT_EQ(asked, 1u);
  expect_entry(index.find(ids[7]), ids[7], recipients_of(7));
  EXPECT_FALSE(index.erase_if(ids.back() + 1, [&](const message_entry&) { return ++asked, true; }));
  EXPECT_EQ(asked, 1u);  // an absent id asks nothing
  message_entry* const hole = index.find(ids[7]);
  std::uint64_t offset = 0;
  EXPECT_TRUE(index.erase_if(ids[7], [&](const message_entry& entry) {
    offset = entry.commit_offset;
    return true;
  }));
  EXPECT_EQ(offset, offset_for(ids[7]));
  EXPECT_EQ(index.find(ids[7]), nullptr);
  // The last entry moved into the hole: found there with its recipients.
  EXPECT_EQ(index.find(ids.back()), hole);
  expect_entry(hole, ids.back(), recipients_of(ids.size() - 1));
  for (std::size_t i = 0; i + 1 < ids.size(); ++i)
    if (i != 7) expect_entry(index.find(ids[i]), ids[i], recipients_of(i));
}

// Generated ids share their low bits (sequence 0 at one message a second) or their high bits
// (one second, sequence 0..N): a table keyed on either would put them all in a run. With the
// mixed hash the longest probe stays short in every shape.
TEST(spool_index, generator_ids_spread_over_the_slots) {
  const std::vector<std::vector<message_id>> shapes = {
      generated_ids(150'000, 1, 1),  // one a second: every sequence 0
      generated_ids(1, 150'000, 1),  // one second: the sequence counts
      generated_ids(300, 250, 2),    // two shards interleaved in value
  };
  for (const auto& ids : shapes) {
    message_index index;
    for (message_id id : ids) index.insert(entry_for(id, 1));
    // Linear probing at ≤ 3/4 load: the longest run grows like log(n); ~30-60 here.
    EXPECT_LE(index.probe_length_max(), 150u) << ids.size();
  }
}

// The recovered entries (ascending ids) are adopted without a copy and found.
TEST(spool_index, adopts_recovered_entries) {
  const auto ids = generated_ids(30, 100, 1);
  message_entries entries;
  for (std::size_t i = 0; i < ids.size(); ++i)
    entries.push_back(entry_for(ids[i], recipients_of(i)));
  const message_entry* first = &entries[0];
  message_index index(std::move(entries));
  EXPECT_EQ(index.find(ids[0]), first);
  for (std::size_t i = 0; i < ids.size(); ++i)
    expect_entry(index.find(ids[i]), ids[i], recipients_of(i));
}

// The store over its index: messages of one recipient (inline) and of several, marked, half of
// them finished so that their segments are reclaimed (entries erased, others moved), then two
// restarts (recovery, then the start-up snapshot): every state comes back where it was.
TEST(spool_index, store_keeps_states_through_reclaim_and_restarts) {
  test::temp_dir dir;
  auto config = test::small_config(dir.shard(0));
  config.segment_bytes = 128u << 10;
  std::map<message_id, std::vector<recipient_status>> live;
  std::vector<message_id> finished;
  // Every live message is found with its states (as deferred by the marks below).
  const auto expect_live = [&](const store& core, int round) {
    for (const auto& [id, states] : live) {
      const message_entry* entry = core.find(id);
      ASSERT_NE(entry, nullptr) << round;
      ASSERT_EQ(entry->recipients.size(), states.size());
      for (std::size_t r = 0; r < states.size(); ++r) {
        EXPECT_EQ(entry->recipients[r],
                  (recipient_status{recipient_state::deferred, states[r].attempts,
                                    states[r].next_attempt_seconds}))
            << round;
      }
    }
  };
  {
    auto spool = sync_spool::open(config).value();
    for (std::uint32_t i = 0; i < 400; ++i) {
      const std::size_t count = recipients_of(i);
      auto handle = spool->begin(1000 + i / 50).value();
      ASSERT_TRUE(spool->append(handle, test::make_body(1500, i)).ok());
      const message_id id = spool->core().id_of(handle);
      const auto value = test::make_envelope(id, static_cast<std::uint32_t>(count), i);
      ASSERT_TRUE(spool->commit(handle, value).ok());
      if (i % 40 == 39) spool->flush();
      // The first 300 finish (their segments go); of the rest every recipient is deferred.
      std::vector<recipient_status>& states = live[id];
      for (std::size_t r = 0; r < count; ++r) states.push_back(status_of(i + r));
      if (i < 300) finished.push_back(id);
    }
    spool->flush();
    for (const auto& [id, states] : live) {
      const bool finish = std::find(finished.begin(), finished.end(), id) != finished.end();
      for (std::size_t r = 0; r < states.size(); ++r) {
        const recipient_status status =
            finish ? recipient_status{recipient_state::delivered, 1, 0}
                   : recipient_status{recipient_state::deferred, states[r].attempts,
                                      states[r].next_attempt_seconds};
        ASSERT_TRUE(spool->mark(id, static_cast<std::uint16_t>(r), status).ok());
      }
    }
    spool->flush();
    EXPECT_GT(spool->core().stats().segments_removed, 0u);
    for (message_id id : finished) live.erase(id);
    // In memory, right after the reclaim erased entries and moved others into their places
    // (a restart below rebuilds the index from disk, so only this checks the moves).
    expect_live(spool->core(), -1);
  }
  for (int restart = 0; restart < 2; ++restart) {
    auto spool = sync_spool::open(config).value();
    EXPECT_TRUE(spool->report().problems.empty());
    std::size_t queued = 0;
    spool->core().for_each_message([&](const message_entry& entry) {
      queued += entry.status == message_status::queued ? 1 : 0;
    });
    EXPECT_EQ(queued, live.size()) << restart;
    expect_live(spool->core(), restart);
  }
}

}  // namespace
}  // namespace ringmta::spool
