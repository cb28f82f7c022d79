// recovery_io: the file calls spool::recover() makes, as one interface passed in.
//
// Recovery lists a shard's directory, stats and opens its files read-only, asks for read-ahead,
// finds runs of data (SEEK_DATA / SEEK_HOLE) and preads them. posix_recovery_io() makes these
// calls on the kernel: what the daemon, `ringmta spool ls` and sync_driver use (the default).
// The simulator passes its disk's durable image instead (tests/sim/sim_disk.h), so that a
// restart runs the real recovery code without writing the image into real files and reading
// it back (issue 16: ~1.3 MB and ~130 syscalls per restart, a restart every ~2 simulated s).
//
// Contract: each call means what its POSIX namesake means. open_read() gives a real descriptor
// the caller may own: recovery hands it on in recovered_file::fd, whose unique_fd closes it
// with ::close; a descriptor recovery does not hand on it gives back through close().
// Blocking (start-up only, like recovery); never writes. The simulator's image serves bytes in
// place (in_memory): without it, the copy the kernel's pread made in system time would be made
// in user space (+325 M instructions for seed 100's 295 restarts, docs/notes.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "ringmta/core/result.h"

namespace ringmta::spool {

class recovery_io {
 public:
  virtual ~recovery_io() = default;
  // Calls `each` with every entry name of `directory` (any order); fails when it cannot be
  // listed (opendir).
  virtual core::result<void> list(const std::string& directory,
                                  const std::function<void(std::string_view)>& each) = 0;
  // The size of the file at `path` (stat's st_size).
  virtual core::result<std::uint64_t> size_of(const std::string& path) = 0;
  // Opens `path` read-only: a descriptor the caller owns.
  virtual core::result<int> open_read(const std::string& path) = 0;
  // POSIX_FADV_WILLNEED on the whole file: best effort.
  virtual void will_need(int fd) = 0;
  // lseek(fd, offset, SEEK_DATA) and lseek(fd, offset, SEEK_HOLE): the offset found, or
  // -errno (-ENXIO: no data at or after `offset`; -EINVAL where the filesystem cannot tell).
  virtual std::int64_t seek_data(int fd, std::uint64_t offset) = 0;
  virtual std::int64_t seek_hole(int fd, std::uint64_t offset) = 0;
  // pread: the bytes read (0 at the end of the file), or -errno.
  virtual std::int64_t read_at(int fd, void* into, std::size_t bytes, std::uint64_t offset) = 0;
  // The file's first bytes where they are in memory already (a simulated disk's image): what
  // read_at would give for [0, size()) of the view, valid until the file is closed. Recovery
  // checks them in place instead of copying them into its window, and reads the rest (zeros
  // up to the file's size) with read_at. Empty: read everything with read_at (the kernel's).
  virtual std::string_view in_memory(int fd) = 0;
  // Closes a descriptor open_read() gave.
  virtual void close(int fd) = 0;
};

// The kernel's calls (opendir/readdir, stat, open O_RDONLY, posix_fadvise, lseek, pread).
recovery_io& posix_recovery_io() noexcept;

}  // namespace ringmta::spool
