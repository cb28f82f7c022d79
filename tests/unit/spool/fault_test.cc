// The spool under faults: a recording driver that checks the durability contract, writes and
// syncs that fail (ENOSPC, EIO), torn tails, flipped bytes, garbage files, a full tmpfs.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <functional>
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

// Runs a store's operations one at a time in random order (any order of what the store has
// handed out is legal), optionally failing some, and checks every durable ticket against what
// was written and synced so far.
class recording_driver {
 public:
  explicit recording_driver(store& target, std::uint32_t seed = 1)
      : _store(target), _random(seed) {}

  std::function<std::int64_t(const operation&)> fault;  // < 0: fail the op with that result
  std::vector<event> events;
  std::map<int, std::string> fd_paths;  // files created so far
  std::size_t durable_checked = 0;

  bool run_one() {
    pull();
    std::vector<std::size_t> ready;  // linked ops wait for their predecessor (IOSQE_IO_LINK)
    for (std::size_t i = 0; i < _queue.size(); ++i) {
      if (_queue[i].after == 0 || _outcomes.count(_queue[i].after)) ready.push_back(i);
    }
    if (ready.empty()) return false;
    const std::size_t pick = ready[_random() % ready.size()];
    const queued_op entry = _queue[pick];
    const operation& op = entry.op;
    _queue.erase(_queue.begin() + static_cast<std::ptrdiff_t>(pick));
    // A linked op starts when its predecessor is done: that is when a sync "is issued".
    const std::uint64_t issued = entry.after != 0 ? _step : entry.issued;
    std::int64_t result = fault ? fault(op) : 0;
    if (entry.after != 0 && !_outcomes[entry.after]) result = -ECANCELED;
    if (result >= 0) result = perform(op);
    _outcomes[entry.serial] = result >= 0 && (op.kind != operation_kind::write ||
                                              static_cast<std::uint64_t>(result) == op.bytes);
    if (result >= 0 && op.kind == operation_kind::create_file) {
      fd_paths[static_cast<int>(result)] = op.path;
    }
    if (result >= 0 && op.kind == operation_kind::write) {
      _writes.push_back({op.fd, op.offset, op.bytes, _step});
    }
    if (result >= 0 && op.kind == operation_kind::datasync) _syncs.push_back({op.fd, issued});
    ++_step;
    _store.complete(op.token, result);
    event item;
    while (_store.next_event(item)) {
      if (item.kind == event_kind::committed && item.error == 0) check_durable(item.id);
      events.push_back(item);
    }
    return true;
  }
  void run() {
    while (run_one()) {
    }
  }
  // Performs everything but datasyncs, which stay queued.
  void run_writes_only() {
    for (;;) {
      pull();
      auto found = std::find_if(_queue.begin(), _queue.end(), [&](const queued_op& queued) {
        return queued.op.kind != operation_kind::datasync &&
               (queued.after == 0 || _outcomes.count(queued.after));
      });
      if (found == _queue.end()) return;
      const queued_op entry = *found;
      const operation op = entry.op;
      _queue.erase(found);
      const std::int64_t result = perform(op);
      _outcomes[entry.serial] = result >= 0;
      if (op.kind == operation_kind::write) _writes.push_back({op.fd, op.offset, op.bytes, _step});
      ++_step;
      _store.complete(op.token, result);
      event item;
      while (_store.next_event(item)) events.push_back(item);
    }
  }
  std::size_t queued_syncs() const {
    return static_cast<std::size_t>(std::count_if(_queue.begin(), _queue.end(), [](auto& q) {
      return q.op.kind == operation_kind::datasync;
    }));
  }

 private:
  struct write_done {
    int fd;
    std::uint64_t offset, bytes, step;
  };
  struct sync_done {
    int fd;
    std::uint64_t issued_step;
  };

  void pull() {
    operation op;
    while (_store.next_operation(op)) {
      const std::uint64_t serial = ++_serial;
      _queue.push_back({op, _step, serial, _previous_linked ? serial - 1 : 0});
      _previous_linked = op.link_next;
    }
  }
  bool covered(int fd, std::uint64_t offset, std::uint64_t bytes) const {
    for (const auto& w : _writes) {
      if (w.fd != fd || w.offset > offset || offset + bytes > w.offset + w.bytes) continue;
      for (const auto& s : _syncs) {
        if (s.fd == fd && s.issued_step > w.step) return true;
      }
    }
    return false;
  }
  void check_durable(message_id id) {
    const message_entry* entry = _store.find(id);
    ASSERT_NE(entry, nullptr);
    EXPECT_TRUE(covered(_store.segment_fd(entry->commit_segment), entry->commit_offset,
                        entry->commit_bytes))
        << "commit record of " << format_message_id(id).data() << " not synced";
    auto stored = _store.read(id);
    ASSERT_TRUE(stored.ok());
    for (const auto& slice : stored.value().body) {
      EXPECT_TRUE(covered(slice.fd, slice.offset - 32, slice.length + 32))
          << "data of " << format_message_id(id).data() << " not synced";
    }
    ++durable_checked;
  }

