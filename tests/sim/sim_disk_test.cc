// sim::disk against the semantics the simulator relies on: what a power loss keeps.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
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
  ::close(fd);
}

}  // namespace
}  // namespace ringmta::sim
