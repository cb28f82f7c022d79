// The in-memory index entry of one spooled message: everything the spool keeps per message.
//
// Bytes per message (x86-64, libstdc++): 80 for the entry + 16 per recipient + about 40 for the
// hash-map node and bucket, so ~136 bytes for a one-recipient message. The envelope and the
// body ranges stay on disk (one pread of the commit record brings them back: store::read).
#pragma once

#include <cstdint>
#include <vector>

#include "ringmta/spool/envelope.h"
#include "ringmta/spool/message_id.h"

namespace ringmta::spool {

enum class message_status : std::uint8_t {
  committing,  // commit record written to the open batch, not yet durable: invisible
  queued,      // durable, at least one recipient not final
  final,       // every recipient final; kept until its commit segment is removed
};

// Where a piece of the body lives: a data record's payload in a segment.
struct body_range {
  std::uint32_t segment = 0;
  std::uint32_t length = 0;
  std::uint64_t offset = 0;
  bool operator==(const body_range&) const = default;
};

// Operator actions on a whole message (store::act), journaled as action records. A message
// carries the result as flags: held (never routed for delivery until released), deleted
// (every recipient not yet final becomes `deleted` at recovery), bounce (recovery routes its
// open recipients to be bounced by the operator).
enum class message_action : std::uint8_t { hold = 1, release = 2, remove = 3, bounce = 4 };
enum message_flag : std::uint8_t {
  message_flag_held = 1,
  message_flag_deleted = 2,
  message_flag_bounce = 4,
};
// The flags after `action`: a delete or a bounce ends a hold, nothing follows a delete.
std::uint8_t apply_action(std::uint8_t flags, message_action action) noexcept;

struct message_entry {
  message_id id = 0;
  std::uint64_t body_bytes = 0;
  std::int64_t received_seconds = 0;
  std::uint64_t commit_offset = 0;   // of the commit record's header
  std::uint32_t commit_segment = 0;
  std::uint32_t commit_bytes = 0;    // header + payload
  std::uint32_t first_segment = 0;   // segments touched: bit i of segment_mask = first + i
  message_status status = message_status::committing;
  std::uint8_t flags = 0;            // message_flag bits (fits in the padding: still 80 bytes)
  std::uint64_t segment_mask = 0;
  std::vector<recipient_status> recipients;
};

}  // namespace ringmta::spool
