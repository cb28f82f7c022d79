// server::run_downgrade: the worker's job read from real files (a spool slice is an fd, an
// offset and a length), converted, and written to a memfd in wire form.
#include "ringmta/server/downgrade.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

namespace ringmta::server {
namespace {

// A memfd holding `bytes` at offset 16 (a slice need not start at 0).
int file_with(std::string_view bytes) {
  const int fd = ::memfd_create("downgrade-test", MFD_CLOEXEC);
  const std::string padded = std::string(16, 'x') + std::string(bytes);
  EXPECT_EQ(::write(fd, padded.data(), padded.size()), static_cast<ssize_t>(padded.size()));
  return fd;
}

std::string read_back(int fd, std::uint64_t bytes) {
  std::string out(bytes, '\0');
  EXPECT_EQ(::pread(fd, out.data(), out.size(), 0), static_cast<ssize_t>(bytes));
  return out;
}

std::unique_ptr<downgrade_result> convert(int fd, std::uint64_t offset, std::uint32_t length) {
  downgrade_request request;
  const spool::body_slice slice{fd, offset, length};
  EXPECT_TRUE(duplicate_body({&slice, 1}, request));
  return run_downgrade(request);
}

TEST(downgrade_worker, converts_and_writes_wire_form_with_dot_stuffing) {
  // Wire form in the spool: the line ".caf\xc3\xa9" is stored stuffed as "..caf\xc3\xa9".
  const std::string wire = "Subject: x\r\n\r\n..caf\xc3\xa9\r\nplain\r\n";
  const int fd = file_with(wire);
  const auto result = convert(fd, 16, static_cast<std::uint32_t>(wire.size()));
  ASSERT_EQ(result->outcome, downgrade_outcome::converted) << result->reason();
  ASSERT_GE(result->fd, 0);
  EXPECT_EQ(read_back(result->fd, result->bytes),
            "Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n"
            "\r\n..caf=C3=A9\r\nplain\r\n");
  ::close(result->fd);
  ::close(fd);
}

TEST(downgrade_worker, signed_large_short_and_seven_bit_bodies_are_not_converted) {
  const std::string signed_wire = "DKIM-Signature: v=1\r\n\r\n\xc3\xa9\r\n";
  const int signed_fd = file_with(signed_wire);
  auto result = convert(signed_fd, 16, static_cast<std::uint32_t>(signed_wire.size()));
  EXPECT_EQ(result->outcome, downgrade_outcome::signed_message);
  EXPECT_EQ(result->fd, -1);
  // Over the limit: refused before anything is read (the file is far shorter).
  result = convert(signed_fd, 0, static_cast<std::uint32_t>(downgrade_bytes_max + 1));
  EXPECT_EQ(result->outcome, downgrade_outcome::too_large);
  EXPECT_EQ(result->fd, -1);
  // A slice beyond the end of its file: a read failure, reported (the delivery is deferred).
  result = convert(signed_fd, 16, 4096);
  EXPECT_EQ(result->outcome, downgrade_outcome::failed);
  EXPECT_EQ(result->error, EIO);
  ::close(signed_fd);
  const std::string ascii = "Subject: x\r\n\r\nascii\r\n";
  const int ascii_fd = file_with(ascii);
  result = convert(ascii_fd, 16, static_cast<std::uint32_t>(ascii.size()));
  EXPECT_EQ(result->outcome, downgrade_outcome::unchanged);
  ::close(ascii_fd);
}

}  // namespace
}  // namespace ringmta::server
