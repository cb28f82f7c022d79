#include "ringmta/admin/log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"

namespace ringmta::admin {

log_buffer::log_buffer(log_format format, std::size_t bytes_max)
    : _bytes_max(bytes_max), _format(format) {
  _text.reserve(bytes_max);  // all memory up front: appending never reallocates
}

void log_buffer::append(std::string_view bytes) noexcept {
  if (_overflow || _text.size() + bytes.size() > _bytes_max) {
    _overflow = true;
    return;
  }
  _text.append(bytes);
}

void log_buffer::append_escaped(std::string_view bytes) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  std::size_t plain_start = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    const bool needs_escape = c < 0x20 || c == '"' || c == '\\' || c == 0x7f;
    if (!needs_escape) continue;
    append(bytes.substr(plain_start, i - plain_start));
    plain_start = i + 1;
    switch (c) {
      case '"': append("\\\""); break;
      case '\\': append("\\\\"); break;
      case '\n': append("\\n"); break;
      case '\r': append("\\r"); break;
      case '\t': append("\\t"); break;
      default: {
        const char escaped[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        append(std::string_view(escaped, 6));
      }
    }
  }
  append(bytes.substr(plain_start));
}

void log_buffer::consume(std::size_t bytes) noexcept {
  RINGMTA_ASSERT(bytes <= _committed);
  _text.erase(0, bytes);
  _committed -= bytes;
}

void log_buffer::swap_text(std::string& batch) noexcept {
  RINGMTA_ASSERT(batch.empty() && _committed == _text.size());
  _text.swap(batch);
  _committed = 0;
}

namespace {

// "2026-11-21T21:55:35.123Z" into out[24]; the date part is recomputed once per second (a log
// line per message must not cost a gmtime and a printf).
void format_timestamp(std::int64_t unix_ms, char* out) noexcept {
  thread_local std::int64_t cached_second = -1;
  thread_local char cached[64];  // "YYYY-MM-DDTHH:MM:SS" (room for any int the format could print)
  const std::int64_t second = unix_ms / 1000;
  if (second != cached_second) {
    const std::time_t seconds = static_cast<std::time_t>(second);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", utc.tm_year + 1900,
                  utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    cached_second = second;
  }
  std::memcpy(out, cached, 19);
  const int ms = static_cast<int>(unix_ms % 1000);
  out[19] = '.';
  out[20] = static_cast<char>('0' + ms / 100);
  out[21] = static_cast<char>('0' + ms / 10 % 10);
  out[22] = static_cast<char>('0' + ms % 10);
  out[23] = 'Z';
}

}  // namespace

log_record::log_record(log_buffer& buffer, std::string_view event) noexcept
    : _buffer(buffer), _start(buffer._text.size()) {
  RINGMTA_ASSERT(_start == buffer._committed);  // one record at a time per buffer
  buffer._overflow = false;
  char stamp[24];
  format_timestamp(buffer._unix_ms, stamp);
  const std::string_view stamp_text(stamp, sizeof stamp);
  if (buffer._format == log_format::json) {
    buffer.append("{\"ts\":\"");
    buffer.append(stamp_text);
    buffer.append("\",\"event\":\"");
    buffer.append_escaped(event);
    buffer.append("\"");
  } else {
    buffer.append(stamp_text);
    buffer.append(" ");
    buffer.append_escaped(event);
  }
}

void log_record::key(std::string_view name) noexcept {
  if (_buffer._format == log_format::json) {
    _buffer.append(",\"");
    _buffer.append(name);
    _buffer.append("\":");
  } else {
    _buffer.append(" ");
    _buffer.append(name);
    _buffer.append("=");
  }
}

namespace {
// Text format (logfmt): a value goes bare unless it is empty or holds a space, '=', '"', '\\'
// or a control character; then it is quoted, with the JSON escapes inside the quotes.
bool needs_quotes(std::string_view value) noexcept {
  if (value.empty()) return true;
  for (const char ch : value) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == '=' || c == '"' || c == '\\' || c == 0x7f) return true;
  }
  return false;
}
}  // namespace

