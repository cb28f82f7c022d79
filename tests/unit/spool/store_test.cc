// spool::store on the real disk, driven synchronously: round trip, BDAT stuffing, journal
// states, reclaim, ids across restarts and shards.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "spool_test_util.h"

namespace ringmta::spool {
namespace {

using test::make_body;
using test::make_envelope;
using test::read_body;
using test::small_config;
using test::temp_dir;

struct expected_message {
  envelope value;
  std::string body;
};

std::unique_ptr<sync_spool> open_spool(const store_config& config) {
  auto opened = sync_spool::open(config);
  EXPECT_TRUE(opened.ok()) << opened.error_text();
  return opened.ok() ? std::move(opened.value()) : nullptr;
}

void expect_recovered(const store_config& config,
                      const std::map<message_id, expected_message>& expected) {
  auto spool = open_spool(config);
  ASSERT_NE(spool, nullptr);
  EXPECT_TRUE(spool->report().problems.empty()) << spool->report().problems.front();
  std::size_t queued = 0;
  spool->core().for_each_message([&](const message_entry&) { ++queued; });
  EXPECT_EQ(queued, expected.size());
  for (const auto& [id, message] : expected) {
    auto stored = spool->core().read(id);
    ASSERT_TRUE(stored.ok()) << format_message_id(id).data() << ": " << stored.error_text();
    EXPECT_EQ(stored.value().envelope, message.value);
    EXPECT_EQ(stored.value().body_bytes, message.body.size());
    EXPECT_EQ(read_body(stored.value()), message.body) << format_message_id(id).data();
  }
}

TEST(spool_store, round_trip_interleaved_varied_sizes) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::map<message_id, expected_message> expected;
  {
    auto spool = open_spool(config);
    ASSERT_NE(spool, nullptr);
    std::mt19937 random(1);
    const std::size_t sizes[] = {0, 1, 2, 100, 1000, 4096, 70'000, 300'000, 3'000'000};
    std::uint32_t seed = 0;
    for (int round = 0; round < 12; ++round) {
      // Several sessions at once, their chunks interleaved as the reactor would see them.
      struct session {
        message_handle handle;
        std::string body;
        std::size_t sent = 0;
      };
      std::vector<session> sessions;
      for (int s = 0; s < 8; ++s) {
        auto handle = spool->begin(1'700'000'000 + round);
        ASSERT_TRUE(handle.ok());
        sessions.push_back({handle.value(), make_body(sizes[(seed + s) % 9], seed + s), 0});
      }
      bool busy = true;
      while (busy) {
        busy = false;
        for (auto& one : sessions) {
          if (one.sent == one.body.size()) continue;
          const std::size_t n = std::min<std::size_t>(1 + random() % 20000,
                                                      one.body.size() - one.sent);
          ASSERT_TRUE(spool->append(one.handle, std::string_view(one.body).substr(one.sent, n))
                          .ok());
          one.sent += n;
          busy = true;
        }
      }
      for (auto& one : sessions) {
        const message_id id = spool->core().id_of(one.handle);
        auto value = make_envelope(id, 1 + seed % 4, seed);
        ASSERT_TRUE(spool->commit(one.handle, value).ok());
        expected[id] = {value, one.body};
        ++seed;
      }
      spool->flush();
    }
    std::size_t durable = 0;
    for (const auto& item : spool->take_events()) {
      EXPECT_EQ(item.error, 0);
      durable += item.kind == event_kind::committed ? 1 : 0;
    }
    EXPECT_EQ(durable, expected.size());
    EXPECT_GT(spool->core().stats().segments_created, 2u);  // the 3 MB bodies span segments
  }
  expect_recovered(config, expected);
}

// What commit() says about the body is what read() says once it is durable, also for bodies
// that span a segment switch.
TEST(spool_store, commit_gives_the_body_location_read_would) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));  // 1 MiB segments
  auto spool = open_spool(config);
  ASSERT_NE(spool, nullptr);
  for (std::uint32_t seed = 0; seed < 12; ++seed) {
    auto handle = spool->begin(1000);
    ASSERT_TRUE(handle.ok());
    const std::string body = make_body(seed % 3 == 0 ? 700'000 : 3'000, seed);
    ASSERT_TRUE(spool->append(handle.value(), body).ok());
    const message_id id = spool->core().id_of(handle.value());
    std::vector<body_slice> told;
    ASSERT_TRUE(spool->commit(handle.value(), make_envelope(id, 1, seed), &told).ok());
    spool->flush();
    auto stored = spool->core().read(id);
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(told.size(), stored.value().body.size()) << seed;
    for (std::size_t i = 0; i < told.size(); ++i) {
      EXPECT_EQ(told[i].fd, stored.value().body[i].fd);
      EXPECT_EQ(told[i].offset, stored.value().body[i].offset);
      EXPECT_EQ(told[i].length, stored.value().body[i].length);
    }
    EXPECT_EQ(read_body(stored_message{stored.value().envelope, body.size(), told}), body);
  }
}

