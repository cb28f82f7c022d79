// File durability through the ring: openat, write linked to fdatasync (the spool's group
// commit), fsync, close; the bytes are then read back with plain syscalls.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "ringmta/io/ring.h"
#include "support.h"

namespace ringmta::io {
namespace {

TEST(fdatasync, write_linked_to_fdatasync_then_close) {
  ring r;
  RINGMTA_INIT_OR_SKIP(r, ring_options{});
  char directory[] = "/tmp/ringmta-uring-XXXXXX";
  ASSERT_NE(mkdtemp(directory), nullptr);
  const std::string path = std::string(directory) + "/segment";
  ASSERT_TRUE(r.prep_openat(AT_FDCWD, path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600,
                            pack_user_data(20, 0, 0)).ok());
  auto got = test::wait_completions(r, 1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_GE(got[0].res, 0) << "openat: " << got[0].res;
  const int fd = got[0].res;
  const std::string record = "250 means durable\n";
  ASSERT_TRUE(r.reserve(2).ok());
  ASSERT_TRUE(r.prep_write(fd, record.data(), static_cast<std::uint32_t>(record.size()), 0,
                           pack_user_data(20, 0, 1), sqe::link).ok());
  ASSERT_TRUE(r.prep_fdatasync(fd, pack_user_data(20, 0, 2)).ok());
  got = test::wait_completions(r, 2);
  ASSERT_EQ(got.size(), 2u);
  for (const completion& c : got) {
    EXPECT_EQ(c.res, c.tag().slot == 1 ? static_cast<int>(record.size()) : 0) << c.tag().slot;
  }
  ASSERT_TRUE(r.prep_fsync(fd, pack_user_data(20, 0, 3), sqe::link).ok());
  ASSERT_TRUE(r.prep_close(fd, pack_user_data(20, 0, 4)).ok());
  got = test::wait_completions(r, 2);
  ASSERT_EQ(got.size(), 2u);
  for (const completion& c : got) EXPECT_EQ(c.res, 0);
  const int check = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(check, 0);
  std::string back(record.size(), '\0');
  EXPECT_EQ(read(check, back.data(), back.size()), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, record);
  close(check);
  unlink(path.c_str());
  rmdir(directory);
}

}  // namespace
}  // namespace ringmta::io
