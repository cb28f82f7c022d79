// Start-up recovery: scan every segment, then apply the journals. See recovery.h.
#include "ringmta/spool/recovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <span>

#include "format.h"
#include "ringmta/spool/store.h"

namespace ringmta::spool {

unique_fd& unique_fd::operator=(unique_fd&& other) noexcept {
  if (this != &other) {
    if (_fd >= 0) ::close(_fd);
    _fd = other.release();
  }
  return *this;
}

unique_fd::~unique_fd() {
  if (_fd >= 0) ::close(_fd);
}

std::string shard_directory(const std::string& spool_directory, std::uint32_t shard) {
  return spool_directory + "/shard-" + std::to_string(shard);
}

namespace {

// A new directory entry is durable only once its parent directory is synced (POSIX; ext4
// happens to journal it, a power-loss-strict filesystem does not).
core::result<void> sync_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return core::fail(errno);
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (synced != 0) return core::fail(error);
  return {};
}

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/', path.size() > 1 ? path.size() - 2 : 0);
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

core::result<void> make_shard_directory(const std::string& spool_directory, std::uint32_t shard) {
  for (const auto& path : {spool_directory, shard_directory(spool_directory, shard)}) {
    if (::mkdir(path.c_str(), 0750) != 0) {
      if (errno != EEXIST) return core::fail(errno);
      continue;
    }
    if (auto synced = sync_directory(parent_of(path)); !synced) return synced;
  }
  return {};
}

core::result<std::vector<std::uint32_t>> shards_in(const std::string& spool_directory) {
  DIR* directory = ::opendir(spool_directory.c_str());
  if (directory == nullptr) return core::fail(errno);
  std::vector<std::uint32_t> shards;
  while (const dirent* item = ::readdir(directory)) {
    const std::string_view name(item->d_name);
    if (!name.starts_with("shard-") || name.size() == 6 || name.size() > 9) continue;
    std::uint32_t value = 0;
    bool digits = true;
    for (char c : name.substr(6)) {
      digits = digits && c >= '0' && c <= '9';
      value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (digits && value <= message_id_shard_max) shards.push_back(value);
  }
  ::closedir(directory);
  std::sort(shards.begin(), shards.end());
  return shards;
}

std::string segment_file_name(std::uint32_t id) {
  char name[32];
  std::snprintf(name, sizeof name, "segment-%08x.log", id);
  return name;
}

std::string journal_file_name(std::uint32_t id) {
  char name[32];
  std::snprintf(name, sizeof name, "journal-%08x.log", id);
  return name;
}

namespace {

constexpr std::size_t window_bytes = 1u << 20;
constexpr std::size_t problems_max = 100;

// "segment-0000002a.log" → 0x2a; anything else → 0.
std::uint32_t parse_file_id(std::string_view name, std::string_view prefix) {
  if (name.size() != prefix.size() + 12 || name.substr(0, prefix.size()) != prefix ||
      name.substr(prefix.size() + 8) != ".log") {
    return 0;
  }
  std::uint32_t id = 0;
  for (char c : name.substr(prefix.size(), 8)) {
    const bool digit = c >= '0' && c <= '9';
    if (!digit && !(c >= 'a' && c <= 'f')) return 0;
    id = id << 4 | static_cast<std::uint32_t>(digit ? c - '0' : c - 'a' + 10);
  }
  return id;
}

// Buffered positional reads over one file.
class file_reader {
 public:
  file_reader(recovery_io& io, int fd, std::uint64_t size)
      : _io(io), _fd(fd), _size(size), _held(io.in_memory(fd)) {}
  std::uint64_t size() const noexcept { return _size; }
  // The first offset at or after `offset` that may hold data: what lies before it reads as
  // zeros (a hole, or on ext4 an extent preallocated and never written nor read: the open
  // segment's tail). `offset` itself when the filesystem cannot tell; size() when nothing
  // follows (SEEK_DATA, Linux 3.1; no data is read, so no page is zero-filled and copied).
  std::uint64_t next_data(std::uint64_t offset) const noexcept {
    const std::int64_t data = _io.seek_data(_fd, offset);
    if (data < 0) return data == -ENXIO ? _size : offset;
    return std::clamp<std::uint64_t>(static_cast<std::uint64_t>(data), offset, _size);
  }
  // The end of the run of data `offset` is in: where the next hole (as next_data means it)
  // starts, or size() (SEEK_HOLE; a filesystem that cannot tell has one hole, at the end).
  // Always past `offset` when `offset` is before size(). Reading stops there: the zeros after
  // it need not be copied and checked (issue 16: a restart of a simulated shard copied and
  // compared up to 1 MiB of its segments' unwritten tails, each file, each restart).
  std::uint64_t data_end(std::uint64_t offset) const noexcept {
    const std::int64_t hole = _io.seek_hole(_fd, offset);
    if (hole < 0 || static_cast<std::uint64_t>(hole) <= offset) return _size;
    return std::min<std::uint64_t>(static_cast<std::uint64_t>(hole), _size);
  }
  // Bytes [offset, offset+bytes) or an empty view past the end or on a read error.
  std::string_view get(std::uint64_t offset, std::size_t bytes) {
    if (offset > _size || bytes > _size - offset) return {};
    if (offset <= _held.size() && bytes <= _held.size() - offset)
      return _held.substr(static_cast<std::size_t>(offset), bytes);
    if (offset < _start || offset + bytes > _start + _length) {
      std::size_t want = static_cast<std::size_t>(
          std::min<std::uint64_t>(std::max(bytes, window_bytes), _size - offset));
      // The read-ahead stops at the end of the data (the bytes asked for are read whatever
      // follows: a record cut by a hole reads as zeros there and fails its checksum).
      const std::uint64_t data = data_end(offset) - offset;
      if (data >= bytes && data < want) want = static_cast<std::size_t>(data);
      // Not zero-filled (for overwrite, not a resize): pread overwrites what is used, and a
      // restart reads many files, each a window of up to 1 MB (issue 16: a tenth of a
      // crash-heavy simulation's instructions went to zeroing these windows).
      if (want > _capacity) {
        _buffer = std::make_unique_for_overwrite<char[]>(want);
        _capacity = want;
      }
      std::size_t done = 0;
      while (done < want) {
        const std::int64_t got = _io.read_at(_fd, _buffer.get() + done, want - done, offset + done);
        if (got == -EINTR) continue;
        if (got <= 0) break;
        done += static_cast<std::size_t>(got);
      }
      _length = done;
      _start = offset;
      if (bytes > done) return {};
    }
    return std::string_view(_buffer.get() + (offset - _start), bytes);
  }

 private:
  recovery_io& _io;
  int _fd;
  std::uint64_t _size;
  std::string_view _held;  // recovery_io::in_memory: read in place, not into _buffer
  std::uint64_t _start = 0;
  std::unique_ptr<char[]> _buffer;
  std::size_t _capacity = 0;
  std::size_t _length = 0;  // bytes of _buffer read from _start
};

// Issue 15: with millions of messages queued, recovery keeps flat vectors (no node or vector
// per message): data records, commits and journal records in scan order, sorted by id once
// they are all read; the messages built in id order and walked in it by the journal pass.
struct data_seen {
  message_id id = 0;
  body_range range;  // in file order: segments ascending, offsets ascending within one
};

struct commit_seen {
  message_id id = 0;
  std::uint32_t segment = 0;
  std::uint32_t bytes = 0;
  std::uint64_t offset = 0;
  std::uint32_t recipients = 0;
  std::uint32_t range_count = 0;
  std::size_t range_first = 0;  // its ranges: scan_context::named[first, first + count)
};

struct void_seen {
  std::uint64_t segment;
  std::uint64_t valid_end;
  std::uint32_t carrier;  // the segment holding the record
};

// A state or action record of a journal, kept until every journal is read and then applied
// in (id, journal, offset) order (sort_by_id keeps the reading order within an id): each
// message's records in journal order (only the order of one message's records matters), the
// messages walked in id order, without a lookup per record (issue 15: random probes into
// millions of entries cost more than one sort).
struct journal_seen {
  message_id id = 0;
  std::uint64_t offset = 0;
  std::uint32_t journal = 0;
  bool action = false;
  format::state_payload state;  // state records
  std::uint8_t action_code = 0;  // action records
};

// A reason record: the operator's text for a message's bounce (few: operator actions).
struct reason_seen {
  message_id id = 0;
  std::string text;
};

struct scan_context {
  recovery_io* io = nullptr;
  std::string directory;
  std::uint32_t shard = 0;
  recovered_state* state = nullptr;
  std::vector<data_seen> data;
  std::vector<commit_seen> commits;
  std::vector<body_range> named;  // the ranges every commit names, back to back
  commit_view commit;             // reused for every commit record
  std::vector<void_seen> voids;
  message_entries messages;  // ascending id, after build_messages
  std::vector<journal_seen> journal;    // every state and action record, in journal order
  std::vector<reason_seen> reasons;     // every reason record, in journal order
  std::vector<destination_pause> pauses;  // every pause record, in journal order
  void problem(const std::string& text) {
    auto& problems = state->report.problems;
    if (problems.size() < problems_max) problems.push_back(text);
  }
};

// Sorts records by message id, those of one id kept in the order they were read (file order:
// the order that decides which commit counts and which journal record is the last). They are
// nearly in id order already (ids grow with time; commits follow in the order sessions end):
// one cheap pass checks that; otherwise 16-byte keys are sorted instead of the records, which
// are then moved once (issue 15: 40-56 byte records, millions of them).
template <typename Record>
void sort_by_id(std::vector<Record>& records) {
  const auto by_id = [](const Record& a, const Record& b) { return a.id < b.id; };
  if (std::is_sorted(records.begin(), records.end(), by_id)) return;
  std::vector<std::pair<message_id, std::size_t>> keys;
  keys.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) keys.emplace_back(records[i].id, i);
  std::sort(keys.begin(), keys.end());
  std::vector<Record> sorted;
  sorted.reserve(records.size());
  for (const auto& key : keys) sorted.push_back(std::move(records[key.second]));
  records.swap(sorted);
}

struct record_view {
  format::record_header header;
  std::uint64_t offset = 0;
  std::string_view payload;
};

// Decodes and verifies the record at `offset`; false if anything does not check out.
bool read_record(file_reader& in, std::uint64_t offset, std::uint64_t salt, record_view& out) {
  const auto head = in.get(offset, format::header_bytes);
  if (head.size() != format::header_bytes || !format::decode_header(head.data(), out.header)) {
    return false;
  }
  const std::uint64_t end = offset + format::header_bytes + out.header.payload_bytes;
  if (end > in.size()) return false;
  const auto whole = in.get(offset, format::header_bytes + out.header.payload_bytes);
  if (whole.empty()) return false;
  out.offset = offset;
  out.payload = whole.substr(format::header_bytes);
  return format::verify(whole.data(), out.payload, format::seed(salt, offset));
}

bool all_zero(std::string_view bytes) {
  return bytes.empty() ||
         (bytes[0] == 0 && std::memcmp(bytes.data(), bytes.data() + 1, bytes.size() - 1) == 0);
}

// The first offset at or after `from` where a verifying record starts, or the file size.
// zeros_only tells whether everything skipped was zero (the preallocated, unwritten tail).
std::uint64_t resync(file_reader& in, std::uint64_t from, std::uint64_t salt, bool& zeros_only) {
  static constexpr char magic_bytes[4] = {'R', 'M', 'S', 'R'};
  zeros_only = true;
  // Bytes next_data skips are zeros: no magic there, zeros_only holds. Asked at the start and
  // after a window of zeros only (not per candidate: one lseek each on a damaged file).
  std::uint64_t at = in.next_data(from);
  while (in.size() - at >= 4) {
    // Chunks end where the run of data does: a hole holds no magic, and no magic straddles
    // into one ('RMSR' has no zero byte), so the last chunk of a run keeps no bytes back.
    const std::uint64_t end = in.data_end(at);
    const auto chunk = in.get(at, static_cast<std::size_t>(
                                      std::min<std::uint64_t>(window_bytes, end - at)));
    const bool run_ends = at + chunk.size() == end;
    if (chunk.size() < 4 && !run_ends) break;
    const std::size_t keep = run_ends ? 0 : 3;  // a magic may straddle two chunks of a run
    // The usual case: the preallocated, never written tail of the open segment (tens of MB of
    // zeros). Checked a word at a time by memcmp instead of searched for a magic byte by byte.
    if (all_zero(chunk)) {
      at = in.next_data(at + chunk.size() - keep);
      continue;
    }
    const void* hit = ::memmem(chunk.data(), chunk.size(), magic_bytes, 4);
    const std::size_t stop = hit == nullptr ? chunk.size() - keep
                                            : static_cast<const char*>(hit) - chunk.data();
    for (std::size_t i = 0; zeros_only && i < stop; ++i) zeros_only = chunk[i] == 0;
    if (hit == nullptr) {
      at = run_ends ? in.next_data(at + stop) : at + stop;
      continue;
    }
    const std::uint64_t candidate = at + stop;
    record_view record;
    if (read_record(in, candidate, salt, record)) return candidate;
    zeros_only = false;
    at = candidate + 1;
  }
  const auto tail = in.get(at, static_cast<std::size_t>(in.size() - at));
  for (char c : tail) zeros_only = zeros_only && c == 0;
  return in.size();
}

void on_segment_record(scan_context& ctx, std::uint32_t segment, const record_view& record) {
  const auto& header = record.header;
  auto& state = *ctx.state;
  if (header.id != 0) state.id_floor = std::max(state.id_floor, header.id);
  switch (header.type) {
    case format::record_type::data:
      ctx.data.push_back(data_seen{header.id, body_range{segment, header.payload_bytes,
                                                         record.offset + format::header_bytes}});
      return;
    case format::record_type::commit: {
      // Only the envelope's recipient count is needed here (the rest is read when the message
      // is delivered or listed); the summary checks it as the full decode would.
      const bool decoded_commit = static_cast<bool>(decode_commit(record.payload, ctx.commit));
      auto summary = decoded_commit ? decode_envelope_summary(ctx.commit.envelope_bytes)
                                    : core::result<envelope_summary>(core::fail(EBADMSG));
      if (!summary || summary.value().id != header.id) {
        ctx.problem("segment " + std::to_string(segment) + ": undecodable commit record at " +
                    std::to_string(record.offset));
        return;
      }
      commit_seen seen;
      seen.id = header.id;
      seen.segment = segment;
      seen.offset = record.offset;
      seen.bytes = format::header_bytes + header.payload_bytes;
      seen.recipients = summary.value().recipients;
      seen.range_first = ctx.named.size();
      seen.range_count = static_cast<std::uint32_t>(ctx.commit.ranges.size());
      ctx.named.insert(ctx.named.end(), ctx.commit.ranges.begin(), ctx.commit.ranges.end());
      ctx.commits.push_back(seen);  // a duplicate is found once they are sorted by id
      return;
    }
    case format::record_type::void_tail:
      if (record.payload.size() == format::void_payload_bytes) {
        ctx.voids.push_back(void_seen{format::load_le<std::uint64_t>(record.payload.data()),
                                      format::load_le<std::uint64_t>(record.payload.data() + 8),
                                      segment});
        return;
      }
      break;
    default: break;
  }
  ctx.problem("segment " + std::to_string(segment) + ": unexpected record type " +
              std::to_string(static_cast<int>(header.type)));
}

void on_journal_record(scan_context& ctx, std::uint32_t journal, const record_view& record) {
  journal_seen seen;
  seen.id = record.header.id;
  seen.offset = record.offset;
  seen.journal = journal;
  if (record.header.type == format::record_type::action &&
      record.payload.size() == format::action_payload_bytes) {
    ++ctx.state->report.action_records;
    seen.action = true;
    seen.action_code = format::decode_action(record.payload.data()).action;
    ctx.journal.push_back(seen);
    return;
  }
  if (record.header.type == format::record_type::reason && !record.payload.empty() &&
      record.payload.size() <= bounce_reason_bytes_max) {
    ++ctx.state->report.reason_records;
    ctx.reasons.push_back(reason_seen{record.header.id, std::string(record.payload)});
    return;
  }
  if (record.header.type == format::record_type::pause) {
    destination_pause pause;
    if (format::decode_pause(record.payload, pause)) {
      ++ctx.state->report.pause_records;
      ctx.pauses.push_back(std::move(pause));
      return;
    }
  }
  if (record.header.type != format::record_type::state ||
      record.payload.size() != format::state_payload_bytes) {
    ctx.problem("journal " + std::to_string(journal) + ": unexpected record at " +
                std::to_string(record.offset));
    return;
  }
  ++ctx.state->report.state_records;
  seen.state = format::decode_state(record.payload.data());
  ctx.journal.push_back(seen);
}

// An action record: the message's flags change (in journal order, with the state records
// around it). Unknown actions are reported and ignored.
void apply_action_record(scan_context& ctx, const journal_seen& record, message_entry& entry) {
  if (record.action_code < static_cast<std::uint8_t>(message_action::hold) ||
      record.action_code > static_cast<std::uint8_t>(message_action::bounce)) {
    ctx.problem("journal " + std::to_string(record.journal) + ": bad action record at " +
                std::to_string(record.offset));
    return;
  }
  entry.flags = apply_action(entry.flags, static_cast<message_action>(record.action_code));
}

void apply_state_record(scan_context& ctx, const journal_seen& record, message_entry& entry) {
  const auto& payload = record.state;
  auto& recipients = entry.recipients;
  if (payload.recipient >= recipients.size() || payload.state > recipient_state_max) {
    ctx.problem("journal " + std::to_string(record.journal) + ": bad state record at " +
                std::to_string(record.offset));
    return;
  }
  recipients.set(payload.recipient,
                 recipient_status{static_cast<recipient_state>(payload.state),
                                  payload.attempts, payload.next_attempt_seconds});
}

// Applies the journals' records to the messages (both by id). Records of a message not
// recovered (reclaimed, or never complete) are ignored.
void apply_journal(scan_context& ctx) {
  auto& records = ctx.journal;
  sort_by_id(records);  // read in journal order: each message's records stay in it
  auto message = ctx.messages.begin();
  for (const auto& record : records) {
    while (message != ctx.messages.end() && message->id < record.id) ++message;
    if (message == ctx.messages.end()) break;
    if (message->id != record.id) continue;
    if (record.action) {
      apply_action_record(ctx, record, *message);
    } else {
      apply_state_record(ctx, record, *message);
    }
  }
  std::vector<journal_seen>().swap(records);
}

// The reason of each queued message with a bounce still to carry out: its last reason record.
// Reasons of messages without the bounce flag (a delete came later) or final ones are dropped.
void keep_bounce_reasons(scan_context& ctx, recovered_state& state) {
  auto& reasons = ctx.reasons;
  std::stable_sort(reasons.begin(), reasons.end(),
                   [](const reason_seen& a, const reason_seen& b) { return a.id < b.id; });
  auto message = ctx.messages.begin();
  for (std::size_t i = 0; i < reasons.size(); ++i) {
    if (i + 1 < reasons.size() && reasons[i + 1].id == reasons[i].id) continue;  // not the last
    while (message != ctx.messages.end() && message->id < reasons[i].id) ++message;
    if (message == ctx.messages.end()) break;
    if (message->id == reasons[i].id && message->status == message_status::queued &&
        (message->flags & message_flag_bounce) != 0)
      state.bounce_reasons.emplace_back(reasons[i].id, std::move(reasons[i].text));
  }
  std::vector<reason_seen>().swap(reasons);
}

// The last pause record of each kind of each destination (journals are scanned in id order,
// records in file order: the last one read is the newest), unless a later one lifted both: a
// suspension and a throttle of one destination (two reply rules) stand side by side.
void keep_pauses(scan_context& ctx, recovered_state& state) {
  std::map<std::pair<std::string, pause_kind>, destination_pause> last;
  for (auto& pause : ctx.pauses) {
    if (pause.kind == pause_kind::lifted) {
      last.erase({pause.destination, pause_kind::suspend});
      last.erase({pause.destination, pause_kind::throttle});
      continue;
    }
    last[{pause.destination, pause.kind}] = std::move(pause);
  }
  for (auto& [key, pause] : last) state.pauses.push_back(std::move(pause));
  std::vector<destination_pause>().swap(ctx.pauses);
}

// A file of the shard's directory, stat'ed once before any is read (the scan's vectors are
// reserved from the sizes: reserve_for_segments) and opened once: for the read-ahead when it is
// the next segment, then scanned through the same descriptor, which recovery hands on.
struct listed_file {
  std::uint32_t id = 0;
  std::uint64_t bytes = 0;
  int error = 0;  // of the stat or the open: the file is reported unreadable
  unique_fd fd;
};

std::string path_of(const scan_context& ctx, std::uint32_t id, bool journal) {
  return ctx.directory + "/" + (journal ? journal_file_name(id) : segment_file_name(id));
}

std::vector<listed_file> list_files(const scan_context& ctx, const std::vector<std::uint32_t>& ids,
                                    bool journal) {
  std::vector<listed_file> files(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    files[i].id = ids[i];
    const auto bytes = ctx.io->size_of(path_of(ctx, ids[i], journal));
    if (bytes)
      files[i].bytes = bytes.value();
    else
      files[i].error = bytes.error();
  }
  return files;
}

// Opens the file (once: a file opened for its read-ahead stays open). The read-ahead asks the
// kernel to start reading the whole file into the page cache (POSIX_FADV_WILLNEED does not
// wait for the disk): recovery reads every segment once, front to back, and with a cold cache
// its synchronous 1 MiB preads would otherwise leave the disk idle while a window is parsed.
// Issued for the next file while this one is scanned. Best effort.
void open_file(const scan_context& ctx, listed_file& file, bool journal, bool read_ahead) {
  if (file.error != 0 || file.fd.get() >= 0) return;
  const auto opened = ctx.io->open_read(path_of(ctx, file.id, journal));
  if (!opened) {
    file.error = opened.error();
    return;
  }
  file.fd = unique_fd(opened.value());
  if (read_ahead) ctx.io->will_need(file.fd.get());
}

// Reads one file's header and records through `fd`. False when the file has no usable header.
bool scan_records(scan_context& ctx, const listed_file& file, bool journal, unique_fd& fd,
                  recovered_file& out) {
  auto& report = ctx.state->report;
  const std::uint32_t id = file.id;
  const std::string name = journal ? journal_file_name(id) : segment_file_name(id);
  file_reader in(*ctx.io, fd.get(), file.bytes);
  out.id = id;
  out.file_bytes = in.size();
  record_view first;
  if (!read_record(in, 0, 0, first) || first.payload.size() != format::file_header_bytes ||
      first.header.type != (journal ? format::record_type::journal_header
                                    : format::record_type::segment_header)) {
    bool zeros_only = false;
    resync(in, 0, 0, zeros_only);
    if (zeros_only) {  // created but never initialised (crash during creation): empty
      out.fd = std::move(fd);
      return true;
    }
    ctx.problem(name + ": no valid header, file left alone");
    ++report.unreadable_files;
    return false;
  }
  const auto header = format::decode_file_header(first.payload.data());
  if (header.version != format::version || header.file_id != id || header.shard != ctx.shard) {
    ctx.problem(name + ": header names another file, shard or version; file left alone");
    ++report.unreadable_files;
    return false;
  }
  out.salt = header.salt;
  ctx.state->id_floor = std::max(ctx.state->id_floor, header.id_floor);
  std::uint64_t at = format::first_record_offset;
  while (at < in.size()) {
    record_view record;
    if (read_record(in, at, header.salt, record)) {
      ++report.records;
      if (journal) {
        on_journal_record(ctx, id, record);
      } else {
        on_segment_record(ctx, id, record);
      }
      at += format::header_bytes + record.header.payload_bytes;
      out.valid_bytes = at;
      continue;
    }
    bool zeros_only = false;
    const std::uint64_t next = resync(in, at, header.salt, zeros_only);
    if (next == in.size()) {
      if (!zeros_only) {
        ++report.torn_tails;
        ctx.problem(name + ": torn tail ignored from offset " + std::to_string(at));
      }
      break;
    }
    ++report.corrupt_regions;
    ctx.problem(name + ": corrupt bytes " + std::to_string(at) + ".." + std::to_string(next) +
                " skipped");
    at = next;
  }
  out.fd = std::move(fd);
  return true;
}

// Opens (unless open already) and scans one file; a file it does not hand on in `out` is
// closed through the interface that opened it.
bool scan_file(scan_context& ctx, listed_file& file, bool journal, recovered_file& out) {
  open_file(ctx, file, journal, false);
  if (file.error != 0) {
    const std::string name = journal ? journal_file_name(file.id) : segment_file_name(file.id);
    ctx.problem(name + ": cannot open: " + std::strerror(file.error));
    ++ctx.state->report.unreadable_files;
    return false;
  }
  unique_fd fd = std::move(file.fd);
  const bool scanned = scan_records(ctx, file, journal, fd, out);
  if (fd.get() >= 0) ctx.io->close(fd.release());
  return scanned;
}

std::span<const body_range> named_by(const scan_context& ctx, const commit_seen& commit) {
  return std::span<const body_range>(ctx.named).subspan(commit.range_first, commit.range_count);
}

bool voided(const scan_context& ctx, const commit_seen& commit) {
  for (const auto& mark : ctx.voids) {
    if (mark.segment == commit.segment && commit.offset >= mark.valid_end) return true;
    for (const auto& range : named_by(ctx, commit)) {
      if (mark.segment == range.segment && range.offset >= mark.valid_end) return true;
    }
  }
  return false;
}

bool file_order(const body_range& a, const body_range& b) {
  return a.segment != b.segment ? a.segment < b.segment : a.offset < b.offset;
}

// Whether the commit names exactly the verified data records of its message. `seen` is in
// file order; the commit may list a record out of that order: a header prefix (DKIM-Signature)
// is written at the end of data, after the body, but named first (store::commit). Spools
// without prefixes list them in file order, as before.
bool same_records(std::span<const data_seen> seen, std::span<const body_range> named,
                  std::vector<body_range>& scratch) {
  if (seen.size() != named.size()) return false;
  scratch.assign(named.begin(), named.end());
  if (!std::is_sorted(scratch.begin(), scratch.end(), file_order))
    std::sort(scratch.begin(), scratch.end(), file_order);
  for (std::size_t i = 0; i < seen.size(); ++i)
    if (!(seen[i].range == scratch[i])) return false;
  return true;
}

// The index entry of a verified commit; `complete` is false when its segments span 64 or more.
message_entry entry_of(const scan_context& ctx, const commit_seen& commit, bool& complete) {
  message_entry entry;
  entry.id = commit.id;
  entry.commit_offset = commit.offset;
  entry.commit_segment = commit.segment;
  entry.commit_bytes = commit.bytes;
  entry.status = message_status::queued;
  std::uint32_t first = commit.segment;
  const auto named = named_by(ctx, commit);
  for (const auto& range : named) first = std::min(first, range.segment);
  complete = commit.segment - first < segment_span_max;
  if (complete) {
    entry.set_first_segment(first);
    entry.segment_mask = std::uint64_t{1} << (commit.segment - first);
    for (const auto& range : named) {
      entry.segment_mask |= std::uint64_t{1} << (range.segment - first);
    }
  }
  entry.recipients.assign(commit.recipients);
  return entry;
}

// Turns verified commits into index entries, in id order. `incomplete` gets the positions
// (ascending) of those whose data is missing or does not match. Of the commits of one id the
// first read wins, later ones are reported; data records keep file order within an id.
void build_messages(scan_context& ctx, std::vector<std::size_t>& incomplete) {
  auto& report = ctx.state->report;
  sort_by_id(ctx.commits);
  sort_by_id(ctx.data);
  std::vector<body_range> scratch;
  std::size_t data_at = 0;  // first data record whose id is not below the commit's
  for (std::size_t i = 0; i < ctx.commits.size(); ++i) {
    const commit_seen& commit = ctx.commits[i];
    if (i > 0 && ctx.commits[i - 1].id == commit.id) {
      ctx.problem("duplicate commit of message " +
                  std::string(format_message_id(commit.id).data()));
      continue;
    }
    while (data_at < ctx.data.size() && ctx.data[data_at].id < commit.id) ++data_at;
    std::size_t data_end = data_at;
    while (data_end < ctx.data.size() && ctx.data[data_end].id == commit.id) ++data_end;
    const auto data = std::span<const data_seen>(ctx.data).subspan(data_at, data_end - data_at);
    data_at = data_end;
    if (voided(ctx, commit)) {
      ++report.voided_messages;
      continue;
    }
    bool complete = false;
    ctx.messages.push_back(entry_of(ctx, commit, complete));
    // No ranges: the message has no data records at all (an empty body).
    complete = complete && same_records(data, named_by(ctx, commit), scratch);
    if (!complete) incomplete.push_back(ctx.messages.size() - 1);
  }
  std::vector<data_seen>().swap(ctx.data);
  std::vector<commit_seen>().swap(ctx.commits);
  std::vector<body_range>().swap(ctx.named);
}

bool all_final(const message_entry& entry) {
  return std::all_of(entry.recipients.begin(), entry.recipients.end(),
                     [](const recipient_status& s) { return is_final(s.state); });
}

// A live message with data missing cannot be delivered: dropped (reported). A final one may
// have lost data segments to reclaim already: kept (as final) so its state stays in the
// journal. The rest get their status and are counted.
void settle_messages(scan_context& ctx, const std::vector<std::size_t>& incomplete) {
  auto& report = ctx.state->report;
  auto& messages = ctx.messages;
  std::size_t kept = 0;
  auto next_incomplete = incomplete.begin();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    message_entry& entry = messages[i];
    const bool final = all_final(entry);
    const bool missing_data = next_incomplete != incomplete.end() && *next_incomplete == i;
    if (missing_data) ++next_incomplete;
    if (missing_data && !final) {
      ++report.incomplete_messages;
      ctx.problem("message " + std::string(format_message_id(entry.id).data()) +
                  ": body data missing or corrupt, dropped");
      continue;
    }
    entry.status = final ? message_status::final : message_status::queued;
    ++(final ? report.final_messages : report.messages);
    if (kept != i) messages[kept] = std::move(entry);
    ++kept;
  }
  messages.truncate(kept);
}

std::uint64_t bytes_of(const std::vector<listed_file>& files) {
  std::uint64_t bytes = 0;
  for (const auto& file : files) bytes += file.bytes;
  return bytes;
}

// Room for the records the segments can hold at about 1 KiB a message, so that the vectors
// are not grown (copied, their pages touched twice) a dozen times with millions of messages.
// Pages of reserved room never used are never touched. Smaller messages: the vectors grow.
void reserve_for_segments(scan_context& ctx, const std::vector<listed_file>& segments) {
  const auto messages = static_cast<std::size_t>(bytes_of(segments) / 1024);
  ctx.data.reserve(messages);
  ctx.commits.reserve(messages);
  ctx.named.reserve(messages);
}

// A journal holds at most one record per header + state payload bytes.
void reserve_for_journals(scan_context& ctx, const std::vector<listed_file>& journals) {
  ctx.journal.reserve(static_cast<std::size_t>(
      bytes_of(journals) / (format::header_bytes + format::state_payload_bytes)));
}

}  // namespace

