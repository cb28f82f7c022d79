// Structured log records: one JSON object per line (or logfmt text: key=value, values quoted
// when they hold spaces, '=', quotes or control characters), for reception,
// delivery, transient failure, bounce, and daemon events (DESIGN principle 7).
//
// Each shard owns a log_buffer and appends records while it works; once per loop iteration it
// hands the whole buffer to the log writer thread (admin/log_writer.h), so logging costs no
// syscall on the shard. The buffer is bounded: when full, records are counted as dropped
// rather than growing memory.
// Field values are escaped (RFC 8259 §7), so a hostile envelope cannot forge a log line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringmta::admin {

enum class log_format : std::uint8_t { json, text };

class log_buffer;

// Builds one record in place; the record is committed by end() (or the destructor).
class log_record {
 public:
  log_record(log_buffer& buffer, std::string_view event) noexcept;
  log_record(const log_record&) = delete;
  log_record& operator=(const log_record&) = delete;
  ~log_record() { end(); }

  log_record& field(std::string_view key, std::string_view value) noexcept;
  log_record& field(std::string_view key, const char* value) noexcept {
    return field(key, std::string_view(value));
  }
  log_record& field(std::string_view key, std::int64_t value) noexcept;
  log_record& field(std::string_view key, std::uint64_t value) noexcept;
  log_record& field(std::string_view key, int value) noexcept {
    return field(key, static_cast<std::int64_t>(value));
  }
  log_record& field(std::string_view key, unsigned value) noexcept {
    return field(key, static_cast<std::uint64_t>(value));
  }
  log_record& field(std::string_view key, double value) noexcept;
  log_record& field(std::string_view key, bool value) noexcept;
  // 16 lowercase hex digits, like message ids (session ids).
  log_record& hex_field(std::string_view key, std::uint64_t value) noexcept;
  // Seconds with millisecond precision from a count of milliseconds ("1.234").
  log_record& seconds_field(std::string_view key, std::int64_t milliseconds) noexcept;
  void end() noexcept;

 private:
  void key(std::string_view name) noexcept;
  log_buffer& _buffer;
  std::size_t _start;
  bool _open = true;
};

class log_buffer {
 public:
  explicit log_buffer(log_format format, std::size_t bytes_max = 1 << 20);

  log_record record(std::string_view event) noexcept { return log_record(*this, event); }

  // Bytes of complete records, ready to write; then consume() what was written.
  std::string_view pending() const noexcept { return {_text.data(), _committed}; }
  void consume(std::size_t bytes) noexcept;
  std::uint64_t dropped_records() const noexcept { return _dropped; }
  log_format format() const noexcept { return _format; }
  void set_format(log_format format) noexcept { _format = format; }  // for the next records
  // Gives every committed record away: `batch` (empty, with reserved capacity) takes the
  // buffer's place, so nothing is copied or allocated. No record may be open.
  void swap_text(std::string& batch) noexcept;

  // Wall-clock time for the "ts" field; the embedder sets it once per loop iteration.
  void set_time(std::int64_t unix_ms) noexcept { _unix_ms = unix_ms; }

 private:
  friend class log_record;
  void append(std::string_view bytes) noexcept;
  void append_escaped(std::string_view bytes) noexcept;
  std::string _text;
  std::size_t _committed = 0;
  std::size_t _bytes_max;
  bool _overflow = false;  // the record being built did not fit
  std::uint64_t _dropped = 0;
  std::int64_t _unix_ms = 0;
  log_format _format;
};

// The first session id of a shard's inbound or outbound sessions (log records): the shard in
// the top byte, the direction in the next bit, and below them a count that starts from the
// clock, so that ids do not repeat after a restart. Add one per session.
std::uint64_t session_id_base(unsigned shard, bool outbound) noexcept;

// The timestamp and event name at the start of a record line (json or text format), as the
// log buffer writes them; "-" for either when the line is not such a record (the syslog
// output's MSGID, the event stream's type filter).
struct record_head {
  std::string_view timestamp = "-";
  std::string_view event = "-";
};
record_head parse_record_head(std::string_view line) noexcept;

// Writes pending records to fd (blocking; stderr/stdout or a file) and consumes them.
void flush_to(log_buffer& buffer, int fd) noexcept;

}  // namespace ringmta::admin