// A header prefix (DKIM-Signature fields, computed at the end of data) is committed with the
// message and read back FIRST, ahead of the received bytes, by commit(), read() and recovery,
// also when the body spans segments and when the prefix opens a new segment. Messages without
// a prefix (the format spools written before prefixes existed) recover unchanged beside them.
TEST(spool_store, header_prefix_is_sent_first_and_recovered) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));  // 1 MiB segments
  std::map<message_id, expected_message> expected;
  {
    auto spool = open_spool(config);
    ASSERT_NE(spool, nullptr);
    for (std::uint32_t seed = 0; seed < 16; ++seed) {
      auto handle = spool->begin(2000 + seed);
      ASSERT_TRUE(handle.ok());
      const std::string body = make_body(seed % 4 == 0 ? 900'000 : 1'000 + seed, seed);
      ASSERT_TRUE(spool->append(handle.value(), body).ok());
      const message_id id = spool->core().id_of(handle.value());
      const std::string prefix =
          seed % 3 == 2 ? std::string()
                        : "DKIM-Signature: v=1; a=ed25519-sha256; d=example.com; s=s" +
                              std::to_string(seed) + ";\r\n\tbh=x; b=y\r\n";
      std::vector<body_slice> told;
      auto value = make_envelope(id, 1, seed);
      ASSERT_TRUE(spool->commit(handle.value(), value, &told, prefix).ok());
      spool->flush();
      EXPECT_EQ(read_body(stored_message{value, prefix.size() + body.size(), told}),
                prefix + body);
      expected[id] = {value, prefix + body};
    }
  }
  expect_recovered(config, expected);
}

// Issue 15: the egress pool an X-Ringmta-Pool header chose is stored with the envelope and
// read back after a restart (the header itself is never spooled).
TEST(spool_store, pool_given_at_commit_is_read_back_after_a_restart) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  message_id with_pool = 0;
  message_id without = 0;
  {
    auto spool = sync_spool::open(config);
    ASSERT_TRUE(spool.ok());
    auto& s = *spool.value();
    for (int i = 0; i < 2; ++i) {
      auto handle = s.begin(1000).value();
      ASSERT_TRUE(s.append(handle, "Subject: x\r\n\r\nbody\r\n").ok());
      const message_id id = s.core().id_of(handle);
      ASSERT_TRUE(s.core().commit(handle, make_envelope(id, 1, 5), nullptr, {},
                                  i == 0 ? "tenant" : "").ok());
      (i == 0 ? with_pool : without) = id;
    }
    s.flush();
    ASSERT_EQ(s.core().read(with_pool).value().pool, "tenant");
  }
  auto spool = sync_spool::open(config);
  ASSERT_TRUE(spool.ok());
  auto& s = *spool.value();
  auto stored = s.core().read(with_pool);
  ASSERT_TRUE(stored.ok()) << stored.error_text();
  EXPECT_EQ(stored.value().pool, "tenant");
  EXPECT_EQ(stored.value().envelope, make_envelope(with_pool, 1, 5));
  ASSERT_TRUE(s.core().read(without).ok());
  EXPECT_EQ(s.core().read(without).value().pool, "");
}