log_record& log_record::field(std::string_view name, std::string_view value) noexcept {
  key(name);
  const bool quoted = _buffer._format == log_format::json || needs_quotes(value);
  if (quoted) _buffer.append("\"");
  _buffer.append_escaped(value);
  if (quoted) _buffer.append("\"");
  return *this;
}

log_record& log_record::field(std::string_view name, std::int64_t value) noexcept {
  key(name);
  char digits[24];
  const auto end = fmt::format_to_n(digits, sizeof digits, "{}", value);
  _buffer.append(std::string_view(digits, end.size));
  return *this;
}

log_record& log_record::field(std::string_view name, std::uint64_t value) noexcept {
  key(name);
  char digits[24];
  const auto end = fmt::format_to_n(digits, sizeof digits, "{}", value);
  _buffer.append(std::string_view(digits, end.size));
  return *this;
}

log_record& log_record::field(std::string_view name, double value) noexcept {
  key(name);
  char digits[32];
  const auto end = fmt::format_to_n(digits, sizeof digits, "{:.6g}", value);
  _buffer.append(std::string_view(digits, end.size));
  return *this;
}

log_record& log_record::hex_field(std::string_view name, std::uint64_t value) noexcept {
  char digits[24];
  const auto end = fmt::format_to_n(digits, sizeof digits, "{:016x}", value);
  return field(name, std::string_view(digits, end.size));
}

log_record& log_record::seconds_field(std::string_view name, std::int64_t milliseconds) noexcept {
  key(name);
  char digits[32];
  const std::int64_t whole = milliseconds / 1000;
  const std::int64_t fraction = (milliseconds < 0 ? -milliseconds : milliseconds) % 1000;
  const auto end = fmt::format_to_n(digits, sizeof digits, "{}{}.{:03}",
                                    milliseconds < 0 && whole == 0 ? "-" : "", whole, fraction);
  _buffer.append(std::string_view(digits, end.size));
  return *this;
}

log_record& log_record::field(std::string_view name, bool value) noexcept {
  key(name);
  _buffer.append(value ? "true" : "false");
  return *this;
}

void log_record::end() noexcept {
  if (!_open) return;
  _open = false;
  _buffer.append(_buffer._format == log_format::json ? "}\n" : "\n");
  if (_buffer._overflow) {  // roll the partial record back: never write half a line
    _buffer._text.resize(_start);
    _buffer._overflow = false;
    ++_buffer._dropped;
    return;
  }
  _buffer._committed = _buffer._text.size();
}

std::uint64_t session_id_base(unsigned shard, bool outbound) noexcept {
  const auto clock = static_cast<std::uint64_t>(core::wall_milliseconds()) & ((1ull << 40) - 1);
  return (std::uint64_t{shard & 0xff} << 56) | (outbound ? 1ull << 55 : 0) | (clock << 12);
}

record_head parse_record_head(std::string_view line) noexcept {
  record_head head;
  constexpr std::string_view json_start = "{\"ts\":\"";
  constexpr std::string_view json_event = "\",\"event\":\"";
  constexpr std::size_t stamp_bytes = 24;  // 2026-01-02T03:04:05.678Z
  if (line.starts_with(json_start) && line.size() > 7 + stamp_bytes + json_event.size() &&
      line.substr(7 + stamp_bytes, json_event.size()) == json_event) {
    head.timestamp = line.substr(7, stamp_bytes);
    const auto rest = line.substr(7 + stamp_bytes + json_event.size());
    head.event = rest.substr(0, rest.find('"'));
  } else if (line.size() > stamp_bytes && line[stamp_bytes] == ' ') {
    head.timestamp = line.substr(0, stamp_bytes);
    const auto rest = line.substr(stamp_bytes + 1);
    head.event = rest.substr(0, rest.find(' '));
  }
  if (head.event.empty() || head.event.size() > 32) head.event = "-";  // RFC 5424 MSGID
  return head;
}

void flush_to(log_buffer& buffer, int fd) noexcept {
  while (!buffer.pending().empty()) {
    const auto text = buffer.pending();
    const ssize_t written = ::write(fd, text.data(), text.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {  // a broken log sink must not stop mail: drop what we cannot write
      buffer.consume(text.size());
      return;
    }
    buffer.consume(static_cast<std::size_t>(written));
  }
}

}  // namespace ringmta::admin
