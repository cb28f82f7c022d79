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
#include <unordered_map>

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
  file_reader(int fd, std::uint64_t size) : _fd(fd), _size(size) {}
  std::uint64_t size() const noexcept { return _size; }
  // Bytes [offset, offset+bytes) or an empty view past the end or on a read error.
  std::string_view get(std::uint64_t offset, std::size_t bytes) {
    if (offset > _size || bytes > _size - offset) return {};
    if (offset < _start || offset + bytes > _start + _buffer.size()) {
      const std::size_t want = static_cast<std::size_t>(
          std::min<std::uint64_t>(std::max(bytes, window_bytes), _size - offset));
      _buffer.resize(want);
      std::size_t done = 0;
      while (done < want) {
        const ssize_t got = ::pread(_fd, _buffer.data() + done, want - done,
                                    static_cast<off_t>(offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        done += static_cast<std::size_t>(got);
      }
      _buffer.resize(done);
      _start = offset;
      if (bytes > done) return {};
    }
    return std::string_view(_buffer).substr(offset - _start, bytes);
  }

 private:
  int _fd;
  std::uint64_t _size;
  std::uint64_t _start = 0;
  std::string _buffer;
};

struct commit_seen {
  message_id id = 0;
  std::uint32_t segment = 0;
  std::uint32_t bytes = 0;
  std::uint64_t offset = 0;
  std::uint64_t body_bytes = 0;
  std::int64_t received_seconds = 0;
  std::uint32_t recipients = 0;
  std::vector<body_range> ranges;
};

struct void_seen {
  std::uint64_t segment;
  std::uint64_t valid_end;
  std::uint32_t carrier;  // the segment holding the record
};

struct scan_context {
  std::string directory;
  std::uint32_t shard = 0;
  recovered_state* state = nullptr;
  std::unordered_map<message_id, std::vector<body_range>> data;
  std::unordered_map<message_id, commit_seen> commits;
  std::vector<void_seen> voids;
  std::unordered_map<message_id, message_entry> messages;

  void problem(const std::string& text) {
    auto& problems = state->report.problems;
    if (problems.size() < problems_max) problems.push_back(text);
  }
};

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

// The first offset at or after `from` where a verifying record starts, or the file size.
// zeros_only tells whether everything skipped was zero (the preallocated, unwritten tail).
std::uint64_t resync(file_reader& in, std::uint64_t from, std::uint64_t salt, bool& zeros_only) {
  static constexpr char magic_bytes[4] = {'R', 'M', 'S', 'R'};
  zeros_only = true;
  std::uint64_t at = from;
  while (in.size() - at >= 4) {
    const auto chunk = in.get(at, static_cast<std::size_t>(
                                      std::min<std::uint64_t>(window_bytes, in.size() - at)));
    if (chunk.size() < 4) break;
    const void* hit = ::memmem(chunk.data(), chunk.size(), magic_bytes, 4);
    // Without a hit, keep the last 3 bytes: a magic may straddle two chunks.
    const std::size_t stop = hit == nullptr ? chunk.size() - 3
                                            : static_cast<const char*>(hit) - chunk.data();
    for (std::size_t i = 0; zeros_only && i < stop; ++i) zeros_only = chunk[i] == 0;
    if (hit == nullptr) {
      at += stop;
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
      ctx.data[header.id].push_back(body_range{segment, header.payload_bytes,
                                               record.offset + format::header_bytes});
      return;
    case format::record_type::commit: {
      auto view = decode_commit(record.payload);
      auto decoded = view ? decode_envelope(view.value().envelope_bytes)
                          : core::result<envelope>(core::fail(EBADMSG));
      if (!decoded || decoded.value().id != header.id) {
        ctx.problem("segment " + std::to_string(segment) + ": undecodable commit record at " +
                    std::to_string(record.offset));
        return;
      }
      if (ctx.commits.count(header.id) != 0) {
        ctx.problem("duplicate commit of message " +
                    std::string(format_message_id(header.id).data()));
        return;
      }
      commit_seen seen;
      seen.id = header.id;
      seen.segment = segment;
      seen.offset = record.offset;
      seen.bytes = format::header_bytes + header.payload_bytes;
      seen.body_bytes = view.value().body_bytes;
      seen.received_seconds = decoded.value().received_seconds;
      seen.recipients = static_cast<std::uint32_t>(decoded.value().recipients.size());
      seen.ranges = std::move(view.value().ranges);
      ctx.commits.emplace(header.id, std::move(seen));
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

// An action record: the message's flags change (applied in journal order, with the state
// records around it). Unknown actions are reported and ignored.
void on_action_record(scan_context& ctx, std::uint32_t journal, const record_view& record) {
  const auto payload = format::decode_action(record.payload.data());
  auto found = ctx.messages.find(record.header.id);
  if (found == ctx.messages.end()) return;  // message reclaimed or never complete
  if (payload.action < static_cast<std::uint8_t>(message_action::hold) ||
      payload.action > static_cast<std::uint8_t>(message_action::bounce)) {
    ctx.problem("journal " + std::to_string(journal) + ": bad action record at " +
                std::to_string(record.offset));
    return;
  }
  found->second.flags =
      apply_action(found->second.flags, static_cast<message_action>(payload.action));
}

void on_journal_record(scan_context& ctx, std::uint32_t journal, const record_view& record) {
  if (record.header.type == format::record_type::action &&
      record.payload.size() == format::action_payload_bytes) {
    ++ctx.state->report.action_records;
    return on_action_record(ctx, journal, record);
  }
  if (record.header.type != format::record_type::state ||
      record.payload.size() != format::state_payload_bytes) {
    ctx.problem("journal " + std::to_string(journal) + ": unexpected record at " +
                std::to_string(record.offset));
    return;
  }
  ++ctx.state->report.state_records;
  const auto payload = format::decode_state(record.payload.data());
  auto found = ctx.messages.find(record.header.id);
  if (found == ctx.messages.end()) return;  // message reclaimed or never complete
  auto& recipients = found->second.recipients;
  if (payload.recipient >= recipients.size() || payload.state > recipient_state_max) {
    ctx.problem("journal " + std::to_string(journal) + ": bad state record at " +
                std::to_string(record.offset));
    return;
  }
  recipients[payload.recipient] = recipient_status{
      static_cast<recipient_state>(payload.state), payload.attempts,
      payload.next_attempt_seconds};
}

// Reads one file's header and records. False when the file has no usable header.
bool scan_file(scan_context& ctx, std::uint32_t id, bool journal, recovered_file& out) {
  auto& report = ctx.state->report;
  const std::string name = journal ? journal_file_name(id) : segment_file_name(id);
  const std::string path = ctx.directory + "/" + name;
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat info {};
  if (fd.get() < 0 || ::fstat(fd.get(), &info) != 0) {
    ctx.problem(name + ": cannot open: " + std::strerror(errno));
    ++report.unreadable_files;
    return false;
  }
  file_reader in(fd.get(), static_cast<std::uint64_t>(info.st_size));
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

bool voided(const scan_context& ctx, const commit_seen& commit) {
  for (const auto& mark : ctx.voids) {
    if (mark.segment == commit.segment && commit.offset >= mark.valid_end) return true;
    for (const auto& range : commit.ranges) {
      if (mark.segment == range.segment && range.offset >= mark.valid_end) return true;
    }
  }
  return false;
}

// Whether the commit names exactly the verified data records of its message. `seen` is in
// file order; the commit may list a record out of that order: a header prefix (DKIM-Signature)
// is written at the end of data, after the body, but named first (store::commit). Spools
// without prefixes list them in file order, as before.
bool same_records(const std::vector<body_range>& seen, std::vector<body_range> named) {
  if (seen.size() != named.size()) return false;
  std::sort(named.begin(), named.end(), [](const body_range& a, const body_range& b) {
    return a.segment != b.segment ? a.segment < b.segment : a.offset < b.offset;
  });
  return seen == named;
}

// Turns verified commits into index entries. `complete` is false when data is missing.
void build_messages(scan_context& ctx, std::vector<message_id>& incomplete) {
  auto& report = ctx.state->report;
  for (auto& [id, commit] : ctx.commits) {
    if (voided(ctx, commit)) {
      ++report.voided_messages;
      continue;
    }
    message_entry entry;
    entry.id = id;
    entry.body_bytes = commit.body_bytes;
    entry.received_seconds = commit.received_seconds;
    entry.commit_offset = commit.offset;
    entry.commit_segment = commit.segment;
    entry.commit_bytes = commit.bytes;
    entry.status = message_status::queued;
    entry.first_segment = commit.segment;
    for (const auto& range : commit.ranges) {
      entry.first_segment = std::min(entry.first_segment, range.segment);
    }
    bool complete = commit.segment - entry.first_segment < 64;
    if (complete) {
      entry.segment_mask = std::uint64_t{1} << (commit.segment - entry.first_segment);
      for (const auto& range : commit.ranges) {
        entry.segment_mask |= std::uint64_t{1} << (range.segment - entry.first_segment);
      }
    }
    auto data = ctx.data.find(id);
    if (commit.ranges.empty()) {
      complete = complete && data == ctx.data.end();
    } else {
      complete = complete && data != ctx.data.end() && same_records(data->second, commit.ranges);
    }
    entry.recipients.resize(commit.recipients);
    if (!complete) incomplete.push_back(id);
    ctx.messages.emplace(id, std::move(entry));
  }
  ctx.data.clear();
  ctx.commits.clear();
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

core::result<recovered_state> recover(const std::string& shard_directory, std::uint32_t shard) {
  DIR* directory = ::opendir(shard_directory.c_str());
  if (directory == nullptr) return core::fail(errno);
  std::vector<std::uint32_t> segment_ids;
  std::vector<std::uint32_t> journal_ids;
  while (const dirent* item = ::readdir(directory)) {
    const std::string_view name(item->d_name);
    if (const auto id = parse_file_id(name, "segment-"); id != 0) segment_ids.push_back(id);
    if (const auto id = parse_file_id(name, "journal-"); id != 0) journal_ids.push_back(id);
  }
  ::closedir(directory);
  std::sort(segment_ids.begin(), segment_ids.end());
  std::sort(journal_ids.begin(), journal_ids.end());

  recovered_state state;
  state.shard = shard;
  scan_context ctx;
  ctx.directory = shard_directory;
  ctx.shard = shard;
  ctx.state = &state;
  for (auto id : segment_ids) {
    state.next_file_id = std::max(state.next_file_id, id + 1);
    recovered_file file;
    if (scan_file(ctx, id, false, file)) state.segments.push_back(std::move(file));
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
  std::vector<message_id> incomplete;
  build_messages(ctx, incomplete);
  for (auto id : journal_ids) {
    state.next_file_id = std::max(state.next_file_id, id + 1);
    recovered_file file;
    if (scan_file(ctx, id, true, file)) state.journals.push_back(std::move(file));
  }
  state.report.journals = state.journals.size();
  // A delete is final for every recipient it found open (the journal may not have had the
  // per-recipient marks yet): never resurrected, never delivered again.
  for (auto& [id, entry] : ctx.messages) {
    if ((entry.flags & message_flag_deleted) == 0) continue;
    for (auto& status : entry.recipients)
      if (!is_final(status.state)) status = recipient_status{recipient_state::deleted, 0, 0};
  }
  for (message_id id : incomplete) {
    auto found = ctx.messages.find(id);
    const auto& recipients = found->second.recipients;
    const bool final = std::all_of(recipients.begin(), recipients.end(),
                                   [](const recipient_status& s) { return is_final(s.state); });
    // A final message may have lost data segments to reclaim already: keep it (as final) so
    // its state stays in the journal. A live one with missing data cannot be delivered.
    if (final) continue;
    ++state.report.incomplete_messages;
    ctx.problem("message " + std::string(format_message_id(id).data()) +
                ": body data missing or corrupt, dropped");
    ctx.messages.erase(found);
  }
  state.messages.reserve(ctx.messages.size());
  for (auto& [id, entry] : ctx.messages) {
    const bool final = std::all_of(entry.recipients.begin(), entry.recipients.end(),
                                   [](const recipient_status& s) { return is_final(s.state); });
    entry.status = final ? message_status::final : message_status::queued;
    ++(final ? state.report.final_messages : state.report.messages);
    state.messages.push_back(std::move(entry));
  }
  std::sort(state.messages.begin(), state.messages.end(),
            [](const message_entry& a, const message_entry& b) { return a.id < b.id; });
  return state;
}

}  // namespace ringmta::spool