TEST(spool_store, bdat_raw_chunks_are_stored_dot_stuffed) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::map<message_id, expected_message> expected;
  {
    auto spool = open_spool(config);
    ASSERT_NE(spool, nullptr);
    const std::string raw = ".starts with dot\r\nmiddle . dot\r\n..two\r\n.";
    auto handle = spool->begin(100).value();
    // Split so that line starts and dots fall on chunk edges.
    for (std::size_t at = 0; at < raw.size(); at += 3) {
      ASSERT_TRUE(spool->append_raw(handle, std::string_view(raw).substr(at, 3)).ok());
    }
    const message_id id = spool->core().id_of(handle);
    auto value = make_envelope(id, 1, 1);
    ASSERT_TRUE(spool->commit(handle, value).ok());
    expected[id] = {value, "..starts with dot\r\nmiddle . dot\r\n...two\r\n.."};
    // A large raw body: many pieces, stuffing state across 4 KiB internal pieces.
    std::string big;
    for (int i = 0; i < 50000; ++i) big += i % 3 == 0 ? ".line\r\n" : "text\r\n";
    std::string stuffed;
    dot_stuffer stuffer;
    stuffer.feed(big, [&](std::string_view piece) { stuffed.append(piece); });
    auto second = spool->begin(101).value();
    ASSERT_TRUE(spool->append_raw(second, big).ok());
    const message_id second_id = spool->core().id_of(second);
    auto second_value = make_envelope(second_id, 2, 2);
    ASSERT_TRUE(spool->commit(second, second_value).ok());
    expected[second_id] = {second_value, stuffed};
    spool->flush();
  }
  expect_recovered(config, expected);
}

TEST(spool_store, aborted_and_uncommitted_messages_never_appear) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::map<message_id, expected_message> expected;
  {
    auto spool = open_spool(config);
    ASSERT_NE(spool, nullptr);
    auto aborted = spool->begin(1).value();
    ASSERT_TRUE(spool->append(aborted, make_body(5000, 1)).ok());
    auto kept = spool->begin(1).value();
    const std::string body = make_body(3000, 2);
    ASSERT_TRUE(spool->append(kept, body).ok());
    spool->core().abort(aborted);
    auto never_committed = spool->begin(1).value();
    ASSERT_TRUE(spool->append(never_committed, make_body(7000, 3)).ok());
    const message_id id = spool->core().id_of(kept);
    auto value = make_envelope(id, 1, 9);
    ASSERT_TRUE(spool->commit(kept, value).ok());
    expected[id] = {value, body};
    spool->flush();  // the uncommitted data reaches the disk too
  }
  expect_recovered(config, expected);
}

message_id commit_one(sync_spool& spool, std::int64_t now, std::uint32_t recipients,
                      std::uint32_t seed, std::size_t bytes = 2000) {
  auto handle = spool.begin(now).value();
  EXPECT_TRUE(spool.append(handle, make_body(bytes, seed)).ok());
  const message_id id = spool.core().id_of(handle);
  EXPECT_TRUE(spool.commit(handle, make_envelope(id, recipients, seed)).ok());
  return id;
}

TEST(spool_store, journal_states_and_retry_times_survive_restart) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::vector<message_id> ids;
  {
    auto spool = open_spool(config);
    for (std::uint32_t i = 0; i < 20; ++i) ids.push_back(commit_one(*spool, 1000, 3, i));
    spool->flush();
    for (std::uint32_t i = 0; i < 20; ++i) {
      ASSERT_TRUE(spool->mark(ids[i], 0, {recipient_state::delivered, 1, 0}).ok());
      ASSERT_TRUE(spool->mark(ids[i], 1, {recipient_state::deferred, i + 1, 5000 + i}).ok());
    }
    ASSERT_TRUE(spool->mark(ids[0], 2, {recipient_state::bounced, 1, 0}).ok());
    EXPECT_EQ(spool->mark(ids[1], 0, {recipient_state::queued, 0, 0}).error(), EINVAL);
    spool->flush();
    std::size_t marked = 0;
    for (const auto& item : spool->take_events()) {
      if (item.kind == event_kind::marked) {
        EXPECT_EQ(item.error, 0);
        ++marked;
      }
    }
    EXPECT_EQ(marked, 41u);
  }
  auto spool = open_spool(config);
  EXPECT_TRUE(spool->report().problems.empty());
  for (std::uint32_t i = 0; i < 20; ++i) {
    const message_entry* entry = spool->core().find(ids[i]);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->recipients[0].state, recipient_state::delivered);
    EXPECT_EQ(entry->recipients[1],
              (recipient_status{recipient_state::deferred, i + 1, 5000 + std::int64_t{i}}));
    EXPECT_EQ(entry->recipients[2].state,
              i == 0 ? recipient_state::bounced : recipient_state::queued);
  }
  // A second restart reads the start-up snapshot journal written by the first one.
  spool.reset();
  spool = open_spool(config);
  EXPECT_EQ(spool->core().find(ids[5])->recipients[1].next_attempt_seconds, 5005);
  EXPECT_EQ(spool->report().journals, 1u);
}