  store& _store;
  std::mt19937 _random;
  struct queued_op {
    operation op;
    std::uint64_t issued;  // step when the store handed it out
    std::uint64_t serial;
    std::uint64_t after;   // serial of the op it is linked behind, 0: none
  };
  std::vector<queued_op> _queue;
  std::map<std::uint64_t, bool> _outcomes;  // serial -> succeeded
  std::uint64_t _serial = 0;
  bool _previous_linked = false;
  std::vector<write_done> _writes;
  std::vector<sync_done> _syncs;
  std::uint64_t _step = 0;
};

// A fault for recording_driver: while `count` > 0, a datasync is performed (its bytes reach
// the disk) and then reported failed with EIO, as the kernel may; each one lowers `count`.
std::function<std::int64_t(const operation&)> syncs_that_wrote_but_failed(int& count) {
  return [&count](const operation& op) -> std::int64_t {
    if (op.kind != operation_kind::datasync || count <= 0) return 0;
    --count;
    perform(op);
    return -EIO;
  };
}

std::unique_ptr<store> open_store(const store_config& config) {
  ::mkdir(config.directory.c_str(), 0750);
  auto recovered = recover(config.directory, config.shard);
  EXPECT_TRUE(recovered.ok());
  return std::make_unique<store>(config, std::move(recovered.value()));
}

struct sent {
  envelope value;
  std::string body;
};

// Begins, appends (running the driver on backpressure) and commits one message.
core::result<std::uint64_t> send(store& target, recording_driver& driver, std::uint32_t seed,
                                 std::size_t bytes, std::map<message_id, sent>& log) {
  auto handle = target.begin(1000);
  if (!handle) return core::fail(handle.error());
  const std::string body = make_body(bytes, seed);
  std::string_view rest(body);
  for (int stall = 0; !rest.empty() && stall < 100;) {
    auto taken = target.append(handle.value(), rest);
    if (!taken) {
      target.abort(handle.value());
      return core::fail(taken.error());
    }
    rest.remove_prefix(taken.value());
    if (taken.value() == 0) {
      ++stall;
      target.flush();
      driver.run();
    }
  }
  const message_id id = target.id_of(handle.value());
  auto value = make_envelope(id, 2, seed);
  for (int attempt = 0;; ++attempt) {
    auto ticket = target.commit(handle.value(), value);
    if (ticket.ok()) log[id] = {value, body};
    if (ticket.ok() || ticket.error() != EAGAIN || attempt > 50) return ticket;
    target.flush();
    driver.run();
  }
}

void expect_exactly(const store_config& config, const std::map<message_id, sent>& expected) {
  auto recovered = recover(config.directory, config.shard);
  ASSERT_TRUE(recovered.ok());
  std::set<message_id> found;
  for (const auto& entry : recovered.value().messages) found.insert(entry.id);
  std::set<message_id> wanted;
  for (const auto& [id, message] : expected) wanted.insert(id);
  EXPECT_EQ(found, wanted);
  auto reopened = std::make_unique<store>(config, std::move(recovered.value()));
  run_operations(*reopened);
  for (const auto& [id, message] : expected) {
    auto stored = reopened->read(id);
    ASSERT_TRUE(stored.ok()) << stored.error_text();
    EXPECT_EQ(stored.value().envelope, message.value);
    EXPECT_EQ(read_body(stored.value()), message.body);
  }
}

TEST(spool_faults, no_ticket_is_durable_before_its_data_and_record_are_synced) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.segment_bytes = 256u << 10;  // rollovers inside batches
  std::map<message_id, sent> log;
  auto target = open_store(config);
  recording_driver driver(*target, 7);
  driver.run();
  std::mt19937 random(3);
  for (std::uint32_t round = 0; round < 30; ++round) {
    for (std::uint32_t i = 0; i < 1 + random() % 20; ++i) {
      ASSERT_TRUE(send(*target, driver, round * 100 + i, random() % 40000, log).ok());
    }
    target->flush();
    // Writes may complete, but while the sync is held back no ticket may be reported.
    driver.run_writes_only();
    if (driver.queued_syncs() > 0) {
      for (const auto& item : driver.events) {
        EXPECT_FALSE(item.kind == event_kind::committed && item.error == 0 &&
                     target->find(item.id) == nullptr);
      }
    }
    driver.run();
  }
  std::size_t durable = 0;
  for (const auto& item : driver.events) durable += item.error == 0 ? 1 : 0;
  EXPECT_EQ(durable, log.size());
  EXPECT_EQ(driver.durable_checked, log.size());
  target.reset();
  expect_exactly(config, log);
}

