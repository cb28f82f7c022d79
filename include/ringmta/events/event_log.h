// events::event_log: the durable queue of log records on their way to the webhook
// (issue 14, "Events out"). At-least-once with a durable cursor:
//
//   SPOOL/events/<16 hex digits>.jsonl  append-only segments, one JSON object per line
//   SPOOL/events/cursor                 "ringmta-events-cursor 1 SEGMENT OFFSET\n": the first
//                                       byte the endpoint has not acknowledged (written to
//                                       cursor.tmp, fdatasync'd, renamed, directory synced)
//
// The log writer thread appends (append()); the webhook thread reads a batch from the cursor
// (read()), posts it, and after a 2xx moves the cursor past it (acknowledge()). A restart
// resends at most the batches that were unacknowledged; nothing before the cursor is resent
// and nothing after it is lost. Every start opens a new segment, so a line torn by a crash
// never has a later record glued to it; a partial append is truncated away at once.
//
// Bounded: when the bytes past the cursor exceed max_backlog_bytes, the oldest segments are
// deleted (their unacknowledged records counted as dropped) and the cursor jumps past them:
// mail never waits for the endpoint. Segments are at most a quarter of the backlog (64 KiB ..
// 16 MiB), so a drop loses about that much.
//
// Threads: append() on the writer thread, read()/acknowledge()/wait() on the webhook thread;
// one mutex guards the segment table and the cursor (never a shard: shards never call in).
#pragma once

#include <chrono>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "ringmta/admin/metrics.h"

namespace ringmta::events {

struct position {
  std::uint64_t segment = 0;
  std::uint64_t offset = 0;
  auto operator<=>(const position&) const = default;
};

// The cursor file's text, and its parser (nullopt for anything but exactly that form).
std::string format_cursor(position at);
std::optional<position> parse_cursor(std::string_view text) noexcept;
// "00000000000000a1.jsonl" ↔ 0xa1; nullopt for any other name.
std::string segment_name(std::uint64_t segment);
std::optional<std::uint64_t> parse_segment_name(std::string_view name) noexcept;

// Records read from the cursor on: `json` is a JSON array of them, ready to post.
struct batch {
  position start;
  position end;  // the cursor after an acknowledgement
  std::string json;
  std::uint32_t records = 0;
  std::uint32_t invalid = 0;  // lines skipped: not JSON (a torn tail after power loss)
  bool full = false;          // stopped at records_max or bytes_max: send it now
  bool empty() const noexcept { return start == end; }
};

struct event_log_counters {
  admin::counter appended;        // records written to the segments (writer thread)
  admin::counter append_failures; // appends lost to a write error (writer thread)
  admin::counter dropped;         // records deleted unsent by the backlog limit (writer thread)
  admin::counter invalid;         // lines skipped by read() (webhook thread)
  admin::gauge backlog_bytes;     // bytes past the cursor (either, under the mutex)
};

class event_log {
 public:
  // Creates `directory` (mode 0750) when missing, reads the cursor (a missing one: from the
  // oldest segment; a corrupt one: the same, and `problem` says so) and opens a new segment.
  // nullptr and `problem` when the directory cannot be used.
  static std::unique_ptr<event_log> open(const std::string& directory,
                                         std::uint64_t max_backlog_bytes, std::string& problem);
  ~event_log();
  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  // Writer thread: complete JSON lines. Enforces the backlog limit, wakes wait().
  void append(std::string_view lines) noexcept;

  // Webhook thread: up to `records_max` records and about `bytes_max` bytes from the cursor
  // (at least one record when one is there). fdatasyncs the segment it reads first, so what
  // is posted would survive a power loss too.
  batch read(std::uint32_t records_max, std::size_t bytes_max);
  // Moves the cursor to `end` (durably) unless the backlog limit already moved it further.
  // False when the cursor file could not be written (the batch will be sent again).
  bool acknowledge(position end) noexcept;
  // Until more than `backlog_above` bytes lie past the cursor, `timeout` passes or
  // interrupt(). True: they do.
  bool wait(std::chrono::milliseconds timeout, std::uint64_t backlog_above = 0);
  void interrupt() noexcept;

  position cursor() const;
  std::uint64_t backlog_bytes() const;
  // Records dropped by the backlog limit since the last call (the webhook logs them).
  std::uint64_t take_dropped_report() noexcept;
  void set_max_backlog(std::uint64_t bytes) noexcept;  // reload
  const event_log_counters& counters() const noexcept { return _counters; }
  const std::string& directory() const noexcept { return _directory; }

 private:
  event_log(std::string directory, std::uint64_t max_backlog_bytes);
  std::uint64_t backlog_locked() const noexcept;
  void enforce_limit_locked() noexcept;
  bool persist_cursor_locked() noexcept;
  bool open_segment_locked(std::uint64_t segment) noexcept;
  std::uint64_t segment_bytes_max() const noexcept;

  std::string _directory;
  mutable std::mutex _mutex;
  std::condition_variable _changed;
  std::map<std::uint64_t, std::uint64_t> _segments;  // segment → bytes
  position _cursor;
  std::uint64_t _write_segment = 0;
  int _write_fd = -1;
  int _directory_fd = -1;
  std::uint64_t _max_backlog_bytes;
  std::uint64_t _dropped_unreported = 0;
  bool _interrupted = false;
  event_log_counters _counters;
};

}  // namespace ringmta::events
