// Private parts of spool::store shared by store.cc, store_files.cc and store_flush.cc.
#pragma once

#include <sys/uio.h>

#include <string>
#include <utility>
#include <vector>

#include "format.h"
#include "xxh3.h"  // XXH3_state_t in place
#include "ringmta/spool/store.h"

namespace ringmta::spool {

// Token layout: operation class in the top byte; the rest names the flight (seq << 16 | part
// index) or the file id. A completion whose flight seq is not the active one is a bug.
enum class token_class : std::uint8_t {
  segment_write = 1,
  journal_write,
  segment_sync,
  journal_sync,
  create_segment,
  create_journal,
  remove_segment,
  remove_journal,
};

inline std::uint64_t make_token(token_class kind, std::uint64_t value) noexcept {
  return (static_cast<std::uint64_t>(kind) << 56) | (value & ((std::uint64_t{1} << 56) - 1));
}
inline token_class token_kind(std::uint64_t token) noexcept {
  return static_cast<token_class>(token >> 56);
}
inline std::uint64_t token_value(std::uint64_t token) noexcept {
  return token & ((std::uint64_t{1} << 56) - 1);
}

struct store::file_slot {
  std::uint32_t id = 0;
  bool journal = false;
  file_role role = file_role::creating;
  bool remove_failed = false;
  int fd = -1;
  std::uint64_t salt = 0;
  std::uint64_t write_offset = 0;  // next byte to place (segment) or write (journal)
  std::uint64_t capacity = 0;
  std::uint32_t refs = 0;          // pending + queued messages touching this segment
  std::uint64_t last_batch = 0;    // newest segment batch that placed bytes here
  std::string path;
  char header[format::first_record_offset] = {};
  std::vector<message_id> final_ids;  // final messages whose commit record lives here
  // Segments whose void_tail record this segment carries (placed here, or found here by
  // recovery). It stays while any of them is still in _segments: see maybe_remove_segment.
  std::vector<std::uint32_t> void_targets;
};

// The data record at the end of the open batch, still growing: consecutive appends of one
// message extend its payload (fewer ranges), the checksum is streamed and written on close.
struct store::open_record {
  bool active = false;
  char* header = nullptr;
  std::uint32_t slot = 0;
  std::uint32_t payload_bytes = 0;
  std::uint32_t segment = 0;
  std::uint64_t offset = 0;
  XXH3_state_t hash;
};

struct store::pending_message {
  std::uint32_t generation = 0;
  bool in_use = false;
  message_id id = 0;
  int error = 0;
  std::uint64_t body_bytes = 0;
  std::uint64_t last_batch = 0;
  std::uint32_t first_segment = 0;  // 0 until the first byte is placed
  std::uint64_t segment_mask = 0;
  std::vector<body_range> ranges;
  dot_stuffer stuffer;
};

struct store::extent {
  std::uint32_t segment = 0;
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
  std::vector<iovec> pieces;
};

using ticket_ref = std::pair<std::uint64_t, message_id>;

struct store::segment_batch {
  std::uint64_t seq = 0;
  std::vector<extent> extents;
  std::vector<char*> blocks;
  std::vector<ticket_ref> tickets;
  std::uint64_t bytes = 0;
};

// A state record, an action record (type action: `action` is its payload), a reason record
// (type reason: the text is the store's _bounce_reasons entry of `id` when it is encoded) or a
// pause record (type pause: `id` indexes the batch's pauses).
struct journal_item {
  message_id id = 0;
  format::state_payload state;
  format::record_type type = format::record_type::state;
  format::action_payload action;
};

struct store::journal_batch {
  std::vector<journal_item> items;
  std::vector<ticket_ref> tickets;
  std::vector<message_id> finals;  // became final in memory, durable with this batch
  std::vector<destination_pause> pauses;  // the pause records' payloads
  // the reason and pause records' (each of the others is state_record_bytes)
  std::uint64_t variable_bytes = 0;
  bool urgent = false;  // holds an action record: synced with the next flight, never lagged
  bool empty() const noexcept { return items.empty() && tickets.empty() && finals.empty(); }
  void clear() noexcept {  // keeps the vectors' capacity
    items.clear();
    tickets.clear();
    finals.clear();
    variable_bytes = 0;
    pauses.clear();
    urgent = false;
  }
};

struct store::flight {
  bool active = false;
  std::uint64_t seq = 0;
  segment_batch segments;
  journal_batch journal;
  std::string journal_bytes;
  iovec journal_iovec{};
  bool sync_segments = false;          // false: a full batch of body data, written only
  std::vector<int> segment_sync_fds;   // every fd with unsynced writes, when syncing
  file_slot* journal_file = nullptr;  // null: no journal write in this flight
  bool journal_snapshot = false;
  std::uint32_t writes_pending = 0;
  std::uint32_t syncs_pending = 0;
  bool syncs_issued = false;  // chained behind the writes at submit()
  int segment_error = 0;
  int journal_error = 0;
};

inline constexpr std::uint32_t state_record_bytes =
    format::header_bytes + format::state_payload_bytes;

}  // namespace ringmta::spool
