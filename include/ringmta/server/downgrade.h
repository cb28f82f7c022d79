// server::downgrade: the 8-bit to 7-bit conversion of a spooled message for a next hop without
// 8BITMIME (RFC 6152 §3), done on a worker thread (core::work_pool), never on a shard: it reads
// the whole body outside the ring and costs CPU in proportion to its size.
//
// The relay submits a request when a ready connection lacks 8BITMIME and the message is 8-bit;
// the worker reads the body (its own duplicates of the spool descriptors, so a shard closing a
// segment cannot hand the number to another file meanwhile), undoes dot-stuffing, converts
// (mime/downgrade.h), stuffs again and writes the result to a memfd, whose slice the outbound
// then sends like any spool slice (staged, spliced or through TLS). The result always comes
// back (converted, refused with the reason, or an errno), so no delivery waits for good.
// A DKIM-signed message is refused (status signed): converting it would break the signature
// (RFC 6376 §5.3 asks signers to sign 7-bit content); docs/interop.md has the decision.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "ringmta/mime/downgrade.h"
#include "ringmta/spool/store.h"

namespace ringmta::server {

inline constexpr std::size_t downgrade_queue_max = 256;
// Largest body converted (wire form): the worker holds it and its conversion (up to ~3x) in
// memory, one at a time. Larger 8-bit messages to a 7-bit server are bounced 5.6.3.
inline constexpr std::uint64_t downgrade_bytes_max = 64u << 20;

struct downgrade_request {
  unsigned shard = 0;         // where the result goes
  std::uint32_t flight = 0;   // the relay's delivery slot
  std::uint64_t job = 0;      // the scheduler job the slot holds (checked on return)
  std::vector<spool::body_slice> body;  // wire form; fds are the worker's duplicates
  ~downgrade_request();       // closes the duplicates
};

enum class downgrade_outcome : std::uint8_t {
  converted, unchanged, refused, signed_message, too_large, failed
};

struct downgrade_result {
  unsigned shard = 0;
  std::uint32_t flight = 0;
  std::uint64_t job = 0;
  downgrade_outcome outcome = downgrade_outcome::failed;
  mime::downgrade_status refusal = mime::downgrade_status::unchanged;  // when refused
  int error = 0;         // failed: errno reading the spool or writing the memfd
  int fd = -1;           // converted: a memfd with the 7-bit body in wire form; the receiver
  std::uint64_t bytes = 0;  //   of the result owns it and closes it
  std::string_view reason() const noexcept;  // for the DSN and the log
};

// Duplicates the slices' descriptors for a request (on the shard: dup() does not block).
// False (errno set, nothing kept open) when a descriptor cannot be duplicated.
bool duplicate_body(std::span<const spool::body_slice> body, downgrade_request& request) noexcept;

// The worker's job: read, convert, write. Never throws; errors are in the result.
std::unique_ptr<downgrade_result> run_downgrade(const downgrade_request& request) noexcept;

}  // namespace ringmta::server
