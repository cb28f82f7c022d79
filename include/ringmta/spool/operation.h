// What the sans-IO spool asks its embedder to do, and what it reports back.
//
// The store never makes a syscall on its data path: it hands out operations, the embedder
// performs them (sync_driver with pwritev/fdatasync, or the daemon on its io_uring ring) and
// reports each one's result with store::complete(token, result). Results follow the io_uring
// convention: >= 0 success (bytes written, 0, or a new fd), < 0 a negative errno.
//
// Mapping to ring ops:
//   write        IORING_OP_WRITEV   fd, iovecs, iovec_count, offset. A short write is an error.
//   datasync     IORING_OP_FSYNC    fd, IORING_FSYNC_DATASYNC.
//   create_file  blocking helper perform_create_file() (open O_CREAT|O_EXCL, fallocate,
//                write header, fdatasync, fsync directory), or OPENAT+FALLOCATE+WRITE+FSYNC×2.
//                Result: the new fd (read-write), which the store then owns.
//   remove_file  blocking helper perform_remove_file() (close fd, unlink, fsync directory),
//                or CLOSE+UNLINKAT+FSYNC(directory).
// Order: with link_next set, the next operation the store hands out may start only once this
// one completed successfully; if it failed (or was short), the next completes with -ECANCELED
// (io_uring's IOSQE_IO_LINK). The store chains a flight's writes into its datasyncs that way,
// so a group commit costs one submission instead of two. Otherwise operations are independent.
// The pointers inside an operation stay valid until its completion is reported.
#pragma once

#include <sys/uio.h>

#include <cstdint>

#include "ringmta/spool/message_id.h"

namespace ringmta::spool {

enum class operation_kind : std::uint8_t { write, datasync, create_file, remove_file };

struct operation {
  operation_kind kind = operation_kind::write;
  std::uint64_t token = 0;  // pass back to store::complete
  int fd = -1;              // write, datasync, remove_file (the fd to close)
  std::uint64_t offset = 0;  // write
  const iovec* iovecs = nullptr;  // write
  std::uint32_t iovec_count = 0;
  std::uint64_t bytes = 0;  // write: total of the iovecs; create_file: bytes to allocate (0: none)
  const char* path = nullptr;      // create_file, remove_file (NUL-terminated)
  const char* directory = nullptr;  // create_file, remove_file: the directory to fsync
  const void* header = nullptr;    // create_file: bytes to write at offset 0 before syncing
  std::uint32_t header_bytes = 0;
  bool link_next = false;  // the next operation waits for this one (see above)
};

enum class event_kind : std::uint8_t {
  committed,  // a commit ticket: the message and its envelope are durable (or failed)
  marked,     // a mark ticket: the recipient state change is durable (or failed)
};

struct event {
  event_kind kind = event_kind::committed;
  std::uint64_t ticket = 0;
  message_id id = 0;
  int error = 0;  // 0: durable. Else positive errno: the daemon answers 452 4.3.1 (RFC 3463)
};

}  // namespace ringmta::spool
