// sim::disk against the semantics the simulator relies on: what a power loss keeps.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"
#include "sim_disk.h"

namespace ringmta::sim {
namespace {

class disk_test : public ::testing::Test {
 protected:
  void make(disk_bug bug = disk_bug::none, disk_profile profile = {}) {
    target = std::make_unique<disk>(
        clock, random_source, profile, bug,
        [this](std::uint64_t token, std::int64_t result) { results[token] = result; },
        [](std::string_view) {});
  }
  void run() {
    while (clock.run_one()) {
    }
  }
  spool::operation create(std::uint64_t token, const char* path, bool link = false) {
    spool::operation op;
    op.kind = spool::operation_kind::create_file;
    op.token = token;
    op.path = path;
    op.directory = "/sim";
    op.bytes = 8192;
    op.header = header.data();
    op.header_bytes = static_cast<std::uint32_t>(header.size());
    op.link_next = link;
    return op;
  }
  spool::operation write(std::uint64_t token, int fd, std::uint64_t offset, bool link = false) {
    spool::operation op;
    op.kind = spool::operation_kind::write;
    op.token = token;
    op.fd = fd;
    op.offset = offset;
    op.iovecs = &payload_iovec;
    op.iovec_count = 1;
    op.bytes = payload.size();
    op.link_next = link;
    return op;
  }
  spool::operation sync(std::uint64_t token, int fd) {
    spool::operation op;
    op.kind = spool::operation_kind::datasync;
    op.token = token;
    op.fd = fd;
    return op;
  }
  // The durable image, file name -> content, through materialize().
  std::map<std::string, std::string> image() {
    char directory[] = "/tmp/sim-disk-test-XXXXXX";
    EXPECT_NE(::mkdtemp(directory), nullptr);
    EXPECT_TRUE(target->materialize(directory));
    auto files = contents(directory);
    std::filesystem::remove_all(directory);
    return files;
  }
  static std::map<std::string, std::string> contents(const std::string& directory) {
    std::map<std::string, std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      std::ifstream in(entry.path(), std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      files[entry.path().filename().string()] = text.str();
    }
    return files;
  }
  static ino_t inode_number(const std::string& path) {
    struct stat status {};
    return ::stat(path.c_str(), &status) == 0 ? status.st_ino : 0;
  }
  spool::operation remove(std::uint64_t token, int fd, const char* path) {
    spool::operation op;
    op.kind = spool::operation_kind::remove_file;
    op.token = token;
    op.fd = fd;  // the disk closes it
    op.path = path;
    op.directory = "/sim";
    return op;
  }
  void set_payload(char fill) {
    payload = std::string(1500, fill);
    payload_iovec = iovec{payload.data(), payload.size()};
  }
  int created_fd(std::uint64_t token) { return static_cast<int>(results.at(token)); }
  // "/sim/a" (token 1), the payload written at 512 (token 2) linked to a datasync (token 3).
  int create_a_with_synced_payload() {
    target->submit(create(1, "/sim/a"));
    run();
    const int fd = created_fd(1);
    target->submit(write(2, fd, 512, true));
    target->submit(sync(3, fd));
    run();
    return fd;
  }