TEST(spool_faults, held_sync_holds_every_ticket) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  std::map<message_id, sent> log;
  auto target = open_store(config);
  recording_driver driver(*target);
  driver.run();
  for (std::uint32_t i = 0; i < 10; ++i) ASSERT_TRUE(send(*target, driver, i, 1000, log).ok());
  target->flush();
  driver.run_writes_only();
  EXPECT_GT(driver.queued_syncs(), 0u);
  EXPECT_TRUE(driver.events.empty());
  driver.run();
  EXPECT_EQ(driver.events.size(), 10u);
}

TEST(spool_faults, failed_writes_fail_the_batch_and_the_spool_recovers_when_space_returns) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.segment_bytes = 128u << 10;
  std::map<message_id, sent> good;
  std::map<message_id, sent> failed;
  auto target = open_store(config);
  recording_driver driver(*target);
  bool disk_full = false;
  driver.fault = [&](const operation& op) -> std::int64_t {
    const bool writes = op.kind == operation_kind::write || op.kind == operation_kind::create_file;
    return disk_full && writes ? -ENOSPC : 0;
  };
  driver.run();
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(send(*target, driver, i, 3000, good).ok());
  target->flush();
  driver.run();
  // A message whose first bytes are in the batch that will fail.
  auto straddling = target->begin(1000).value();
  ASSERT_EQ(target->append(straddling, make_body(500, 99)).value(), 500u);

  disk_full = true;
  std::size_t failed_events = 0;
  for (std::uint32_t i = 10; i < 40; ++i) {
    auto ticket = send(*target, driver, i, 3000, failed);
    if (!ticket.ok()) {
      EXPECT_EQ(ticket.error(), ENOSPC);
    }
    target->flush();
    driver.run();
  }
  for (const auto& item : driver.events) {
    if (item.error != 0) {
      EXPECT_EQ(item.error, ENOSPC);
      ++failed_events;
    }
  }
  EXPECT_GT(failed_events, 0u);
  auto late = target->append(straddling, "more\r\n");
  EXPECT_FALSE(late.ok());
  target->abort(straddling);

  disk_full = false;
  target->flush();  // retries the segment creation
  driver.run();
  for (std::uint32_t i = 50; i < 60; ++i) ASSERT_TRUE(send(*target, driver, i, 3000, good).ok());
  target->flush();
  driver.run();
  std::size_t durable = 0;
  for (const auto& item : driver.events) durable += item.error == 0 ? 1 : 0;
  EXPECT_EQ(durable, good.size());
  target.reset();
  expect_exactly(config, good);
}

