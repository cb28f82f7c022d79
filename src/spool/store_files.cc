// spool::store: segment and journal files (creation, removal, reclaim) and journal encoding.
#include <algorithm>
#include <cerrno>

#include "store_internal.h"

namespace ringmta::spool {

std::uint64_t store::salt_for(std::uint32_t file_id, bool journal) const noexcept {
  // splitmix64 of the secret seed, the file kind and the file id (segments and journals may
  // share an id; their salts must differ).
  const std::uint64_t key = (std::uint64_t{journal} << 32 | file_id) + 1;
  std::uint64_t z = _config.random_seed + 0x9e3779b97f4a7c15ull * key;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void store::request_segment() noexcept {
  if (_creating_segment || _spare != nullptr) return;
  _creating_segment = true;
  request_create(_retry_segment_id != 0 ? _retry_segment_id : _next_segment_id++, false);
}

void store::request_journal() noexcept {
  if (_creating_journal || _journal_spare != nullptr) return;
  _creating_journal = true;
  request_create(_retry_journal_id != 0 ? _retry_journal_id : _next_journal_id++, true);
}

void store::request_create(std::uint32_t id, bool journal) noexcept {
  auto& files = journal ? _journals : _segments;
  auto& slot = files[id];
  slot.id = id;
  slot.journal = journal;
  slot.role = file_role::creating;
  slot.salt = salt_for(id, journal);
  slot.capacity = journal ? _config.journal_bytes : _config.segment_bytes;
  slot.write_offset = format::first_record_offset;
  slot.path = _config.directory + "/" + (journal ? journal_file_name(id) : segment_file_name(id));
  format::file_header header;
  header.shard = _config.shard;
  header.file_id = id;
  header.salt = slot.salt;
  header.id_floor = _ids.last();
  char payload[format::file_header_bytes];
  format::encode_file_header(header, payload);
  std::memcpy(slot.header + format::header_bytes, payload, sizeof payload);
  format::encode_record(slot.header,
                        journal ? format::record_type::journal_header
                                : format::record_type::segment_header,
                        0, std::string_view(payload, sizeof payload), format::seed(0, 0));
  operation op;
  op.kind = operation_kind::create_file;
  op.token = make_token(journal ? token_class::create_journal : token_class::create_segment, id);
  op.path = slot.path.c_str();
  op.directory = _config.directory.c_str();
  op.header = slot.header;
  op.header_bytes = format::first_record_offset;
  op.bytes = !journal && !_config.preallocate ? 0 : slot.capacity;
  push_operation(op);
}

void store::on_create_done(std::uint32_t id, bool journal, std::int64_t result) noexcept {
  auto& files = journal ? _journals : _segments;
  auto found = files.find(id);
  RINGMTA_ASSERT(found != files.end() && found->second.role == file_role::creating);
  (journal ? _creating_journal : _creating_segment) = false;
  // A failure retries the same name, unless the name itself is taken (a stray file).
  (journal ? _retry_journal_id : _retry_segment_id) = result < 0 && result != -EEXIST ? id : 0;
  if (result < 0) {
    files.erase(found);
    (journal ? _journal_create_error : _create_error) = static_cast<int>(-result);
    return;
  }
  auto& slot = found->second;
  slot.fd = static_cast<int>(result);
  slot.role = file_role::spare;
  if (journal) {
    _journal_create_error = 0;
    _journal_spare = &slot;
  } else {
    _create_error = 0;
    _spare = &slot;
    ++_stats.segments_created;
    remove_unneeded_files();
  }
  if (!_flight->active && journal && (_snapshot_needed || _flush_requested)) submit();
}

void store::request_remove(file_slot& file) noexcept {
  file.role = file_role::removing;
  operation op;
  op.kind = operation_kind::remove_file;
  op.token = make_token(file.journal ? token_class::remove_journal : token_class::remove_segment,
                        file.id);
  op.fd = file.fd;
  op.path = file.path.c_str();
  op.directory = _config.directory.c_str();
  push_operation(op);
}

void store::on_remove_done(std::uint32_t id, bool journal, std::int64_t result) noexcept {
  auto& files = journal ? _journals : _segments;
  auto found = files.find(id);
  RINGMTA_ASSERT(found != files.end() && found->second.role == file_role::removing);
  auto& slot = found->second;
  if (result < 0) {
    // The file may still be there: keep what recovery would need to see its messages as final
    // (their index entries feed every journal snapshot). Never retried.
    slot.role = file_role::sealed;
    slot.remove_failed = true;
    slot.fd = -1;
    return;
  }
  for (message_id message : slot.final_ids) {
    const bool erased = _index.erase_if(message, [](const message_entry& entry) {
      return entry.status == message_status::final;
    });
    if (erased && !_bounce_reasons.empty()) _bounce_reasons.erase(message);
  }
  if (journal) {
    files.erase(found);
    return;
  }
  ++_stats.segments_removed;
  files.erase(found);
  // Its void records are no longer needed: their carriers may go now.
  for (auto& [carrier_id, carrier] : _segments) {
    if (std::erase(carrier.void_targets, id) != 0) maybe_remove_segment(carrier);
  }
}

// A sealed segment goes when no live message touches it, no unfinished batch wrote to it, a
// newer segment (whose header carries the id floor) exists on disk, and it carries no void_tail
// record for a segment still present (issue 16, sim seed 121).
// Why the last condition is enough: recovery skips a commit only while it sees the void record
// for the commit's segment. That record is needed exactly as long as the voided segment's file
// can be on disk, i.e. until its removal is done (unlink, then the directory fsync'd:
// operation.h), which is when its slot leaves _segments. Keeping the carrier until then needs
// no rewrite of the mark; a carrier found by recovery is kept the same way (recovered_file::
// void_targets), so the argument holds across restarts.
void store::maybe_remove_segment(file_slot& segment) noexcept {
  if (segment.role != file_role::sealed || segment.refs != 0 || segment.remove_failed) return;
  for (std::uint32_t target : segment.void_targets) {
    if (target != segment.id && _segments.count(target) != 0) return;
  }
  const std::uint64_t unfinished = _flight->active ? _flight->seq : _batch_seq;
  if (segment.last_batch >= unfinished) return;
  for (const auto& start : _unsynced_starts) {
    if (start.first == segment.id) return;  // the next sync still covers it
  }
  const file_slot* newest = _spare != nullptr ? _spare : _current;
  if (newest == nullptr || newest->id < segment.id) return;
  request_remove(segment);
}

void store::remove_unneeded_files() noexcept {
  for (auto& [id, segment] : _segments) maybe_remove_segment(segment);
}

namespace {

// Appends one journal record (state and action records share the 16-byte payload slot) whose
// payload `encode_payload(char*)` writes, checksummed for its place in the file.
template <typename Encode>
void append_journal_record(std::string& out, format::record_type type, message_id id,
                           std::uint64_t salt, std::uint64_t offset, Encode&& encode_payload) {
  char record[state_record_bytes];
  encode_payload(record + format::header_bytes);
  format::encode_record(record, type, id,
                        std::string_view(record + format::header_bytes,
                                         format::state_payload_bytes),
                        format::seed(salt, offset + out.size()));
  out.append(record, sizeof record);
}

// A record of variable length (reason, pause): header, then `payload` as given.
void append_sized_record(std::string& out, format::record_type type, message_id id,
                         std::string_view payload, std::uint64_t salt, std::uint64_t offset) {
  char header[format::header_bytes];
  format::encode_record(header, type, id, payload, format::seed(salt, offset + out.size()));
  out.append(header, sizeof header);
  out.append(payload);
}

}  // namespace

// The message's bounce reason as a reason record (none when it has none).
void store::encode_reason(std::string& out, message_id id, std::uint64_t salt,
                          std::uint64_t offset) const {
  const std::string_view reason = bounce_reason(id);
  if (!reason.empty())
    append_sized_record(out, format::record_type::reason, id, reason, salt, offset);
}

// A pause record (message id 0: it names a destination, not a message).
void store::encode_pause(std::string& out, const destination_pause& value, std::uint64_t salt,
                         std::uint64_t offset) const {
  std::string payload;  // few: one per destination a reply rule paused
  format::encode_pause(value, payload);
  append_sized_record(out, format::record_type::pause, 0, payload, salt, offset);
}

void store::encode_journal_items(std::string& out, std::uint64_t salt,
                                 std::uint64_t offset) const {
  const auto& batch = _flight->journal;
  for (const auto& item : batch.items) {
    if (item.type == format::record_type::reason) {
      encode_reason(out, item.id, salt, offset);
      continue;
    }
    if (item.type == format::record_type::pause) {
      encode_pause(out, batch.pauses[item.id], salt, offset);
      continue;
    }
    append_journal_record(out, item.type, item.id, salt, offset, [&](char* payload) {
      if (item.type == format::record_type::action) format::encode_action(item.action, payload);
      else format::encode_state(item.state, payload);
    });
  }
}

// Every durable message's non-initial recipient states, as state records at `offset` onward.
void store::encode_snapshot(std::string& out, std::uint64_t salt, std::uint64_t offset) const {
  const recipient_status initial;
  for (const auto& entry : _index) {
    const message_id id = entry.id;
    if (entry.status == message_status::committing) continue;
    for (std::size_t i = 0; i < entry.recipients.size(); ++i) {
      const recipient_status status = entry.recipients[i];
      if (status == initial) continue;
      format::state_payload payload;
      payload.recipient = static_cast<std::uint16_t>(i);
      payload.state = static_cast<std::uint8_t>(status.state);
      payload.attempts = status.attempts;
      payload.next_attempt_seconds = status.next_attempt_seconds;
      append_journal_record(out, format::record_type::state, id, salt, offset,
                            [&](char* out_payload) { format::encode_state(payload, out_payload); });
    }
    encode_flag_actions(out, id, entry.flags, salt, offset);
  }
  // Expired ones were forgotten when a pause was last set or listed (the store has no clock);
  // recovery's reader drops any left (store::live_pauses).
  for (const auto& [name, pause] : _pauses) encode_pause(out, pause, salt, offset);
}

// The action records that restore a message's flags (after its state records, as in the
// journal they come from): hold, delete, bounce (its reason before it). No flags: none.
void store::encode_flag_actions(std::string& out, message_id id, std::uint8_t flags,
                                std::uint64_t salt, std::uint64_t offset) const {
  const std::pair<std::uint8_t, message_action> kinds[] = {
      {message_flag_held, message_action::hold},
      {message_flag_bounce, message_action::bounce},
      {message_flag_deleted, message_action::remove}};
  for (const auto& [flag, action] : kinds) {
    if ((flags & flag) == 0) continue;
    if (action == message_action::bounce) encode_reason(out, id, salt, offset);  // first: act()
    format::action_payload payload;
    payload.action = static_cast<std::uint8_t>(action);
    append_journal_record(out, format::record_type::action, id, salt, offset,
                          [&](char* out_payload) { format::encode_action(payload, out_payload); });
  }
}

}  // namespace ringmta::spool
