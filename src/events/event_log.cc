// The webhook's durable queue. See events/event_log.h.
#include "ringmta/events/event_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <iterator>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringmta/core/assert.h"

namespace ringmta::events {

namespace {

constexpr std::string_view cursor_magic = "ringmta-events-cursor 1 ";
constexpr std::string_view segment_suffix = ".jsonl";
constexpr std::size_t line_bytes_max = 16u << 20;  // longer than any record a log buffer holds

bool parse_decimal(std::string_view text, std::uint64_t& out) noexcept {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

bool write_all(int fd, std::string_view bytes) noexcept {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  return true;
}

std::uint64_t count_lines(std::string_view bytes) noexcept {
  return static_cast<std::uint64_t>(std::count(bytes.begin(), bytes.end(), '\n'));
}

// Lines from `offset` to the end of a segment file (what a drop loses).
std::uint64_t count_lines_from(int directory_fd, const std::string& name, std::uint64_t offset) {
  const int fd = ::openat(directory_fd, name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::uint64_t lines = 0;
  std::vector<char> chunk(1 << 16);
  for (;;) {
    const ssize_t got = ::pread(fd, chunk.data(), chunk.size(), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    lines += count_lines({chunk.data(), static_cast<std::size_t>(got)});
    offset += static_cast<std::uint64_t>(got);
  }
  ::close(fd);
  return lines;
}

}  // namespace

std::string format_cursor(position at) {
  return fmt::format("{}{} {}\n", cursor_magic, at.segment, at.offset);
}

std::optional<position> parse_cursor(std::string_view text) noexcept {
  if (!text.starts_with(cursor_magic) || !text.ends_with('\n')) return std::nullopt;
  text.remove_prefix(cursor_magic.size());
  text.remove_suffix(1);
  const auto space = text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  position at;
  if (!parse_decimal(text.substr(0, space), at.segment) ||
      !parse_decimal(text.substr(space + 1), at.offset))
    return std::nullopt;
  return at;
}

std::string segment_name(std::uint64_t segment) {
  return fmt::format("{:016x}{}", segment, segment_suffix);
}

std::optional<std::uint64_t> parse_segment_name(std::string_view name) noexcept {
  if (name.size() != 16 + segment_suffix.size() || !name.ends_with(segment_suffix))
    return std::nullopt;
  std::uint64_t segment = 0;
  for (const char c : name.substr(0, 16)) {
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return std::nullopt;
    segment = segment << 4 | static_cast<std::uint64_t>(digit);
  }
  return segment;
}

event_log::event_log(std::string directory, std::uint64_t max_backlog_bytes)
    : _directory(std::move(directory)), _max_backlog_bytes(max_backlog_bytes) {}

event_log::~event_log() {
  if (_write_fd >= 0) ::close(_write_fd);
  if (_directory_fd >= 0) ::close(_directory_fd);
}

std::unique_ptr<event_log> event_log::open(const std::string& directory,
                                           std::uint64_t max_backlog_bytes,
                                           std::string& problem) {
  std::unique_ptr<event_log> log(new event_log(directory, max_backlog_bytes));
  if (::mkdir(directory.c_str(), 0750) != 0 && errno != EEXIST) {
    problem = fmt::format("cannot create {}: {}", directory, std::strerror(errno));
    return nullptr;
  }
  log->_directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* listing = log->_directory_fd < 0 ? nullptr : ::fdopendir(::dup(log->_directory_fd));
  if (listing == nullptr) {
    problem = fmt::format("cannot read {}: {}", directory, std::strerror(errno));
    return nullptr;
  }
  while (const dirent* entry = ::readdir(listing)) {
    const auto segment = parse_segment_name(entry->d_name);
    struct stat about {};
    if (segment && ::fstatat(log->_directory_fd, entry->d_name, &about, 0) == 0)
      log->_segments[*segment] = static_cast<std::uint64_t>(about.st_size);
  }
  ::closedir(listing);
  ::unlinkat(log->_directory_fd, "cursor.tmp", 0);
  // Segment numbers only grow (event ids name them): the next is past every one seen, and the
  // cursor written below remembers it even when no file is left.
  const std::uint64_t newest = log->_segments.empty() ? 0 : log->_segments.rbegin()->first;
  // Empty segments hold nothing to send (each start opens one): a daemon restarted in a loop
  // with no records leaves one file, not one per start.
  for (auto it = log->_segments.begin(); it != log->_segments.end();) {
    if (it->second != 0) {
      ++it;
      continue;
    }
    ::unlinkat(log->_directory_fd, segment_name(it->first).c_str(), 0);
    it = log->_segments.erase(it);
  }

  std::lock_guard lock(log->_mutex);
  const std::uint64_t oldest = log->_segments.empty() ? 1 : log->_segments.begin()->first;
  log->_cursor = {oldest, 0};
  char text[128];
  const int fd = ::openat(log->_directory_fd, "cursor", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    const ssize_t got = ::read(fd, text, sizeof text);
    ::close(fd);
    const auto saved = got > 0 ? parse_cursor({text, static_cast<std::size_t>(got)})
                               : std::nullopt;
    if (saved) log->_cursor = *saved;
    else problem = fmt::format("{}/cursor is not a cursor: resending from the oldest segment",
                               directory);
  }
  // Segments before the cursor were acknowledged (a crash came before their removal); a cursor
  // into a segment that is gone moves to the next one there is.
  while (!log->_segments.empty() && log->_segments.begin()->first < log->_cursor.segment) {
    ::unlinkat(log->_directory_fd, segment_name(log->_segments.begin()->first).c_str(), 0);
    log->_segments.erase(log->_segments.begin());
  }
  const std::uint64_t last = std::max(newest, log->_cursor.segment);
  if (!log->_segments.empty() && log->_segments.begin()->first != log->_cursor.segment)
    log->_cursor = {log->_segments.begin()->first, 0};
  if (auto at = log->_segments.find(log->_cursor.segment); at != log->_segments.end())
    log->_cursor.offset = std::min(log->_cursor.offset, at->second);
  if (!log->open_segment_locked(last + 1)) {
    problem = fmt::format("cannot create a segment in {}: {}", directory, std::strerror(errno));
    return nullptr;
  }
  if (log->_segments.size() == 1) log->_cursor = {log->_write_segment, 0};
  if (!log->persist_cursor_locked()) {
    problem = fmt::format("cannot write {}/cursor: {}", directory, std::strerror(errno));
    return nullptr;
  }
  log->_counters.backlog_bytes.set(static_cast<std::int64_t>(log->backlog_locked()));
  return log;
}

bool event_log::open_segment_locked(std::uint64_t segment) noexcept {
  const std::string name = segment_name(segment);
  const int fd = ::openat(_directory_fd, name.c_str(),
                          O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return false;
  if (_write_fd >= 0) ::close(_write_fd);
  _write_fd = fd;
  _write_segment = segment;
  _segments[segment] = 0;
  ::fsync(_directory_fd);  // the new name survives a power loss
  return true;
}

std::uint64_t event_log::segment_bytes_max() const noexcept {
  return std::clamp<std::uint64_t>(_max_backlog_bytes / 4, 64u << 10, 16u << 20);
}

std::uint64_t event_log::backlog_locked() const noexcept {
  std::uint64_t bytes = 0;
  for (auto it = _segments.lower_bound(_cursor.segment); it != _segments.end(); ++it)
    bytes += it->second;
  return bytes - std::min(bytes, _cursor.offset);
}

void event_log::append(std::string_view lines) noexcept {
  if (lines.empty()) return;
  RINGMTA_ASSERT(lines.back() == '\n');
  std::lock_guard lock(_mutex);
  if (_segments[_write_segment] >= segment_bytes_max() &&
      !open_segment_locked(_write_segment + 1)) {
    _counters.append_failures.add(count_lines(lines));  // keeps appending to the old one
  }
  auto& size = _segments[_write_segment];
  if (write_all(_write_fd, lines)) {
    size += lines.size();
    _counters.appended.add(count_lines(lines));
  } else {  // never leave half a line for the next append to complete
    if (::ftruncate(_write_fd, static_cast<off_t>(size)) != 0) open_segment_locked(
        _write_segment + 1);
    _counters.append_failures.add(count_lines(lines));
  }
  enforce_limit_locked();
  _counters.backlog_bytes.set(static_cast<std::int64_t>(backlog_locked()));
  _changed.notify_all();
}

void event_log::enforce_limit_locked() noexcept {
  while (backlog_locked() > _max_backlog_bytes && _segments.begin()->first != _write_segment) {
    const std::uint64_t oldest = _segments.begin()->first;
    const std::uint64_t from = oldest == _cursor.segment ? _cursor.offset : 0;
    const std::string name = segment_name(oldest);
    const std::uint64_t lost = count_lines_from(_directory_fd, name, from);
    ::unlinkat(_directory_fd, name.c_str(), 0);
    _segments.erase(_segments.begin());
    _counters.dropped.add(lost);
    _dropped_unreported += lost;
    _cursor = {_segments.begin()->first, 0};
    persist_cursor_locked();
  }
}

bool event_log::persist_cursor_locked() noexcept {
  const std::string text = format_cursor(_cursor);
  const int fd = ::openat(_directory_fd, "cursor.tmp",
                          O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return false;
  const bool written = write_all(fd, text) && ::fdatasync(fd) == 0;
  ::close(fd);
  if (!written || ::renameat(_directory_fd, "cursor.tmp", _directory_fd, "cursor") != 0)
    return false;
  return ::fsync(_directory_fd) == 0;
}

batch event_log::read(std::uint32_t records_max, std::size_t bytes_max) {
  RINGMTA_ASSERT(records_max > 0);
  position at;
  std::uint64_t size = 0;
  bool sealed = false;  // no more appends to this segment
  {
    std::lock_guard lock(_mutex);
    at = _cursor;
    // A segment read to its end, with a newer one behind it: go on in the newer one.
    for (auto it = _segments.find(at.segment); it != _segments.end(); ++it) {
      at = {it->first, it->first == _cursor.segment ? _cursor.offset : 0};
      size = it->second;
      sealed = it->first != _write_segment;
      if (!sealed || at.offset < size) break;
    }
  }
  batch out{at, at, "[", 0, 0, false};
  if (at.offset >= size) return out;
  const int fd = ::openat(_directory_fd, segment_name(at.segment).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  ::fdatasync(fd);
  // About a batch's worth; more only when not even one line fits in it.
  std::string bytes;
  for (std::size_t want = bytes_max + (64u << 10);; want = line_bytes_max) {
    bytes.resize(std::min<std::uint64_t>(size - at.offset, want));
    const ssize_t got = ::pread(fd, bytes.data(), bytes.size(), static_cast<off_t>(at.offset));
    bytes.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
    if (bytes.find('\n') != std::string::npos || want >= line_bytes_max ||
        at.offset + bytes.size() >= size)
      break;
  }
  ::close(fd);
  std::string_view rest(bytes);
  while (out.records < records_max && (out.records == 0 || out.json.size() < bytes_max)) {
    const auto newline = rest.find('\n');
    if (newline == std::string_view::npos) break;
    const auto line = rest.substr(0, newline);
    const std::uint64_t line_offset = out.end.offset;
    rest.remove_prefix(newline + 1);
    out.end.offset += newline + 1;
    if (!nlohmann::json::accept(line) || !line.starts_with('{')) {
      ++out.invalid;
      continue;
    }
    if (out.records++ > 0) out.json += ',';
    // Each record gets its place in the event log as "event_id": the same after a restart,
    // so a receiver can drop the duplicates at-least-once brings.
    fmt::format_to(std::back_inserter(out.json), "{{\"event_id\":\"{:x}-{}\"{}", at.segment,
                   line_offset, line.size() > 2 ? "," : "");
    out.json.append(line.substr(1));
  }
  // A sealed segment's tail without a newline (torn by a power loss), or a line too long to
  // be a record: skipped, so that it cannot hold the queue up forever.
  const bool read_all = at.offset + bytes.size() >= size;
  if (sealed && !rest.empty() && rest.find('\n') == std::string_view::npos && read_all) {
    out.end.offset = size;
    ++out.invalid;
  } else if (out.end == out.start && rest.size() >= line_bytes_max) {
    out.end.offset += rest.size();
    ++out.invalid;
  }
  out.full = out.records >= records_max || out.json.size() >= bytes_max;
  out.json += ']';
  _counters.invalid.add(out.invalid);
  return out;
}

bool event_log::acknowledge(position end) noexcept {
  std::lock_guard lock(_mutex);
  if (end <= _cursor) return true;  // the backlog limit moved it past this batch already
  _cursor = end;
  while (_segments.begin()->first < _cursor.segment) {
    ::unlinkat(_directory_fd, segment_name(_segments.begin()->first).c_str(), 0);
    _segments.erase(_segments.begin());
  }
  _counters.backlog_bytes.set(static_cast<std::int64_t>(backlog_locked()));
  return persist_cursor_locked();
}

bool event_log::wait(std::chrono::milliseconds timeout, std::uint64_t backlog_above) {
  std::unique_lock lock(_mutex);
  _changed.wait_for(lock, timeout, [&] {
    return _interrupted || backlog_locked() > backlog_above;
  });
  return !_interrupted && backlog_locked() > backlog_above;
}

void event_log::interrupt() noexcept {
  {
    std::lock_guard lock(_mutex);
    _interrupted = true;
  }
  _changed.notify_all();
}

position event_log::cursor() const {
  std::lock_guard lock(_mutex);
  return _cursor;
}

std::uint64_t event_log::backlog_bytes() const {
  std::lock_guard lock(_mutex);
  return backlog_locked();
}

std::uint64_t event_log::take_dropped_report() noexcept {
  std::lock_guard lock(_mutex);
  return std::exchange(_dropped_unreported, 0);
}

void event_log::set_max_backlog(std::uint64_t bytes) noexcept {
  std::lock_guard lock(_mutex);
  _max_backlog_bytes = bytes;
}

}  // namespace ringmta::events
