// Listing of queued messages across all shards of a spool directory, for `ringmta spool ls`.
//
// Read-only and blocking: runs recovery on every DIR/shard-<n> and reads each queued message's
// commit record. Safe against a running daemon (it sees the last synced state; a batch being
// written looks like a torn tail). Never modifies the spool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/envelope.h"

namespace ringmta::spool {

struct listed_recipient {
  std::string address;
  recipient_status status;
};

struct listed_message {
  std::uint32_t shard = 0;
  message_id id = 0;
  std::string sender;  // empty for <>
  std::vector<listed_recipient> recipients;
  std::uint64_t body_bytes = 0;
  std::int64_t received_seconds = 0;  // age = now - received_seconds
  bool held = false;                  // an operator's hold (ringmta-ctl hold): never tried
};

struct spool_listing {
  std::vector<listed_message> messages;  // queued (not final), by shard then id
  std::vector<std::string> problems;     // recovery reports, prefixed "shard-<n>: "
};

core::result<spool_listing> list_spool(const std::string& spool_directory);

// Where a message's commit record is (message_entry's fields), for read_message_text.
struct message_location {
  message_id id = 0;
  std::uint32_t commit_segment = 0;
  std::uint64_t commit_offset = 0;
  std::uint32_t commit_bytes = 0;
};

// The whole message as the sender wrote it (headers and body; the stored wire form with its
// dot-stuffing undone, RFC 5321 §4.5.2), read from the segment files of `shard_directory`,
// opened by name (read-only, blocking: the admin thread, never a shard). At most
// `bytes_max` bytes (EFBIG beyond). ENOENT when a segment is gone (the message left).
core::result<std::string> read_message_text(const std::string& shard_directory,
                                            const message_location& where,
                                            std::uint64_t bytes_max);

}  // namespace ringmta::spool
