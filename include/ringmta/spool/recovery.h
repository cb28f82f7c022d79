// Start-up recovery: rebuilds one shard's queue from its segment files and state journals.
//
// Blocking syscalls (allowed at start-up). Read-only: never writes, truncates or deletes, so
// it is also what `ringmta spool ls` runs against a live spool. Guarantees: every message
// whose commit record and data records verify is returned with its envelope location and the
// last journaled state of each recipient; a message never committed never appears; torn
// tails and corrupt regions are skipped (scanning resumes at the next verifying record) and
// reported. Never crashes or allocates without bound on garbage input.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/index.h"
#include "ringmta/spool/recovery_io.h"

namespace ringmta::spool {

// An fd that closes itself. Moves only.
class unique_fd {
 public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : _fd(fd) {}
  unique_fd(unique_fd&& other) noexcept : _fd(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept;
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd();
  int get() const noexcept { return _fd; }
  int release() noexcept {
    const int fd = _fd;
    _fd = -1;
    return fd;
  }

 private:
  int _fd = -1;
};

// A file never given its header (crash while creating it) comes back empty (valid_bytes 0)
// and the store removes it; a file with a damaged header is left alone and reported.
struct recovered_file {
  std::uint32_t id = 0;
  unique_fd fd;              // read-only
  std::uint64_t salt = 0;
  std::uint64_t valid_bytes = 0;  // end of the last verifying record
  std::uint64_t file_bytes = 0;
  // Segments: the other segments named by the void_tail records found in this one (the store
  // keeps this file while they exist, or their voided commits would come back).
  std::vector<std::uint32_t> void_targets;
};

struct recovery_report {
  std::uint64_t segments = 0;
  std::uint64_t journals = 0;
  std::uint64_t records = 0;
  std::uint64_t messages = 0;           // queued messages returned
  std::uint64_t final_messages = 0;     // all recipients final, segment not yet reclaimed
  std::uint64_t state_records = 0;
  std::uint64_t action_records = 0;     // operator actions (hold, release, delete, bounce)
  std::uint64_t reason_records = 0;     // the operator's reasons given with bounces
  std::uint64_t pause_records = 0;      // reply rules' destination pauses and throttles
  std::uint64_t torn_tails = 0;         // non-zero bytes after the last record of a file
  std::uint64_t corrupt_regions = 0;    // unverifiable bytes followed by verifying records
  std::uint64_t voided_messages = 0;    // written by a batch whose write failed
  std::uint64_t incomplete_messages = 0;  // commit whose data is missing or corrupt
  std::uint64_t unreadable_files = 0;
  std::vector<std::string> problems;   // one line each, for the log; capped at 100 lines
};

// The longest operator's bounce reason the journal keeps (store::act). The admin API cuts a
// reason to 200 octets; the limit leaves room and bounds what recovery keeps per message.
inline constexpr std::size_t bounce_reason_bytes_max = 1024;

// A destination's suspension or throttle set by a [[reply_rule]] (store::pause_destination),
// journaled so that "suspended for 10 min" means 10 min across a restart (issue 16). One
// record per firing, not one per waiting job; the last record of a destination wins, and a
// snapshot carries only the unexpired ones. until_ms is wall-clock milliseconds: the queue's
// own unit, so a job recovered under the pause waits for exactly the moment the live pause
// ends (seconds would let it go up to 999 ms early, into the 421 again).
enum class pause_kind : std::uint8_t { lifted = 0, suspend = 1, throttle = 2 };
struct destination_pause {
  std::string destination;  // the scheduler's name ("example.com", "example.com@ip2")
  pause_kind kind = pause_kind::suspend;
  std::int64_t until_ms = 0;
  std::uint32_t connections_max = 0;      // throttle: 0 = not lowered
  double messages_per_second_max = 0;     // throttle: 0 = not lowered
  bool operator==(const destination_pause&) const = default;
};
// A domain (RFC 1035: 255 octets) plus an egress source's name, with room to spare.
inline constexpr std::size_t destination_name_bytes_max = 512;

struct recovered_state {
  std::uint32_t shard = 0;
  std::vector<recovered_file> segments;  // ascending id
  std::vector<recovered_file> journals;  // ascending id
  message_entries messages;  // status queued or final, ascending id (the store adopts them)
  // The operator's reason of each queued message's pending bounce that was given one.
  std::vector<std::pair<message_id, std::string>> bounce_reasons;
  // The last pause record of each kind of each destination (not lifted), expired ones
  // included: recovery has no clock (the simulator's is not the wall's); store::live_pauses
  // drops them.
  std::vector<destination_pause> pauses;
  message_id id_floor = 0;
  std::uint32_t next_file_id = 1;
  recovery_report report;
};

// `shard_directory` must exist. Fails only when the directory cannot be listed; damaged
// files are reported in the result, never fatal. Every file call goes through `io`: the
// kernel's by default, the simulator's disk image in tests/sim (recovery_io.h).
core::result<recovered_state> recover(const std::string& shard_directory, std::uint32_t shard,
                                      recovery_io& io = posix_recovery_io());

// "DIR/shard-<n>"; make_shard_directory creates it (and DIR) when missing.
std::string shard_directory(const std::string& spool_directory, std::uint32_t shard);
core::result<void> make_shard_directory(const std::string& spool_directory, std::uint32_t shard);
// The shard numbers of the "shard-<n>" directories in the spool directory, ascending; other
// entries are ignored. Fails only when the directory cannot be listed.
core::result<std::vector<std::uint32_t>> shards_in(const std::string& spool_directory);

// File names inside a shard directory.
std::string segment_file_name(std::uint32_t id);
std::string journal_file_name(std::uint32_t id);

}  // namespace ringmta::spool