  scheduler clock;
  random random_source{7};
  std::unique_ptr<disk> target;
  std::map<std::uint64_t, std::int64_t> results;
  std::string header = "HEADER--";
  std::string payload = std::string(1500, 'x');
  iovec payload_iovec{payload.data(), payload.size()};
};

TEST_F(disk_test, created_file_is_durable_with_its_header_and_size) {
  make();
  target->submit(create(1, "/sim/a"));
  run();
  ASSERT_GE(results.at(1), 0);
  const auto files = image();
  ASSERT_EQ(files.count("a"), 1u);
  EXPECT_EQ(files.at("a").size(), 8192u);
  EXPECT_EQ(files.at("a").substr(0, 8), header);
}

TEST_F(disk_test, only_synced_writes_survive_a_crash) {
  make();
  target->submit(create(1, "/sim/a"));
  run();
  const int fd = created_fd(1);
  target->submit(write(2, fd, 512));
  target->submit(sync(3, fd));  // not linked: may be issued before the write completes
  run();
  target->submit(write(4, fd, 4096));
  run();
  std::string why;
  EXPECT_FALSE(target->durable(fd, 4096, payload.size(), why));
  EXPECT_NE(why.find("not synced"), std::string::npos) << why;
  target->crash(false);
  const auto files = image();
  EXPECT_EQ(files.at("a").substr(4096, payload.size()), std::string(payload.size(), '\0'));
  ::close(fd);
}

TEST_F(disk_test, linked_write_then_sync_is_durable) {
  make();
  const int fd = create_a_with_synced_payload();
  std::string why;
  EXPECT_TRUE(target->durable(fd, 512, payload.size(), why)) << why;
  target->crash(false);
  EXPECT_EQ(image().at("a").substr(512, payload.size()), payload);
  ::close(fd);
}

TEST_F(disk_test, failed_link_cancels_the_rest_of_the_chain) {
  disk_profile always_fails;
  always_fails.write_error = 1;
  make(disk_bug::none, always_fails);
  const int fd = create_a_with_synced_payload();
  EXPECT_TRUE(results.at(2) == -EIO || results.at(2) == -ENOSPC);
  EXPECT_EQ(results.at(3), -ECANCELED);
  ::close(fd);
}

TEST_F(disk_test, no_fsync_bug_reports_success_and_keeps_nothing) {
  make(disk_bug::no_fsync);
  const int fd = create_a_with_synced_payload();
  EXPECT_EQ(results.at(3), 0);
  std::string why;
  EXPECT_FALSE(target->durable(fd, 512, payload.size(), why));
  target->crash(false);
  EXPECT_EQ(image().at("a").substr(512, 8), std::string(8, '\0'));
  ::close(fd);
}

TEST_F(disk_test, dir_fsync_bug_loses_the_new_name) {
  make(disk_bug::dir_fsync);
  target->submit(create(1, "/sim/a"));
  run();
  ASSERT_GE(results.at(1), 0);
  std::string why;
  EXPECT_FALSE(target->durable(created_fd(1), 0, 8, why));
  EXPECT_NE(why.find("directory entry"), std::string::npos) << why;
  ::close(created_fd(1));
  target->crash(false);
  EXPECT_EQ(image().count("a"), 0u);
}

TEST_F(disk_test, removal_is_durable_after_its_directory_fsync_only) {
  make();
  target->submit(create(1, "/sim/a"));
  run();
  target->submit(remove(2, created_fd(1), "/sim/a"));
  run();
  EXPECT_EQ(results.at(2), 0);
  target->crash(false);
  EXPECT_EQ(image().count("a"), 0u);
}

TEST_F(disk_test, torn_crash_keeps_a_sector_aligned_prefix_of_unsynced_writes) {
  bool kept_some = false;
  for (std::uint64_t seed = 1; seed < 40 && !kept_some; ++seed) {
    random_source = random(seed);
    results.clear();
    make();
    target->submit(create(1, "/sim/a"));
    run();
    const int fd = created_fd(1);
    target->submit(write(2, fd, 1000));
    run();
    target->crash(true);
    const std::string tail = image().at("a").substr(1000, payload.size());
    const auto kept = tail.find('\0') == std::string::npos ? tail.size() : tail.find('\0');
    EXPECT_EQ(tail.find_first_not_of('\0', kept), std::string::npos);  // a prefix
    if (kept > 0 && kept < tail.size()) {
      EXPECT_EQ((1000 + kept) % 512, 0u);
    }
    kept_some = kept_some || kept > 0;
    ::close(fd);
    target.reset();
    clock.clear();
  }
  EXPECT_TRUE(kept_some);
}

// A restart updates the image directory of the last one: what changed is written again (a new
// inode), what is gone is unlinked, the rest is left as it is; the result is the durable image.
TEST_F(disk_test, materialize_into_the_last_directory_writes_only_what_changed) {
  make();
  target->submit(create(1, "/sim/a"));
  target->submit(create(2, "/sim/b"));
  target->submit(create(3, "/sim/c"));
  run();
  char made[] = "/tmp/sim-disk-test-XXXXXX";
  ASSERT_NE(::mkdtemp(made), nullptr);
  const std::string directory = made;
  ASSERT_TRUE(target->materialize(directory));
  const ino_t b_before = inode_number(directory + "/b");
  const ino_t c_before = inode_number(directory + "/c");
  target->submit(write(4, created_fd(2), 512, true));
  target->submit(sync(5, created_fd(2)));
  target->submit(remove(6, created_fd(1), "/sim/a"));
  run();
  ASSERT_EQ(results.at(5), 0);
  ASSERT_EQ(results.at(6), 0);
  ASSERT_TRUE(target->materialize(directory));
  const auto updated = contents(directory);
  EXPECT_EQ(updated, image());  // the same as a fresh directory
  EXPECT_EQ(updated.count("a"), 0u);
  EXPECT_EQ(updated.at("b").substr(512, payload.size()), payload);
  EXPECT_NE(inode_number(directory + "/b"), b_before);
  EXPECT_EQ(inode_number(directory + "/c"), c_before);
  std::filesystem::remove_all(directory);
  ::close(created_fd(2));
  ::close(created_fd(3));
}

// read() is the page cache: the durable bytes, zeros past them, every completed write on top
// in completion order, up to the larger of the allocated and the written size.
TEST_F(disk_test, read_sees_completed_writes_over_the_durable_image) {
  make();
  const int fd = create_a_with_synced_payload();
  set_payload('y');
  target->submit(write(4, fd, 1000));  // over the durable 'x' written at 512, not synced
  run();
  set_payload('z');
  target->submit(write(5, fd, 9000));  // past the allocated 8192
  run();
  std::string want = header + std::string(512 - header.size(), '\0') +
                     std::string(1000 - 512, 'x') + std::string(1500, 'y');
  want += std::string(9000 - want.size(), '\0') + std::string(1500, 'z');
  std::string got(20000, '?');
  ASSERT_EQ(target->read(fd, 0, got.data(), 20000), 10500);
  EXPECT_EQ(got.substr(0, 10500), want);
  ASSERT_EQ(target->read(fd, 2400, got.data(), 200), 200);
  EXPECT_EQ(got.substr(0, 200), want.substr(2400, 200));
  EXPECT_EQ(target->read(fd, 10500, got.data(), 10), 0);
  EXPECT_EQ(target->read(fd + 1000, 0, got.data(), 10), -EBADF);
  // In place only where nothing unsynced lies over the durable bytes.
  EXPECT_EQ(target->durable_view(fd, 520, 100), std::string(100, 'x'));
  EXPECT_EQ(target->durable_view(fd, 900, 200), "");   // under the unsynced 'y' at 1000
  EXPECT_EQ(target->durable_view(fd, 2000, 100), "");  // past the durable bytes (2,012)
  ::close(fd);
}


// A real directory for materialize(): tmpfs when writable, as the simulator used.
std::string make_directory() {
  std::string made = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm/sim-disk-test-XXXXXX"
                                                      : "/tmp/sim-disk-test-XXXXXX";
  EXPECT_NE(::mkdtemp(made.data()), nullptr);
  return made;
}

// image() is what materialize() writes, as the kernel serves it: the names, sizes and bytes,
// and where SEEK_DATA and SEEK_HOLE land (a hole past the last written page).
TEST_F(disk_test, image_reads_as_the_materialized_files_read) {
  make();
  const int fd = create_a_with_synced_payload();  // "a": 8,192 bytes, data up to 2,012
  target->submit(create(4, "/sim/b"));
  run();
  target->submit(write(5, created_fd(4), 6000));  // not synced: lost, b keeps its header only
  run();
  target->crash(false);
  ::close(fd);
  ::close(created_fd(4));
  const std::string directory = make_directory();
  ASSERT_TRUE(target->materialize(directory));
  spool::recovery_io& io = target->image();
  std::vector<std::string> names;
  ASSERT_TRUE(io.list("/anywhere", [&](std::string_view name) { names.emplace_back(name); }));
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(io.size_of("/sim/c").error(), ENOENT);
  EXPECT_EQ(io.open_read("/sim/c").error(), ENOENT);
  for (const auto& name : names) {
    const std::string real_path = directory + "/" + name;
    const int real = ::open(real_path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(real, 0);
    struct stat status {};
    ASSERT_EQ(::fstat(real, &status), 0);
    ASSERT_EQ(io.size_of("/sim/" + name).value(), static_cast<std::uint64_t>(status.st_size));
    auto opened = io.open_read("/sim/" + name);
    ASSERT_TRUE(opened);
    const int simulated = opened.value();
    for (const std::uint64_t at : {0, 1, 2011, 2012, 4095, 4096, 4097, 8191, 8192, 9000}) {
      for (const int whence : {SEEK_DATA, SEEK_HOLE}) {
        const off_t found = ::lseek(real, static_cast<off_t>(at), whence);
        const std::int64_t want = found < 0 ? -errno : found;
        EXPECT_EQ(whence == SEEK_DATA ? io.seek_data(simulated, at) : io.seek_hole(simulated, at),
                  want) << name << " whence " << whence << " at " << at;
      }
      std::string real_bytes(3000, '?');
      std::string simulated_bytes(3000, '!');
      const ssize_t got = ::pread(real, real_bytes.data(), real_bytes.size(),
                                  static_cast<off_t>(at));
      ASSERT_EQ(io.read_at(simulated, simulated_bytes.data(), simulated_bytes.size(), at), got);
      EXPECT_EQ(simulated_bytes.substr(0, static_cast<std::size_t>(got)),
                real_bytes.substr(0, static_cast<std::size_t>(got))) << name << " at " << at;
      // In place: the stored bytes (2,012 of a, b's 8-byte header), the same as read.
      const std::string_view held = io.in_memory(simulated);
      EXPECT_EQ(held.size(), name == "a" ? 2012u : header.size());
      if (at < held.size()) {
        const auto both = std::min<std::size_t>(static_cast<std::size_t>(got), held.size() - at);
        EXPECT_EQ(held.substr(at, both), std::string_view(real_bytes).substr(0, both)) << at;
      }
    }
    EXPECT_EQ(target->name_of(simulated), name);  // the disk's file once opened
    io.close(simulated);
    EXPECT_EQ(target->name_of(simulated), fmt::format("fd{}", simulated));
    ::close(real);
  }
  std::filesystem::remove_all(directory);
}

// A real spool::store on the disk, driven as the simulator's shard drives it, crashed (torn or
// not) between its operations, so that the image holds what restarts meet: torn tails, files
// created but not named, segments being removed, voided batches.
class store_on_disk_test : public ::testing::Test {
 protected:
  void start(std::uint64_t seed) {
    random_source = random(seed);
    disk_profile profile;
    profile.write_error = profile.sync_error = profile.step_error = 0.02;
    target = std::make_unique<disk>(
        clock, random_source, profile, disk_bug::none,
        [this](std::uint64_t token, std::int64_t result) { spool->complete(token, result); },
        [](std::string_view) {});
    config.directory = "/sim/shard-0";
    config.segment_bytes = 64u << 10;
    config.journal_bytes = 16u << 10;
    config.random_seed = seed | 1;
    spool = std::make_unique<spool::store>(config, spool::recovered_state{});
  }
  void pump() {
    spool->flush();
    spool::operation op;
    while (spool->next_operation(op)) target->submit(op);
    spool::event done;
    while (spool->next_event(done)) {
      if (done.kind == spool::event_kind::committed && done.error == 0) durable.push_back(done.id);
    }
  }
  // Receives up to 12 messages and marks recipients of durable ones, with the disk running
  // a random number of steps between calls.
  void work() {
    const auto messages = random_source.between(1, 12);
    for (std::uint64_t i = 0; i < messages; ++i) {
      auto handle = spool->begin(1'000'000 + static_cast<std::int64_t>(i));
      if (!handle) break;
      const std::string body(random_source.between(10, 20'000), static_cast<char>('a' + i % 26));
      (void)spool->append(handle.value(), body + "\r\n");
      spool::envelope value;
      value.id = spool->id_of(handle.value());
      value.reverse_path = "sender@example.org";
      value.recipients = {{"one@example.com"}, {"two@example.net"}};
      // EAGAIN (no segment yet) leaves the handle open; other errors consumed it.
      auto ticket = spool->commit(handle.value(), value);
      if (!ticket && ticket.error() == EAGAIN) spool->abort(handle.value());
      advance();
    }
    for (const auto id : durable) {
      if (random_source.chance(0.3))
        (void)spool->mark(id, static_cast<std::uint16_t>(random_source.below(2)),
                          spool::recipient_status{spool::recipient_state::delivered, 1, 0});
    }
    advance();
  }
  void advance() {
    pump();
    for (auto steps = random_source.below(40); steps > 0 && clock.run_one(); --steps) pump();
  }
  spool::recovered_state crash_and_recover_both_ways() {
    spool.reset();
    durable.clear();
    target->crash(random_source.chance(0.5));
    const std::string directory = make_directory();
    EXPECT_TRUE(target->materialize(directory));
    auto from_files = spool::recover(directory, 0);
    std::filesystem::remove_all(directory);
    auto from_image = spool::recover("/sim/shard-0", 0, target->image());
    EXPECT_TRUE(from_files);
    EXPECT_TRUE(from_image);
    if (!from_files || !from_image) return {};
    EXPECT_EQ(describe(from_image.value()), describe(from_files.value()));
    saw_problems = saw_problems || !from_image.value().report.problems.empty();
    return std::move(from_image.value());
  }
  static std::string describe(const spool::recovered_state& state) {
    std::string text = fmt::format("floor {:x} next {}\n", state.id_floor, state.next_file_id);
    for (const auto* files : {&state.segments, &state.journals}) {
      for (const auto& file : *files)
        text += fmt::format("file {} salt {:x} valid {} size {} voids {}\n", file.id, file.salt,
                            file.valid_bytes, file.file_bytes, fmt::join(file.void_targets, ","));
    }
    for (std::size_t i = 0; i < state.messages.size(); ++i) {
      const auto& entry = state.messages[i];
      text += fmt::format("message {:x} status {} commit {}@{}+{} flags {} mask {:x}", entry.id,
                          static_cast<int>(entry.status), entry.commit_segment,
                          static_cast<std::uint64_t>(entry.commit_offset), entry.commit_bytes,
                          static_cast<int>(entry.flags), entry.segment_mask);
      for (std::size_t r = 0; r < entry.recipients.size(); ++r)
        text += fmt::format(" {}", static_cast<int>(entry.recipients[r].state));
      text += "\n";
    }
    const auto& report = state.report;
    text += fmt::format("records {} torn {} corrupt {} voided {} incomplete {} unreadable {}\n",
                        report.records, report.torn_tails, report.corrupt_regions,
                        report.voided_messages, report.incomplete_messages,
                        report.unreadable_files);
    for (const auto& problem : report.problems) text += problem + "\n";
    return text;
  }

  scheduler clock;
  random random_source{1};
  std::unique_ptr<disk> target;
  spool::store_config config;
  std::unique_ptr<spool::store> spool;
  std::vector<spool::message_id> durable;
  bool saw_problems = false;  // torn tails and the like: the test met what it is about
};

// Recovery over image() finds exactly what it finds over the materialized files (the digest
// of every simulator seed rests on this).
TEST_F(store_on_disk_test, recovery_over_the_image_finds_what_it_finds_in_real_files) {
  std::uint64_t messages_recovered = 0;
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    start(seed);
    for (int restart = 0; restart < 5; ++restart) {
      work();
      auto state = crash_and_recover_both_ways();
      messages_recovered += state.messages.size();
      for (std::size_t i = 0; i < state.messages.size(); ++i)
        durable.push_back(state.messages[i].id);
      spool = std::make_unique<spool::store>(config, std::move(state));
    }
    spool.reset();
    target.reset();
    clock.clear();
  }
  EXPECT_GT(messages_recovered, 0u);
  EXPECT_TRUE(saw_problems);
}
}  // namespace
}  // namespace ringmta::sim