TEST(spool_faults, failed_sync_voids_the_batch_even_if_its_bytes_reached_the_disk) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  std::map<message_id, sent> good;
  std::map<message_id, sent> failed;
  auto target = open_store(config);
  recording_driver driver(*target);
  int sync_failures = 0;
  driver.fault = syncs_that_wrote_but_failed(sync_failures);
  driver.run();
  for (std::uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(send(*target, driver, i, 2000, good).ok());
  target->flush();
  driver.run();
  sync_failures = 2;  // the segment sync (and the journal's, if one is in the flight)
  // Body data of a message still being received goes out in unsynced full batches; the failing
  // sync covers them, so that message fails too.
  auto receiving = target->begin(1000).value();
  ASSERT_EQ(target->append(receiving, make_body(600'000, 3)).value(), 600'000u);
  driver.run();
  for (std::uint32_t i = 10; i < 15; ++i) {
    // One large message: several batches written without a sync before its commit.
    ASSERT_TRUE(send(*target, driver, i, i == 12 ? 1'000'000 : 2000, failed).ok());
  }
  target->flush();
  driver.run();
  sync_failures = 0;
  EXPECT_FALSE(target->commit(receiving, make_envelope(target->id_of(receiving), 1, 3)).ok());
  for (std::uint32_t i = 20; i < 25; ++i) ASSERT_TRUE(send(*target, driver, i, 2000, good).ok());
  target->flush();
  driver.run();
  std::size_t errors = 0;
  for (const auto& item : driver.events) errors += item.error == EIO ? 1 : 0;
  EXPECT_EQ(errors, 5u);
  target.reset();
  auto recovered = recover(config.directory, 0);
  ASSERT_TRUE(recovered.ok());
  EXPECT_GE(recovered.value().report.voided_messages, 1u);  // on disk, yet not recovered
  expect_exactly(config, good);
}

// Builds a spool whose newest segment ends with a last batch of a few messages; returns the
// messages, their record extents and the segment path.
struct torn_setup {
  std::map<message_id, sent> all;
  std::set<message_id> last_batch;
  std::map<message_id, std::vector<std::pair<std::uint64_t, std::uint64_t>>> records;
  std::map<message_id, std::uint64_t> commit_end;
  std::string segment_path;
  std::uint64_t last_batch_start = ~0ull;
  std::uint64_t end = 0;
};

// `messages` committed in one batch (bodies of `bytes` + 37 per message), then a last batch
// of three.
torn_setup build_torn_setup(const store_config& config, std::uint32_t messages = 20,
                            std::size_t bytes = 500) {
  torn_setup setup;
  auto spool = sync_spool::open(config);
  EXPECT_TRUE(spool.ok());
  auto& s = *spool.value();
  auto add = [&](std::uint32_t seed, std::size_t bytes, bool two_chunks) {
    auto handle = s.begin(1000).value();
    const std::string body = make_body(bytes, seed);
    const std::size_t half = two_chunks ? bytes / 2 : bytes;
    EXPECT_TRUE(s.append(handle, std::string_view(body).substr(0, half)).ok());
    auto other = s.begin(1000).value();  // interleaved: splits the records
    EXPECT_TRUE(s.append(other, "x\r\n").ok());
    s.core().abort(other);
    EXPECT_TRUE(s.append(handle, std::string_view(body).substr(half)).ok());
    const message_id id = s.core().id_of(handle);
    auto value = make_envelope(id, 1, seed);
    EXPECT_TRUE(s.commit(handle, value).ok());
    setup.all[id] = {value, body};
    return id;
  };
  for (std::uint32_t i = 0; i < messages; ++i) add(i, bytes + i * 37, i % 3 == 0);
  s.flush();
  for (std::uint32_t i = 100; i < 103; ++i) setup.last_batch.insert(add(i, 400, i == 101));
  s.flush();
  for (const auto& [id, message] : setup.all) {
    const message_entry* entry = s.core().find(id);
    auto stored = s.core().read(id);
    EXPECT_TRUE(stored.ok());
    auto& extents = setup.records[id];
    extents.emplace_back(entry->commit_offset, entry->commit_offset + entry->commit_bytes);
    for (const auto& slice : stored.value().body) {
      extents.emplace_back(slice.offset - 32, slice.offset + slice.length);
    }
    setup.commit_end[id] = entry->commit_offset + entry->commit_bytes;
    setup.end = std::max(setup.end, setup.commit_end[id]);
    if (setup.last_batch.count(id) != 0) {
      for (const auto& [from, to] : extents) {
        setup.last_batch_start = std::min(setup.last_batch_start, from);
      }
    }
    setup.segment_path = config.directory + "/" + segment_file_name(entry->commit_segment);
  }
  return setup;
}

std::set<message_id> recovered_ids(const store_config& config) {
  auto recovered = recover(config.directory, 0);
  EXPECT_TRUE(recovered.ok());
  std::set<message_id> ids;
  for (const auto& entry : recovered.value().messages) ids.insert(entry.id);
  return ids;
}

TEST(spool_faults, torn_tail_at_every_byte_of_the_last_batch) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.segment_bytes = 128u << 10;
  const torn_setup setup = build_torn_setup(config);
  ASSERT_LT(setup.last_batch_start, setup.end);
  const int fd = ::open(setup.segment_path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  // Cut from the end downwards: each cut is a crash in the middle of the last batch's write.
  for (std::uint64_t cut = setup.end; cut + 1 > setup.last_batch_start; --cut) {
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(cut)), 0);
    std::set<message_id> expected;
    for (const auto& [id, end] : setup.commit_end) {
      if (end <= cut) expected.insert(id);
    }
    ASSERT_EQ(recovered_ids(config), expected) << "cut at " << cut;
  }
  ::close(fd);
  std::map<message_id, sent> survivors;
  for (const auto& [id, message] : setup.all) {
    if (setup.last_batch.count(id) == 0) survivors[id] = message;
  }
  expect_exactly(config, survivors);
}

TEST(spool_faults, flipped_bytes_lose_only_the_message_they_hit) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.segment_bytes = 128u << 10;
  const torn_setup setup = build_torn_setup(config);
  const int fd = ::open(setup.segment_path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::mt19937 random(11);
  for (int round = 0; round < 400; ++round) {
    const std::uint64_t at = 72 + random() % (setup.end - 72);
    char byte;
    ASSERT_EQ(::pread(fd, &byte, 1, static_cast<off_t>(at)), 1);
    const char flipped = static_cast<char>(byte ^ (1 + random() % 255));
    ASSERT_EQ(::pwrite(fd, &flipped, 1, static_cast<off_t>(at)), 1);
    std::set<message_id> expected;
    for (const auto& [id, extents] : setup.records) {
      const bool hit = std::any_of(extents.begin(), extents.end(),
                                   [&](const auto& e) { return at >= e.first && at < e.second; });
      if (!hit) expected.insert(id);
    }
    ASSERT_EQ(recovered_ids(config), expected) << "flip at " << at;
    ASSERT_EQ(::pwrite(fd, &byte, 1, static_cast<off_t>(at)), 1);
  }
  ::close(fd);
  EXPECT_EQ(recovered_ids(config).size(), setup.all.size());
}