std::size_t count_files(const std::string& directory, std::string_view prefix) {
  std::size_t count = 0;
  for (const auto& item : std::filesystem::directory_iterator(directory)) {
    if (item.path().filename().string().starts_with(prefix)) ++count;
  }
  return count;
}

// Issue 15: recovery applies journal records sorted by (message, journal file, offset), not as
// it reads them. 7,000 marks of one recipient each (more than a 256 KiB journal holds: the
// journal is compacted into a snapshot on the way), written for the messages in descending id
// order, with hold/release actions between them: the last mark and the last action in journal
// order win for every message.
TEST(spool_store, journal_records_apply_in_journal_order_across_files) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::vector<message_id> ids;
  constexpr std::uint32_t messages = 100;
  constexpr std::uint32_t rounds = 70;  // 7,000 state records of 48 bytes
  {
    auto spool = open_spool(config);
    for (std::uint32_t i = 0; i < messages; ++i) ids.push_back(commit_one(*spool, 300, 2, i));
    spool->flush();
    for (std::uint32_t round = 1; round <= rounds; ++round) {
      for (std::uint32_t i = messages; i-- > 0;) {
        ASSERT_TRUE(spool->mark(ids[i], 0, {recipient_state::deferred, round, 9000 + round}).ok());
      }
      const auto action = round % 2 ? message_action::hold : message_action::release;
      ASSERT_TRUE(spool->core().act(ids[round % messages], action, 3000 + round).ok());
      spool->flush();
    }
    ASSERT_TRUE(spool->mark(ids[7], 1, {recipient_state::delivered, 1, 0}).ok());
    spool->flush();
    (void)spool->take_events();
  }
  auto spool = open_spool(config);
  EXPECT_TRUE(spool->report().problems.empty());
  for (std::uint32_t i = 0; i < messages; ++i) {
    const message_entry* entry = spool->core().find(ids[i]);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->recipients[0],
              (recipient_status{recipient_state::deferred, rounds, 9000 + rounds}));
    EXPECT_EQ(entry->recipients[1].state,
              i == 7 ? recipient_state::delivered : recipient_state::queued);
    // Message i got actions in rounds i (and i + 100 > rounds): odd rounds hold.
    const bool held = i >= 1 && i <= rounds && i % 2 == 1;
    EXPECT_EQ(entry->flags, held ? message_flag_held : 0) << i;
  }
}

TEST(spool_store, segments_are_reclaimed_when_every_message_is_final) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.segment_bytes = 128u << 10;
  std::vector<message_id> ids;
  auto spool = open_spool(config);
  for (std::uint32_t i = 0; i < 60; ++i) {
    ids.push_back(commit_one(*spool, 1000, 2, i, 10'000));
    if (i % 10 == 9) spool->flush();
  }
  spool->flush();
  const std::size_t segments_before = count_files(config.directory, "segment-");
  EXPECT_GE(segments_before, 5u);
  // Finish all but the last message: every segment but the newest ones can go.
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
    ASSERT_TRUE(spool->mark(ids[i], 0, {recipient_state::delivered, 1, 0}).ok());
    ASSERT_TRUE(spool->mark(ids[i], 1, {recipient_state::bounced, 1, 0}).ok());
  }
  spool->flush();
  const std::size_t segments_after = count_files(config.directory, "segment-");
  EXPECT_LE(segments_after, 3u);  // the last message's segment(s), the current and the spare
  EXPECT_GT(spool->core().stats().segments_removed, 0u);
  EXPECT_EQ(spool->core().find(ids[0]), nullptr);  // dropped with its segment
  EXPECT_NE(spool->core().find(ids.back()), nullptr);
  spool.reset();
  spool = open_spool(config);
  EXPECT_TRUE(spool->report().problems.empty()) << spool->report().problems.front();
  std::size_t queued = 0;
  spool->core().for_each_message([&](const message_entry& entry) {
    queued += entry.status == message_status::queued ? 1 : 0;
  });
  EXPECT_EQ(queued, 1u);
  EXPECT_TRUE(spool->core().read(ids.back()).ok());
}

