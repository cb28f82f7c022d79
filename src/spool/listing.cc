#include "ringmta/spool/listing.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "format.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"

namespace ringmta::spool {

namespace {

void list_shard(const std::string& directory, std::uint32_t shard, spool_listing& out) {
  const std::string prefix = "shard-" + std::to_string(shard) + ": ";
  auto recovered = recover(directory, shard);
  if (!recovered) {
    out.problems.push_back(prefix + recovered.error_text());
    return;
  }
  auto& state = recovered.value();
  for (const auto& problem : state.report.problems) out.problems.push_back(prefix + problem);
  for (const auto& entry : state.messages) {
    if (entry.status != message_status::queued) continue;
    auto segment = std::find_if(
        state.segments.begin(), state.segments.end(),
        [&](const recovered_file& file) { return file.id == entry.commit_segment; });
    if (segment == state.segments.end()) continue;
    auto payload = format::read_commit_record(segment->fd.get(), segment->salt,
                                              entry.commit_offset, entry.commit_bytes, entry.id);
    auto view = payload ? decode_commit(payload.value()) : core::result<commit_view>(
                                                               core::fail(payload.error()));
    auto value = view ? decode_envelope(view.value().envelope_bytes)
                      : core::result<envelope>(core::fail(view.error()));
    if (!value) {
      out.problems.push_back(prefix + format_message_id(entry.id).data() + ": " +
                             value.error_text());
      continue;
    }
    listed_message message;
    message.shard = shard;
    message.id = entry.id;
    message.sender = std::move(value.value().reverse_path);
    message.body_bytes = view.value().body_bytes;  // the index keeps neither (index.h)
    message.received_seconds = value.value().received_seconds;
    message.held = (entry.flags & message_flag_held) != 0;
    for (std::size_t i = 0; i < value.value().recipients.size(); ++i) {
      message.recipients.push_back(
          listed_recipient{std::move(value.value().recipients[i].address), entry.recipients[i]});
    }
    out.messages.push_back(std::move(message));
  }
}

}  // namespace

core::result<spool_listing> list_spool(const std::string& spool_directory) {
  auto shards = shards_in(spool_directory);
  if (!shards) return core::fail(shards.error());
  spool_listing listing;
  for (std::uint32_t shard : shards.value()) {
    list_shard(shard_directory(spool_directory, shard), shard, listing);
  }
  return listing;
}

namespace {

// A segment opened by name, with its salt (from its header record).
core::result<std::uint64_t> open_segment(const std::string& directory, std::uint32_t id,
                                         unique_fd& fd) {
  fd = unique_fd(::open((directory + "/" + segment_file_name(id)).c_str(),
                        O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return core::fail(errno);
  char header[format::first_record_offset];
  if (::pread(fd.get(), header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
    return core::fail(EBADMSG);
  return format::decode_file_header(header + format::header_bytes).salt;
}

// RFC 5321 §4.5.2: a line that starts with "." was sent with one more.
void unstuff(std::string& text) {
  std::size_t out = 0;
  bool line_start = true;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (line_start && c == '.' && i + 1 < text.size() && text[i + 1] == '.') continue;
    text[out++] = c;
    line_start = c == '\n';
  }
  text.resize(out);
}

}  // namespace

core::result<std::string> read_message_text(const std::string& shard_directory,
                                            const message_location& where,
                                            std::uint64_t bytes_max) {
  std::map<std::uint32_t, unique_fd> segments;
  unique_fd& commit_fd = segments[where.commit_segment];
  auto salt = open_segment(shard_directory, where.commit_segment, commit_fd);
  if (!salt) return core::fail(salt.error());
  auto payload = format::read_commit_record(commit_fd.get(), salt.value(), where.commit_offset,
                                            where.commit_bytes, where.id);
  if (!payload) return core::fail(payload.error());
  auto view = decode_commit(payload.value());
  if (!view) return core::fail(view.error());
  if (view.value().body_bytes > bytes_max) return core::fail(EFBIG);
  std::string text;
  text.reserve(view.value().body_bytes);
  for (const auto& range : view.value().ranges) {
    unique_fd& fd = segments[range.segment];
    if (fd.get() < 0) {
      if (auto opened = open_segment(shard_directory, range.segment, fd); !opened)
        return core::fail(opened.error());
    }
    const std::size_t at = text.size();
    text.resize(at + range.length);
    if (::pread(fd.get(), text.data() + at, range.length, static_cast<off_t>(range.offset)) !=
        static_cast<ssize_t>(range.length))
      return core::fail(EIO);
  }
  unstuff(text);
  return text;
}

}  // namespace ringmta::spool
