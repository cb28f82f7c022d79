// On-disk record format shared by the segment log, the state journal and recovery (private).
//
// Every file starts with a header record; then records follow back to back:
//   u32 magic | u8 type | u8[3] zero | u32 payload_bytes | u32 zero | u64 message_id |
//   u64 checksum | payload
// checksum = XXH3-64 over (payload, then header bytes 0..24) with a seed that mixes the file's
// random salt and the record's own offset, so a record is only valid in the file and at the
// place it was written: bytes inside a message body that imitate a record never verify, and a
// torn or stale region never passes. Little-endian hosts only (static_assert in format.cc).
// Must never trust a length before checking it against the limits below.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "ringmta/core/result.h"

#include "ringmta/spool/message_id.h"
#include "ringmta/spool/recovery.h"

namespace ringmta::spool::format {

inline constexpr std::uint32_t magic = 0x52534d52;  // "RMSR"
inline constexpr std::uint32_t version = 1;
inline constexpr std::uint32_t header_bytes = 32;
// The checksum covers the payload, then the header up to the checksum itself (its last 8 bytes).
inline constexpr std::uint32_t checksummed_header_bytes = header_bytes - sizeof(std::uint64_t);
inline constexpr std::uint32_t payload_bytes_max = 64u << 20;

enum class record_type : std::uint8_t {
  segment_header = 1,
  journal_header = 2,
  data = 3,      // a slice of one message's body, wire form
  commit = 4,    // makes a message visible: body length, body ranges, envelope
  void_tail = 5, // "segment S is valid only below offset X" after a failed write
  state = 6,     // journal: one recipient's delivery state (last one wins)
  action = 7,    // journal: an operator action on the whole message (hold, release, delete, bounce)
  reason = 8,    // journal: the operator's text for a message's bounce (right before its action record)
  pause = 9,     // journal: a destination's reply-rule pause or throttle (last one wins; id 0)
};

struct record_header {
  record_type type = record_type::data;
  std::uint32_t payload_bytes = 0;
  message_id id = 0;
  std::uint64_t checksum = 0;
};

// Payload of the header record of every file (seed 0, offset 0).
struct file_header {
  std::uint32_t version = format::version;
  std::uint32_t shard = 0;
  std::uint64_t file_id = 0;
  std::uint64_t salt = 0;
  std::uint64_t id_floor = 0;  // no id at or below this was handed out after the file's birth
  std::uint64_t reserved = 0;
};
inline constexpr std::uint32_t file_header_bytes = 40;
inline constexpr std::uint32_t first_record_offset = header_bytes + file_header_bytes;

// Payload of a state record.
struct state_payload {
  std::uint16_t recipient = 0;
  std::uint8_t state = 0;
  std::uint8_t reserved = 0;
  std::uint32_t attempts = 0;
  std::int64_t next_attempt_seconds = 0;
};
inline constexpr std::uint32_t state_payload_bytes = 16;

// Payload of an action record: u8 action (spool::message_action) | u8[7] zero |
// i64 seconds (when it was asked). Same size as a state record, so the journal's batches
// hold both kinds alike.
struct action_payload {
  std::uint8_t action = 0;
  std::int64_t seconds = 0;
};
inline constexpr std::uint32_t action_payload_bytes = 16;
static_assert(action_payload_bytes == state_payload_bytes);

// Payload of a reason record: the text itself (UTF-8, no terminator), 1 to
// spool::bounce_reason_bytes_max octets (recovery.h).

// Payload of a pause record (spool::destination_pause, recovery.h): u8 kind | u8[3] zero |
// u32 connections_max | i64 until_ms | f64 messages_per_second_max (IEEE bits) | destination
// (1 to destination_name_bytes_max octets). The record's message id is 0.
inline constexpr std::uint32_t pause_fixed_bytes = 24;

// Payload of a void_tail record.
inline constexpr std::uint32_t void_payload_bytes = 16;  // u64 segment id, u64 valid end

// Commit payload: u64 body_bytes | u32 range_count | u32 envelope_bytes |
// range_count × (u32 segment, u32 length, u64 offset) | envelope (envelope.h encoding).
inline constexpr std::uint32_t commit_fixed_bytes = 16;
inline constexpr std::uint32_t range_bytes = 16;

std::uint64_t seed(std::uint64_t salt, std::uint64_t offset) noexcept;

// Writes the 32 header bytes, computing the checksum over payload then header.
void encode_record(char* out, record_type type, message_id id, std::string_view payload,
                   std::uint64_t seed) noexcept;
// Header bytes 0..24 (no checksum): for streaming checksums of records built in place.
void encode_header_prefix(char* out, record_type type, std::uint32_t payload_bytes,
                          message_id id) noexcept;
// Checks magic, type and payload limit. Does not check the checksum.
bool decode_header(const char* in, record_header& out) noexcept;
bool verify(const char* header, std::string_view payload, std::uint64_t seed) noexcept;

void encode_file_header(const file_header& value, char* out) noexcept;
file_header decode_file_header(const char* in) noexcept;
void encode_state(const state_payload& value, char* out) noexcept;
state_payload decode_state(const char* in) noexcept;
void encode_action(const action_payload& value, char* out) noexcept;
action_payload decode_action(const char* in) noexcept;
// Appends a pause record's payload to `out`.
void encode_pause(const destination_pause& value, std::string& out);
// False when the payload is malformed (length, kind, name length).
bool decode_pause(std::string_view payload, destination_pause& out);

// Checks a commit record of `id` read from `offset` (header + payload) and returns its
// payload (a view into `record`); EBADMSG when it does not verify.
core::result<std::string_view> check_commit_record(std::string_view record, std::uint64_t salt,
                                                   std::uint64_t offset, message_id id) noexcept;
// Reads and verifies the commit record of `id` at `offset` (`bytes` = header + payload) and
// returns its payload. Blocking pread. EBADMSG when it does not verify.
core::result<std::string> read_commit_record(int fd, std::uint64_t salt, std::uint64_t offset,
                                             std::uint32_t bytes, message_id id);

template <typename T>
inline void store_le(char* out, T value) noexcept {
  std::memcpy(out, &value, sizeof value);
}
template <typename T>
inline T load_le(const char* in) noexcept {
  T value;
  std::memcpy(&value, in, sizeof value);
  return value;
}

}  // namespace ringmta::spool::format