std::uint8_t apply_action(std::uint8_t flags, message_action action) noexcept {
  if ((flags & message_flag_deleted) != 0) return flags;  // a delete is the last word
  switch (action) {
    case message_action::hold: return static_cast<std::uint8_t>(flags | message_flag_held);
    case message_action::release: return static_cast<std::uint8_t>(flags & ~message_flag_held);
    case message_action::remove:
      return static_cast<std::uint8_t>((flags | message_flag_deleted) & ~message_flag_held);
    case message_action::bounce:
      return static_cast<std::uint8_t>((flags | message_flag_bounce) & ~message_flag_held);
  }
  return flags;
}

core::result<recovered_state> recover(const std::string& shard_directory, std::uint32_t shard,
                                      recovery_io& io) {
  std::vector<std::uint32_t> segment_ids;
  std::vector<std::uint32_t> journal_ids;
  auto listed = io.list(shard_directory, [&](std::string_view name) {
    if (const auto id = parse_file_id(name, "segment-"); id != 0) segment_ids.push_back(id);
    if (const auto id = parse_file_id(name, "journal-"); id != 0) journal_ids.push_back(id);
  });
  if (!listed) return core::fail(listed.error());
  std::sort(segment_ids.begin(), segment_ids.end());
  std::sort(journal_ids.begin(), journal_ids.end());

  recovered_state state;
  state.shard = shard;
  scan_context ctx;
  ctx.io = &io;
  ctx.directory = shard_directory;
  ctx.shard = shard;
  ctx.state = &state;
  std::vector<listed_file> segments = list_files(ctx, segment_ids, false);
  reserve_for_segments(ctx, segments);
  if (!segments.empty()) open_file(ctx, segments[0], false, true);
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (i + 1 < segments.size()) open_file(ctx, segments[i + 1], false, true);
    state.next_file_id = std::max(state.next_file_id, segments[i].id + 1);
    recovered_file file;
    if (scan_file(ctx, segments[i], false, file)) state.segments.push_back(std::move(file));
  }
  state.report.segments = state.segments.size();
  for (const auto& mark : ctx.voids) {
    for (auto& file : state.segments) {
      if (file.id == mark.carrier && mark.segment != mark.carrier &&
          std::find(file.void_targets.begin(), file.void_targets.end(), mark.segment) ==
              file.void_targets.end()) {
        file.void_targets.push_back(static_cast<std::uint32_t>(mark.segment));
      }
    }
  }
  std::vector<std::size_t> incomplete;
  build_messages(ctx, incomplete);
  std::vector<listed_file> journals = list_files(ctx, journal_ids, true);
  reserve_for_journals(ctx, journals);
  for (auto& journal : journals) {
    state.next_file_id = std::max(state.next_file_id, journal.id + 1);
    recovered_file file;
    if (scan_file(ctx, journal, true, file)) state.journals.push_back(std::move(file));
  }
  state.report.journals = state.journals.size();
  apply_journal(ctx);
  // A delete is final for every recipient it found open (the journal may not have had the
  // per-recipient marks yet): never resurrected, never delivered again.
  for (auto& entry : ctx.messages) {
    if ((entry.flags & message_flag_deleted) == 0) continue;
    for (std::size_t i = 0; i < entry.recipients.size(); ++i)
      if (!is_final(entry.recipients[i].state))
        entry.recipients.set(i, recipient_status{recipient_state::deleted, 0, 0});
  }
  settle_messages(ctx, incomplete);
  keep_bounce_reasons(ctx, state);
  keep_pauses(ctx, state);
  state.messages = std::move(ctx.messages);  // ascending id already (build_messages)
  return state;
}

}  // namespace ringmta::spool