// Zeros over more than two of recovery's 1 MiB read windows in the middle of a segment (so at
// least one window reads all zeros wherever the resync starts), written as zeros
// (a torn write) or as a hole (punched): recovery resyncs past it (SEEK_DATA after a window of
// zeros) and finds every message behind it; only the ones the zeros hit are lost.
void zeros_mid_segment_lose_only_what_they_hit(bool punched) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  config.segment_bytes = 8u << 20;
  const torn_setup setup = build_torn_setup(config, 120, 40u << 10);  // ~5 MB of records
  const std::uint64_t from = 512u << 10;
  const std::uint64_t to = from + (3u << 20);  // page-aligned for the hole
  ASSERT_LT(to + (256u << 10), setup.end) << "records behind the zeros";
  const int fd = ::open(setup.segment_path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  if (punched) {
    ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(from), static_cast<off_t>(to - from)), 0);
  } else {
    const std::string zeros(to - from, '\0');
    ASSERT_EQ(::pwrite(fd, zeros.data(), zeros.size(), static_cast<off_t>(from)),
              static_cast<ssize_t>(zeros.size()));
  }
  ::close(fd);
  std::set<message_id> expected;
  std::size_t behind = 0;
  for (const auto& [id, extents] : setup.records) {
    const bool hit = std::any_of(extents.begin(), extents.end(),
                                 [&](const auto& e) { return e.first < to && e.second > from; });
    if (!hit) expected.insert(id);
    behind += !hit && extents.front().first >= to;
  }
  EXPECT_GE(behind, 10u);
  EXPECT_LT(expected.size(), setup.all.size());
  EXPECT_EQ(recovered_ids(config), expected);
}

TEST(spool_faults, zeros_written_mid_segment_lose_only_what_they_hit) {
  zeros_mid_segment_lose_only_what_they_hit(false);
}

TEST(spool_faults, hole_punched_mid_segment_loses_only_what_it_hit) {
  zeros_mid_segment_lose_only_what_they_hit(true);
}

TEST(spool_faults, garbage_files_are_reported_never_fatal) {
  temp_dir dir;
  auto config = small_config(dir.shard(0));
  const torn_setup setup = build_torn_setup(config);
  std::mt19937 random(5);
  auto write_file = [&](const std::string& name, const std::string& bytes) {
    const int fd = ::open((config.directory + "/" + name).c_str(), O_CREAT | O_TRUNC | O_WRONLY,
                          0640);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  };
  for (int round = 0; round < 30; ++round) {
    std::string junk(random() % 5000, '\0');
    for (auto& c : junk) c = static_cast<char>(random());
    for (std::size_t i = 0; i + 4 < junk.size(); i += 1 + random() % 200) {
      std::memcpy(junk.data() + i, "RMSR", 4);  // many false magics
    }
    write_file(segment_file_name(0x1000 + round), junk);
    write_file(journal_file_name(0x2000 + round), junk);
  }
  write_file("segment-zzzz.log", "ignored name");
  write_file(segment_file_name(0x3000), std::string(100, '\0'));  // never initialised
  auto recovered = recover(config.directory, 0);
  ASSERT_TRUE(recovered.ok());
  EXPECT_GE(recovered.value().report.unreadable_files, 50u);
  EXPECT_FALSE(recovered.value().report.problems.empty());
  EXPECT_EQ(recovered.value().messages.size(), setup.all.size());
  // The store starts on top of the damage and keeps serving; new files get fresh ids.
  auto spool = sync_spool::open(config);
  ASSERT_TRUE(spool.ok());
  auto handle = spool.value()->begin(2000).value();
  ASSERT_TRUE(spool.value()->append(handle, "hi\r\n").ok());
  const message_id id = spool.value()->core().id_of(handle);
  ASSERT_TRUE(spool.value()->commit(handle, make_envelope(id, 1, 1)).ok());
  spool.value()->flush();
  EXPECT_EQ(spool.value()->take_events().back().error, 0);
  EXPECT_FALSE(std::filesystem::exists(config.directory + "/" + segment_file_name(0x3000)));
}

