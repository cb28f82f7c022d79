// sim::disk against the semantics the simulator relies on: what a power loss keeps.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

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
    std::map<std::string, std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      std::ifstream in(entry.path(), std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      files[entry.path().filename().string()] = text.str();
    }
    std::filesystem::remove_all(directory);
    return files;
  }
  int created_fd(std::uint64_t token) { return static_cast<int>(results.at(token)); }

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
  target->submit(create(1, "/sim/a"));
  run();
  const int fd = created_fd(1);
  target->submit(write(2, fd, 512, true));
  target->submit(sync(3, fd));
  run();
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
  target->submit(create(1, "/sim/a"));
  run();
  const int fd = created_fd(1);
  target->submit(write(2, fd, 512, true));
  target->submit(sync(3, fd));
  run();
  EXPECT_TRUE(results.at(2) == -EIO || results.at(2) == -ENOSPC);
  EXPECT_EQ(results.at(3), -ECANCELED);
  ::close(fd);
}

TEST_F(disk_test, no_fsync_bug_reports_success_and_keeps_nothing) {
  make(disk_bug::no_fsync);
  target->submit(create(1, "/sim/a"));
  run();
  const int fd = created_fd(1);
  target->submit(write(2, fd, 512, true));
  target->submit(sync(3, fd));
  run();
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
  spool::operation remove;
  remove.kind = spool::operation_kind::remove_file;
  remove.token = 2;
  remove.fd = created_fd(1);  // the disk closes it
  remove.path = "/sim/a";
  remove.directory = "/sim";
  target->submit(remove);
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

}  // namespace
}  // namespace ringmta::sim