TEST(spool_store, journal_compaction_keeps_states) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.journal_bytes = 16u << 10;
  std::vector<message_id> ids;
  {
    auto spool = open_spool(config);
    for (std::uint32_t i = 0; i < 50; ++i) ids.push_back(commit_one(*spool, 1000, 2, i, 300));
    spool->flush();
    for (std::uint32_t attempt = 1; attempt <= 20; ++attempt) {
      for (auto id : ids) {
        ASSERT_TRUE(spool->mark(id, 1, {recipient_state::deferred, attempt, 9000 + attempt})
                        .ok());
      }
      spool->flush();
    }
    EXPECT_GE(spool->core().stats().journal_snapshots, 3u);
    EXPECT_LE(count_files(config.directory, "journal-"), 2u);
  }
  auto spool = open_spool(config);
  for (auto id : ids) {
    ASSERT_NE(spool->core().find(id), nullptr);
    EXPECT_EQ(spool->core().find(id)->recipients[1],
              (recipient_status{recipient_state::deferred, 20, 9020}));
  }
}

// Operator actions (store::act): journaled as action records, synced with the very next
// flight even while commits let marks lag, restored by recovery and by every snapshot.
TEST(spool_store, operator_actions_are_durable_at_once_and_survive_restarts) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::vector<message_id> ids;
  {
    auto spool = open_spool(config);
    for (std::uint32_t i = 0; i < 5; ++i) ids.push_back(commit_one(*spool, 1000, 2, i));
    spool->flush();
    (void)spool->take_events();
    EXPECT_EQ(spool->core().act(0x1234, message_action::hold, 5).error(), ENOENT);
    ASSERT_TRUE(spool->mark(ids[2], 0, {recipient_state::delivered, 1, 0}).ok());
    commit_one(*spool, 1001, 1, 99);  // a commit in the same batch: marks alone would lag
    const auto held = spool->core().act(ids[0], message_action::hold, 2000);
    ASSERT_TRUE(held.ok());
    ASSERT_TRUE(spool->core().act(ids[1], message_action::hold, 2000).ok());
    ASSERT_TRUE(spool->core().act(ids[1], message_action::release, 2001).ok());
    ASSERT_TRUE(spool->core().act(ids[2], message_action::remove, 2002).ok());
    ASSERT_TRUE(spool->core().act(ids[3], message_action::bounce, 2003).ok());
    ASSERT_TRUE(spool->core().act(ids[4], message_action::remove, 2004).ok());
    EXPECT_EQ(spool->core().find(ids[0])->flags, message_flag_held);
    EXPECT_EQ(spool->core().find(ids[2])->status, message_status::queued);  // until marked
    // The deleted message becomes final as its recipients are marked deleted.
    ASSERT_TRUE(spool->mark(ids[4], 0, {recipient_state::deleted, 0, 0}).ok());
    ASSERT_TRUE(spool->mark(ids[4], 1, {recipient_state::deleted, 0, 0}).ok());
    EXPECT_EQ(spool->core().find(ids[4])->status, message_status::final);
    spool->flush();
    bool durable = false;
    for (const auto& item : spool->take_events())
      durable |= item.kind == event_kind::marked && item.ticket == held.value() && item.error == 0;
    EXPECT_TRUE(durable) << "an action's ticket must not wait for later flights";
  }
  for (int restart = 0; restart < 2; ++restart) {  // the second reads the start-up snapshot
    auto spool = open_spool(config);
    EXPECT_TRUE(spool->report().problems.empty()) << spool->report().problems.front();
    EXPECT_EQ(spool->core().find(ids[0])->flags, message_flag_held);
    EXPECT_EQ(spool->core().find(ids[0])->status, message_status::queued);
    EXPECT_EQ(spool->core().find(ids[1])->flags, 0);
    const message_entry* deleted = spool->core().find(ids[2]);
    ASSERT_NE(deleted, nullptr);
    EXPECT_EQ(deleted->status, message_status::final);  // never routed again
    EXPECT_EQ(deleted->recipients[0].state, recipient_state::delivered);
    EXPECT_EQ(deleted->recipients[1].state, recipient_state::deleted);
    EXPECT_EQ(spool->core().find(ids[3])->flags, message_flag_bounce);
    const message_entry* gone = spool->core().find(ids[4]);
    EXPECT_TRUE(gone == nullptr || gone->status == message_status::final);
    if (restart == 0) {
      EXPECT_GE(spool->report().action_records, 6u);
    }
  }
}