void full_tmpfs_fails_tickets_then_serves_again(bool preallocate) {
  temp_dir dir;
  const std::string mount_point = dir.path() + "/tiny";
  ::mkdir(mount_point.c_str(), 0750);
  if (::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << std::strerror(errno);
    return;
  }
  struct unmount_at_exit {
    std::string path;
    ~unmount_at_exit() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};
  auto config = small_config(shard_directory(mount_point, 0));
  config.segment_bytes = 128u << 10;
  config.journal_bytes = 64u << 10;
  config.preallocate = preallocate;
  std::map<message_id, sent> good;
  std::map<message_id, sent> lost;
  {
    auto target = open_store(config);
    recording_driver driver(*target);
    driver.run();
    for (std::uint32_t i = 0; i < 20; ++i) ASSERT_TRUE(send(*target, driver, i, 1000, good).ok());
    target->flush();
    driver.run();
    // Fill the filesystem.
    const std::string filler = mount_point + "/filler";
    const int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY, 0640);
    ASSERT_GE(fd, 0);
    const std::string block(4096, 'f');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    ::close(fd);
    std::size_t refused = 0;
    for (std::uint32_t i = 100; i < 400; ++i) {
      auto ticket = send(*target, driver, i, 1000, lost);
      refused += ticket.ok() ? 0 : 1;
      target->flush();
      driver.run();
    }
    std::size_t failed = refused;
    for (const auto& item : driver.events) failed += item.error != 0 ? 1 : 0;
    EXPECT_GT(failed, 0u);
    for (const auto& item : driver.events) {
      if (item.error == 0) continue;
      lost.erase(item.id);
    }
    // Whatever was acknowledged while the disk filled is good.
    for (const auto& item : driver.events) {
      if (item.error == 0 && lost.count(item.id) != 0) {
        good[item.id] = lost[item.id];
        lost.erase(item.id);
      }
    }
    ASSERT_EQ(::unlink(filler.c_str()), 0);
    target->flush();
    driver.run();
    for (std::uint32_t i = 500; i < 520; ++i) {
      ASSERT_TRUE(send(*target, driver, i, 1000, good).ok()) << i;
    }
    target->flush();
    driver.run();
  }
  expect_exactly(config, good);
}

// With preallocation a full disk fails the segment creation; without, the appends' writes.
TEST(spool_faults, full_tmpfs_preallocated) { full_tmpfs_fails_tickets_then_serves_again(true); }
TEST(spool_faults, full_tmpfs_not_preallocated) {
  full_tmpfs_fails_tickets_then_serves_again(false);
}

}  // namespace
}  // namespace ringmta::spool

namespace ringmta::spool {
namespace {

TEST(spool_backpressure, append_takes_no_more_than_the_buffers_hold) {
  test::temp_dir dir;
  auto config = test::small_config(dir.shard(0));
  config.buffered_bytes_max = 512u << 10;
  config.batch_bytes_max = 128u << 10;
  auto target = open_store(config);
  run_operations(*target);  // files created
  auto handle = target->begin(1).value();
  const std::string body = test::make_body(4u << 20, 1);
  // Nothing completes: the store may only buffer up to its limit.
  std::size_t taken = 0;
  for (int i = 0; i < 10; ++i) {
    auto result = target->append(handle, std::string_view(body).substr(taken));
    ASSERT_TRUE(result.ok());
    taken += result.value();
  }
  EXPECT_LE(taken, config.buffered_bytes_max);
  EXPECT_GT(taken, 0u);
  EXPECT_EQ(target->append(handle, std::string_view(body).substr(taken)).value(), 0u);
  // Completions free the buffers; the rest goes in.
  for (int round = 0; round < 100 && taken < body.size(); ++round) {
    run_operations(*target);
    auto result = target->append(handle, std::string_view(body).substr(taken));
    ASSERT_TRUE(result.ok());
    taken += result.value();
  }
  ASSERT_EQ(taken, body.size());
  const message_id id = target->id_of(handle);
  ASSERT_TRUE(target->commit(handle, test::make_envelope(id, 1, 1)).ok());
  target->flush();
  run_operations(*target);
  event item;
  ASSERT_TRUE(target->next_event(item));
  EXPECT_EQ(item.error, 0);
  auto stored = target->read(id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(test::read_body(stored.value()), body);
  // One range per data record (64 KiB here) plus one per segment switch: not one per append.
  EXPECT_LE(stored.value().body.size(), body.size() / config.data_record_bytes_max + 8);
}

TEST(spool_faults, failed_journal_write_is_rewritten_as_a_snapshot) {
  test::temp_dir dir;
  const auto config = test::small_config(dir.shard(0));
  std::map<message_id, sent> log;
  auto target = open_store(config);
  recording_driver driver(*target);
  bool journal_broken = false;
  driver.fault = [&](const operation& op) -> std::int64_t {
    const bool journal = driver.fd_paths[op.fd].find("journal-") != std::string::npos;
    return journal_broken && journal && op.kind == operation_kind::write ? -EIO : 0;
  };
  driver.run();
  for (std::uint32_t i = 0; i < 10; ++i) ASSERT_TRUE(send(*target, driver, i, 500, log).ok());
  target->flush();
  driver.run();
  journal_broken = true;
  std::vector<message_id> ids;
  for (const auto& [id, message] : log) ids.push_back(id);
  for (std::size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(target->mark(ids[i], 0, {recipient_state::delivered, 1, 0}).ok());
  }
  target->flush();
  driver.run();
  std::size_t failed_marks = 0;
  for (const auto& item : driver.events) {
    failed_marks += item.kind == event_kind::marked && item.error == EIO ? 1 : 0;
  }
  EXPECT_EQ(failed_marks, 5u);
  EXPECT_EQ(target->find(ids[0])->recipients[0].state, recipient_state::delivered);
  journal_broken = false;
  ASSERT_TRUE(target->mark(ids[9], 1, {recipient_state::deferred, 2, 777}).ok());
  target->flush();
  driver.run();
  EXPECT_LE(target->stats().journal_snapshots, 4u);  // one try per flush, no storm
  target.reset();
  auto recovered = recover(config.directory, 0);
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(recovered.value().journals.size(), 1u);  // failed attempts were removed
  std::map<message_id, message_entry> entries;
  for (auto& entry : recovered.value().messages) entries[entry.id] = entry;
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(entries[ids[i]].recipients[0].state, recipient_state::delivered) << i;
  }
  EXPECT_EQ(entries[ids[9]].recipients[1],
            (recipient_status{recipient_state::deferred, 2, 777}));
}

TEST(spool_backpressure, commit_without_recipients_is_refused) {
  test::temp_dir dir;
  auto target = open_store(test::small_config(dir.shard(0)));
  run_operations(*target);
  auto handle = target->begin(1).value();
  ASSERT_TRUE(target->append(handle, "x\r\n").ok());
  auto value = test::make_envelope(target->id_of(handle), 0, 1);
  EXPECT_EQ(target->commit(handle, value).error(), EINVAL);
  target->flush();
  run_operations(*target);
  EXPECT_TRUE(target->idle());
}

}  // namespace
}  // namespace ringmta::spool

