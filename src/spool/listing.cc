#include "ringmta/spool/listing.h"

#include <algorithm>
#include <cerrno>

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
    message.body_bytes = entry.body_bytes;
    message.received_seconds = entry.received_seconds;
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

}  // namespace ringmta::spool