// An operator's bounce reason (ringmta-ctl bounce --reason) is journaled with the bounce, so a
// bounce carried out after a crash still gives it in its DSNs: restored by recovery, by the
// start-up snapshot and by a compaction's; the last one given wins; a later delete drops it.
TEST(spool_store, bounce_reasons_survive_restarts_and_snapshots) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.journal_bytes = 16u << 10;  // compacted after a few hundred marks
  std::vector<message_id> ids;
  {
    auto spool = open_spool(config);
    for (std::uint32_t i = 0; i < 4; ++i) ids.push_back(commit_one(*spool, 1000, 2, i));
    spool->flush();
    (void)spool->take_events();
    auto& core = spool->core();
    EXPECT_EQ(core.act(ids[0], message_action::hold, 5, "not a bounce").error(), EINVAL);
    EXPECT_EQ(core.act(ids[0], message_action::bounce, 5,
                       std::string(bounce_reason_bytes_max + 1, 'x')).error(), EINVAL);
    EXPECT_EQ(core.find(ids[0])->flags, 0) << "a refused action changes nothing";
    ASSERT_TRUE(core.act(ids[0], message_action::bounce, 2000, "first try").ok());
    ASSERT_TRUE(core.act(ids[0], message_action::bounce, 2001, "policy: mailbox retired").ok());
    ASSERT_TRUE(core.act(ids[1], message_action::bounce, 2002).ok());  // no reason
    ASSERT_TRUE(core.act(ids[2], message_action::bounce, 2003, "then deleted").ok());
    ASSERT_TRUE(core.act(ids[2], message_action::remove, 2004).ok());
    ASSERT_TRUE(core.act(ids[3], message_action::bounce, 2005,
                         std::string(bounce_reason_bytes_max, 'r')).ok());
    EXPECT_EQ(core.bounce_reason(ids[0]), "policy: mailbox retired");
    spool->flush();
  }
  for (int restart = 0; restart < 3; ++restart) {  // 2nd: the start-up snapshot; 3rd: compaction's
    auto spool = open_spool(config);
    EXPECT_TRUE(spool->report().problems.empty()) << spool->report().problems.front();
    auto& core = spool->core();
    EXPECT_EQ(core.find(ids[0])->flags, message_flag_bounce);
    EXPECT_EQ(core.bounce_reason(ids[0]), "policy: mailbox retired");
    EXPECT_EQ(core.bounce_reason(ids[1]), "");
    EXPECT_EQ(core.bounce_reason(ids[2]), "") << "a deleted message is never bounced";
    EXPECT_EQ(core.bounce_reason(ids[3]), std::string(bounce_reason_bytes_max, 'r'));
    if (restart == 0) {
      EXPECT_EQ(spool->report().reason_records, 4u);
    }
    if (restart == 1) {  // marks until the journal is compacted while the store runs
      const auto before = core.stats().journal_snapshots;
      for (std::uint32_t attempt = 1; core.stats().journal_snapshots == before; ++attempt) {
        ASSERT_LT(attempt, 5000u) << "no compaction";
        ASSERT_TRUE(spool->mark(ids[1], 1, {recipient_state::deferred, attempt, 9000}).ok());
        spool->flush();
      }
    }
  }
}

destination_pause make_pause(std::string name, pause_kind kind, std::int64_t until_ms) {
  destination_pause value;
  value.destination = std::move(name);
  value.kind = kind;
  value.until_ms = until_ms;
  return value;
}