namespace ringmta::spool {
namespace {

// A journal whose snapshot alone is larger than journal_bytes (many live recipients) must not
// be rewritten at every flush: compaction waits until the journal doubles the last snapshot.
TEST(spool_journal, compaction_does_not_repeat_at_every_flush) {
  test::temp_dir dir;
  auto config = test::small_config(dir.shard(0));
  config.journal_bytes = 4096;
  std::map<message_id, sent> log;
  auto target = open_store(config);
  recording_driver driver(*target);
  driver.run();
  std::uint32_t seed = 0;
  for (int round = 0; round < 60; ++round) {
    std::vector<message_id> fresh;
    for (int i = 0; i < 20; ++i) {
      const auto before = log.size();
      ASSERT_TRUE(send(*target, driver, seed++, 200, log).ok());
      ASSERT_EQ(log.size(), before + 1);
    }
    target->flush();
    driver.run();
    for (auto it = std::prev(log.end(), 20); it != log.end(); ++it) {  // live: deferred
      ASSERT_TRUE(target->mark(it->first, 0, {recipient_state::deferred, 1, 1059}).ok());
    }
    target->flush();
    driver.run();
  }
  // 1,200 live messages make a snapshot far above 4 KiB. With the journal growing linearly,
  // doubling allows about log2(60) snapshots; compacting at every flush would make ~100.
  EXPECT_LE(target->stats().journal_snapshots, 10u);
  target.reset();
  auto recovered = recover(config.directory, 0);
  ASSERT_TRUE(recovered.ok());
  ASSERT_EQ(recovered.value().messages.size(), log.size());
  for (const auto& entry : recovered.value().messages)
    EXPECT_EQ(entry.recipients[0].next_attempt_seconds, 1059) << entry.id;
}

// Failed segment creations (a full disk) retry the same file id, so consecutive segments keep
// consecutive ids: a message's segment mask spans 64 ids from its first segment.
TEST(spool_faults, can_append_waits_for_a_segment_and_fails_fast_without_one) {
  test::temp_dir dir;
  const auto config = test::small_config(dir.shard(0));
  auto target = open_store(config);
  recording_driver driver(*target);
  // The first segment is still being created: appending now would take nothing.
  EXPECT_FALSE(target->can_append(4096));
  driver.run();
  EXPECT_TRUE(target->can_append(4096));
  EXPECT_FALSE(target->can_append(config.buffered_bytes_max + 1));  // back-pressure as before

  test::temp_dir full_dir;
  auto full = open_store(test::small_config(full_dir.shard(0)));
  recording_driver failing(*full);
  failing.fault = [](const operation& op) -> std::int64_t {
    return op.kind == operation_kind::create_file ? -ENOSPC : 0;
  };
  failing.run();
  // No segment can be made: the caller is told at once (452), not left waiting.
  EXPECT_TRUE(full->can_append(4096));
  auto handle = full->begin(1'800'000'000);
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(full->append(handle.value(), "Subject: x\r\n\r\nbody\r\n").error(), ENOSPC);
  full->abort(handle.value());
}

TEST(spool_faults, failed_segment_creations_do_not_use_up_ids) {
  test::temp_dir dir;
  const auto config = test::small_config(dir.shard(0));
  std::map<message_id, sent> log;
  auto target = open_store(config);
  recording_driver driver(*target);
  int failures_left = 0;
  driver.fault = [&](const operation& op) -> std::int64_t {
    if (op.kind != operation_kind::create_file || failures_left == 0) return 0;
    if (std::string(op.path).find("segment-") == std::string::npos) return 0;
    --failures_left;
    return -ENOSPC;
  };
  driver.run();
  failures_left = 200;
  // Fill segments (1 MiB each) while creations fail many times, then let them succeed.
  for (std::uint32_t i = 0; i < 30; ++i) {
    (void)send(*target, driver, i, 100'000, log);
    target->flush();
    driver.run();
    if (i == 15) failures_left = 0;
  }
  ASSERT_TRUE(send(*target, driver, 99, 2'500'000, log).ok());  // spans three segments
  target->flush();
  driver.run();
  target.reset();
  auto recovered = recover(config.directory, 0);
  ASSERT_TRUE(recovered.ok());
  std::vector<std::uint32_t> ids;
  for (const auto& file : recovered.value().segments) ids.push_back(file.id);
  ASSERT_GE(ids.size(), 3u);
  for (std::size_t i = 1; i < ids.size(); ++i) EXPECT_EQ(ids[i], ids[i - 1] + 1) << i;
  std::size_t found = 0;
  for (const auto& entry : recovered.value().messages) found += log.count(entry.id);
  EXPECT_EQ(found, log.size());
}

// Issue 16, sim seed 121: a failed sync voids a commit in segment V through a void_tail record
// placed in the next segment S. S then holds nothing live and would be reclaimed while V lives
// on (it holds a good message): the voided commit came back at the next recovery. S must stay
// while V does, also after a restart (recovery tells the store which segment carries which
// void record).
TEST(spool_faults, void_record_outlives_its_carrier_segment_until_the_voided_segment_goes) {
  temp_dir dir;
  const auto config = small_config(dir.shard(0));
  std::map<message_id, sent> good;
  std::map<message_id, sent> failed;
  auto target = open_store(config);
  recording_driver driver(*target);
  int sync_failures = 0;
  driver.fault = syncs_that_wrote_but_failed(sync_failures);
  driver.run();
  ASSERT_TRUE(send(*target, driver, 1, 2000, good).ok());  // keeps segment V alive
  target->flush();
  driver.run();
  sync_failures = 2;
  ASSERT_TRUE(send(*target, driver, 2, 2000, failed).ok());
  target->flush();
  driver.run();
  sync_failures = 0;
  const message_id voided = failed.begin()->first;
  bool reported_failed = false;
  for (const auto& item : driver.events) {
    reported_failed |= item.kind == event_kind::committed && item.id == voided && item.error != 0;
  }
  ASSERT_TRUE(reported_failed);
  // Segment S (void record + the start of a message spanning into T), then that message is
  // delivered: S holds nothing live, T is current.
  std::map<message_id, sent> spanning;
  ASSERT_TRUE(send(*target, driver, 3, 1'200'000, spanning).ok());
  target->flush();
  driver.run();
  const message_id big = spanning.begin()->first;
  ASSERT_TRUE(target->mark(big, 0, {recipient_state::delivered, 1, 0}).ok());
  ASSERT_TRUE(target->mark(big, 1, {recipient_state::delivered, 1, 0}).ok());
  target->flush();
  driver.run();
  // More segments: each creation looks for segments to reclaim.
  ASSERT_TRUE(send(*target, driver, 4, 1'200'000, good).ok());
  target->flush();
  driver.run();
  target.reset();
  auto contains_voided = [&] {
    auto recovered = recover(config.directory, 0);
    EXPECT_TRUE(recovered.ok());
    for (const auto& entry : recovered.value().messages) {
      if (entry.id == voided) return true;
    }
    return false;
  };
  EXPECT_FALSE(contains_voided()) << "voided commit recovered after the first restart";
  // A restart, its start-up clean-up, and another restart.
  {
    auto reopened = open_store(config);
    run_operations(*reopened);
  }
  EXPECT_FALSE(contains_voided()) << "voided commit recovered after the second restart";
  auto recovered = recover(config.directory, 0);
  ASSERT_TRUE(recovered.ok());
  bool good_found = false;
  for (const auto& entry : recovered.value().messages) good_found |= good.count(entry.id) != 0;
  EXPECT_TRUE(good_found);
}

}  // namespace
}  // namespace ringmta::spool