std::map<std::string, destination_pause> pauses_by_name(store& core, std::int64_t now_ms) {
  std::map<std::string, destination_pause> out;
  for (auto& pause : core.live_pauses(now_ms)) out[pause.destination] = pause;
  return out;
}

// A reply rule's pause or throttle is one journal record per firing (issue 16): recovered
// after a restart (the last one of a destination wins, a lift removes it), carried by the
// start-up snapshot and by a compaction's, which drop the expired ones.
TEST(spool_store, destination_pauses_survive_restarts_and_compactions) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.journal_bytes = 16u << 10;  // compacted after a few hundred marks
  destination_pause throttled = make_pause("b.example@ip2", pause_kind::throttle, 20'000);
  throttled.connections_max = 2;
  throttled.messages_per_second_max = 1.5;
  const destination_pause longest =
      make_pause(std::string(destination_name_bytes_max, 'n'), pause_kind::suspend, 30'000);
  message_id id = 0;
  {
    auto spool = open_spool(config);
    id = commit_one(*spool, 1000, 2, 0);
    auto& core = spool->core();
    EXPECT_EQ(core.pause_destination(make_pause("", pause_kind::suspend, 9), 0).error(), EINVAL);
    auto too_long = longest;
    too_long.destination += 'n';
    EXPECT_EQ(core.pause_destination(too_long, 0).error(), EINVAL);
    ASSERT_TRUE(core.pause_destination(make_pause("a.example", pause_kind::suspend, 10'000), 0).ok());
    ASSERT_TRUE(core.pause_destination(throttled, 0).ok());
    ASSERT_TRUE(core.pause_destination(make_pause("c.example", pause_kind::suspend, 500), 0).ok());
    ASSERT_TRUE(core.pause_destination(make_pause("d.example", pause_kind::suspend, 9000), 0).ok());
    ASSERT_TRUE(core.pause_destination(make_pause("d.example", pause_kind::lifted, 0), 0).ok());
    ASSERT_TRUE(core.pause_destination(make_pause("a.example", pause_kind::suspend, 12'000), 0).ok());
    ASSERT_TRUE(core.pause_destination(longest, 0).ok());
    spool->flush();
  }
  for (int restart = 0; restart < 3; ++restart) {
    auto spool = open_spool(config);
    EXPECT_TRUE(spool->report().problems.empty()) << spool->report().problems.front();
    auto& core = spool->core();
    if (restart == 0) {
      EXPECT_EQ(spool->report().pause_records, 7u);
      EXPECT_EQ(pauses_by_name(core, 0).count("c.example"), 1u) << "recovery has no clock";
    }
    if (restart == 2) {
      EXPECT_EQ(spool->report().pause_records, 3u) << "the compaction dropped the expired one";
    }
    auto live = pauses_by_name(core, 1000);  // c.example has expired: forgotten
    ASSERT_EQ(live.size(), 3u);
    EXPECT_EQ(live["a.example"], make_pause("a.example", pause_kind::suspend, 12'000));
    EXPECT_EQ(live["b.example@ip2"], throttled);
    EXPECT_EQ(live[longest.destination], longest);
    if (restart == 1) {  // marks until the journal is compacted while the store runs
      const auto before = core.stats().journal_snapshots;
      for (std::uint32_t attempt = 1; core.stats().journal_snapshots == before; ++attempt) {
        ASSERT_LT(attempt, 5000u) << "no compaction";
        ASSERT_TRUE(spool->mark(id, 1, {recipient_state::deferred, attempt, 9000}).ok());
        spool->flush();
      }
    }
  }
}

// A suspension and a throttle of one destination (two reply rules) are two pauses: the later
// record of one kind must not replace the other's, in memory, in a snapshot or at recovery
// (a throttle firing during a suspension made a restart send the suspended mail at once). A
// lift (an operator's resume) ends both.
TEST(spool_store, a_suspension_and_a_throttle_of_one_destination_are_both_kept) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  destination_pause throttled = make_pause("a.example", pause_kind::throttle, 20'000);
  throttled.connections_max = 1;
  const auto suspended = make_pause("a.example", pause_kind::suspend, 30'000);
  const auto kinds = [](store& core) {
    std::map<pause_kind, destination_pause> out;
    for (auto& pause : core.live_pauses(1000)) out[pause.kind] = pause;
    return out;
  };
  {
    auto spool = open_spool(config);
    ASSERT_TRUE(spool->core().pause_destination(suspended, 0).ok());
    ASSERT_TRUE(spool->core().pause_destination(throttled, 0).ok());
    EXPECT_EQ(kinds(spool->core()).size(), 2u);
    ASSERT_TRUE(spool->core().pause_destination(
        make_pause("b.example", pause_kind::throttle, 40'000), 0).ok());
    ASSERT_TRUE(spool->core().pause_destination(
        make_pause("b.example", pause_kind::suspend, 40'000), 0).ok());
    ASSERT_TRUE(spool->core().pause_destination(
        make_pause("b.example", pause_kind::lifted, 0), 0).ok());
    spool->flush();
  }
  for (int restart = 0; restart < 2; ++restart) {  // the journal's records, then the snapshot
    auto spool = open_spool(config);
    auto live = kinds(spool->core());
    ASSERT_EQ(live.size(), 2u) << "restart " << restart;
    EXPECT_EQ(live[pause_kind::suspend], suspended);
    EXPECT_EQ(live[pause_kind::throttle], throttled);
  }
  auto spool = open_spool(config);
  ASSERT_TRUE(spool->core().pause_destination(make_pause("a.example", pause_kind::lifted, 0),
                                              0).ok());
  EXPECT_TRUE(spool->core().live_pauses(1000).empty());
}

// A torn last pause record is lost (that firing's pause ends at the crash, as before the
// record existed); the ones before it stand.
TEST(spool_store, torn_pause_record_keeps_the_earlier_ones) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  {
    auto spool = open_spool(config);
    ASSERT_TRUE(spool->core().pause_destination(
        make_pause("a.example", pause_kind::suspend, 10'000), 0).ok());
    spool->flush();
    ASSERT_TRUE(spool->core().pause_destination(
        make_pause("a.example", pause_kind::suspend, 50'000), 0).ok());
    ASSERT_TRUE(spool->core().pause_destination(
        make_pause("z.example", pause_kind::suspend, 50'000), 0).ok());
    spool->flush();
  }
  // Journals are preallocated: tear the last record where it ends (recovery says where), as a
  // crash in the middle of its write would.
  std::uint64_t end = 0;
  std::uint32_t journal = 0;
  {
    auto recovered = recover(dir.shard(0), 0);
    ASSERT_TRUE(recovered.ok());
    for (const auto& file : recovered.value().journals) {
      if (file.valid_bytes > end) std::tie(end, journal) = std::pair(file.valid_bytes, file.id);
    }
  }
  {
    const std::string path = dir.shard(0) + "/" + journal_file_name(journal);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    const char flipped = 0x5a;
    ASSERT_EQ(::pwrite(fd, &flipped, 1, static_cast<off_t>(end - 1)), 1);
    ::close(fd);
  }
  auto spool = open_spool(config);
  EXPECT_EQ(spool->report().torn_tails, 1u);
  auto live = pauses_by_name(spool->core(), 0);
  ASSERT_EQ(live.size(), 1u) << "z.example's record was torn";
  EXPECT_EQ(live["a.example"].until_ms, 50'000) << "a.example's second record was whole";
}

TEST(spool_store, ids_unique_across_restarts_and_shards) {
  temp_dir dir;
  std::set<message_id> seen;
  for (int restart = 0; restart < 3; ++restart) {
    for (std::uint32_t shard = 0; shard < 2; ++shard) {
      auto spool = open_spool(small_config(dir.shard(shard), shard));
      // The clock steps back on every restart.
      const std::int64_t now = 1'800'000'000 - restart * 3600;
      for (int i = 0; i < 50; ++i) {
        auto handle = spool->begin(now).value();
        const message_id id = spool->core().id_of(handle);
        EXPECT_TRUE(seen.insert(id).second) << format_message_id(id).data();
        if (i % 2 == 0) {
          ASSERT_TRUE(spool->commit(handle, make_envelope(id, 1, i)).ok());
        } else {
          spool->core().abort(handle);
        }
      }
      spool->flush();
    }
  }
  EXPECT_EQ(seen.size(), 300u);
}

}  // namespace
}  // namespace ringmta::spool
