// spool::store: construction, reception (begin/append/commit/abort), delivery (mark/read).
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>

#include "store_internal.h"

namespace ringmta::spool {

namespace {

void encode_range(char* out, const body_range& range) noexcept {
  format::store_le<std::uint32_t>(out, range.segment);
  format::store_le<std::uint32_t>(out + 4, range.length);
  format::store_le<std::uint64_t>(out + 8, range.offset);
}

// A data record is only started when at least this much payload fits in the segment, so a
// nearly full segment is not filled with tiny records.
constexpr std::uint64_t record_payload_bytes_min = 512;
constexpr std::size_t raw_piece_bytes = 4096;
// Room append_raw() keeps free beyond a piece: record headers, void records, a segment tail.
// can_append() asks for the same, so its "takes all" holds for BDAT input too.
constexpr std::uint64_t raw_slack_bytes = 4096;
}  // namespace

store::store(store_config config, recovered_state recovered)
    : _config(std::move(config)),
      _ids(_config.shard, recovered.id_floor),
      _next_segment_id(recovered.next_file_id),
      _next_journal_id(recovered.next_file_id),
      _open(std::make_unique<segment_batch>()),
      _journal_open(std::make_unique<journal_batch>()),
      _flight(std::make_unique<flight>()),
      _record(std::make_unique<open_record>()) {
  RINGMTA_ASSERT(_config.block_bytes >= 4096);
  RINGMTA_ASSERT(_config.buffered_bytes_max / _config.block_bytes <= 512);  // iovecs per write
  RINGMTA_ASSERT(_config.segment_bytes >= 64 * 1024);
  RINGMTA_ASSERT(_config.segment_bytes <= commit_offset_limit);  // index.h: 34 bits
  RINGMTA_ASSERT(_config.data_record_bytes_max >= record_payload_bytes_min);
  RINGMTA_ASSERT(_config.data_record_bytes_max <= format::payload_bytes_max);
  for (auto& file : recovered.segments) {
    auto& slot = _segments[file.id];
    slot.id = file.id;
    slot.role = file_role::sealed;
    slot.fd = file.fd.release();
    slot.salt = file.salt;
    slot.write_offset = file.file_bytes;
    slot.capacity = file.file_bytes;
    slot.path = _config.directory + "/" + segment_file_name(file.id);
    slot.void_targets = std::move(file.void_targets);
  }
  for (auto& file : recovered.journals) {
    auto& slot = _journals[file.id];
    slot.id = file.id;
    slot.journal = true;
    slot.role = file_role::sealed;
    slot.fd = file.fd.release();
    slot.path = _config.directory + "/" + journal_file_name(file.id);
  }
  for (const auto& entry : recovered.messages) {
    const bool final = entry.status == message_status::final;
    // Only the set bits (usually one: the message's own segment); a queued message keeps each
    // segment it touches.
    for (std::uint64_t mask = final ? 0 : entry.segment_mask; mask != 0; mask &= mask - 1) {
      const auto bit = static_cast<std::uint32_t>(std::countr_zero(mask));
      auto found = _segments.find(entry.first_segment() + bit);
      if (found != _segments.end()) ++found->second.refs;
    }
    if (final) {
      auto found = _segments.find(entry.commit_segment);
      if (found != _segments.end()) found->second.final_ids.push_back(entry.id);
    }
  }
  _index = message_index(std::move(recovered.messages));
  for (auto& [id, reason] : recovered.bounce_reasons) _bounce_reasons[id] = std::move(reason);
  for (auto& pause : recovered.pauses) _pauses[{pause.destination, pause.kind}] = std::move(pause);
  _snapshot_needed = true;  // start-up compacts the journals into a fresh one
  request_segment();
  request_journal();
}

store::~store() {
  for (auto* files : {&_segments, &_journals}) {
    for (auto& [id, slot] : *files) {
      if (slot.fd >= 0 && slot.role != file_role::removing) ::close(slot.fd);
    }
  }
}

store::pending_message* store::lookup(message_handle handle) noexcept {
  RINGMTA_ASSERT(handle.slot < _pending.size());
  auto& message = _pending[handle.slot];
  RINGMTA_ASSERT(message.in_use && message.generation == handle.generation);
  return &message;
}

core::result<message_handle> store::begin(std::int64_t now_seconds) noexcept {
  std::uint32_t slot;
  if (!_pending_free.empty()) {
    slot = _pending_free.back();
    _pending_free.pop_back();
  } else {
    if (_pending.size() >= _config.pending_messages_max) return core::fail(EAGAIN);
    slot = static_cast<std::uint32_t>(_pending.size());
    _pending.emplace_back();
  }
  auto& message = _pending[slot];
  message.in_use = true;
  message.id = _ids.next(now_seconds);
  message.error = 0;
  message.body_bytes = 0;
  message.last_batch = 0;
  message.first_segment = 0;
  message.segment_mask = 0;
  message.ranges.clear();
  message.stuffer.reset();
  return message_handle{slot, message.generation};
}

message_id store::id_of(message_handle handle) const noexcept {
  RINGMTA_ASSERT(handle.slot < _pending.size());
  return _pending[handle.slot].id;
}

bool store::can_append(std::uint64_t bytes) const noexcept {
  if (_buffered_bytes + bytes > _config.buffered_bytes_max) return false;
  // Room for the bytes and what append_raw keeps free beyond them (headers of the records
  // they may be split into, a segment tail). Without a segment to create, append fails at once.
  return placeable_bytes() >= bytes + raw_slack_bytes || _create_error != 0;
}

std::uint64_t store::placeable_bytes() const noexcept {
  std::uint64_t bytes = 0;
  if (_current != nullptr) bytes += _current->capacity - _current->write_offset;
  if (_spare != nullptr) bytes += _spare->capacity - _spare->write_offset;
  return bytes;
}

// Makes the current segment able to take a record of `record_bytes` (or, when splittable, a
// worthwhile piece of it), switching to the spare segment when needed. 0 or an errno.
int store::ensure_room(std::uint64_t record_bytes, bool splittable) noexcept {
  if (_current != nullptr) {
    const std::uint64_t room = _current->capacity - _current->write_offset;
    if (room >= record_bytes) return 0;
    if (splittable && room >= format::header_bytes + record_payload_bytes_min) return 0;
    close_open_record();
    _current->role = file_role::sealed;
    _current = nullptr;
  }
  if (_spare == nullptr) {
    if (_create_error != 0) return _create_error;
    request_segment();
    return EAGAIN;
  }
  _current = _spare;
  _current->role = file_role::current;
  _spare = nullptr;
  request_segment();
  place_voids();
  const std::uint64_t room = _current->capacity - _current->write_offset;
  if (room < record_bytes && !splittable) return EMSGSIZE;
  return 0;
}

void store::touch(pending_message& message, std::uint32_t segment) noexcept {
  if (message.first_segment == 0) {
    message.first_segment = segment;
    message.segment_mask = 1;
    ++_current->refs;
    return;
  }
  const std::uint32_t bit = segment - message.first_segment;
  RINGMTA_ASSERT(segment >= message.first_segment && bit < 64);
  if ((message.segment_mask >> bit & 1) == 0) {
    message.segment_mask |= std::uint64_t{1} << bit;
    ++_current->refs;
  }
}

char* store::take_block() noexcept {
  char* block;
  if (!_free_blocks.empty()) {
    block = _free_blocks.back();
    _free_blocks.pop_back();
  } else {
    _blocks.push_back(std::make_unique<char[]>(_config.block_bytes));
    block = _blocks.back().get();
  }
  _open->blocks.push_back(block);
  _block = block;
  _block_used = 0;
  return block;
}

// Accounts `bytes` at `at` (inside the current block) to the current segment's extent.
static void add_piece(std::vector<iovec>& pieces, char* at, std::size_t bytes) {
  if (!pieces.empty()) {
    auto& last = pieces.back();
    if (static_cast<char*>(last.iov_base) + last.iov_len == at) {
      last.iov_len += bytes;
      return;
    }
  }
  pieces.push_back(iovec{at, bytes});
}

char* store::put_header() noexcept {
  RINGMTA_ASSERT(_current != nullptr);
  if (_block == nullptr || _config.block_bytes - _block_used < format::header_bytes) take_block();
  char* at = _block + _block_used;
  put_bytes(std::string_view(at, format::header_bytes));  // reserves; filled by the caller
  return at;
}

void store::put_bytes(std::string_view bytes) noexcept {
  RINGMTA_ASSERT(_current != nullptr);
  if (_open->extents.empty() || _open->extents.back().segment != _current->id) {
    _open->extents.push_back(extent{_current->id, _current->fd, _current->write_offset, 0, {}});
  }
  auto& target = _open->extents.back();
  std::size_t done = 0;
  while (done < bytes.size()) {
    if (_block == nullptr || _block_used == _config.block_bytes) take_block();
    const std::size_t n = std::min<std::size_t>(bytes.size() - done,
                                                _config.block_bytes - _block_used);
    char* at = _block + _block_used;
    if (bytes.data() + done != at) std::memcpy(at, bytes.data() + done, n);
    add_piece(target.pieces, at, n);
    _block_used += static_cast<std::uint32_t>(n);
    done += n;
  }
  target.bytes += bytes.size();
  _open->bytes += bytes.size();
  _buffered_bytes += bytes.size();
  _current->write_offset += bytes.size();
  _current->last_batch = _batch_seq;
}

void store::close_open_record() noexcept {
  auto& record = *_record;
  if (!record.active) return;
  format::encode_header_prefix(record.header, format::record_type::data, record.payload_bytes,
                               _pending[record.slot].id);
  xxh3::update(record.hash, record.header, format::checksummed_header_bytes);
  format::store_le<std::uint64_t>(record.header + format::checksummed_header_bytes,
                                  xxh3::digest(record.hash));
  record.active = false;
}

void store::place_voids() noexcept {
  for (auto& mark : _voids) {
    if (mark.batch != 0) continue;
    char payload[format::void_payload_bytes];
    format::store_le<std::uint64_t>(payload, mark.segment);
    format::store_le<std::uint64_t>(payload + 8, mark.valid_end);
    const std::uint64_t offset = _current->write_offset;
    char* header = put_header();
    format::encode_record(header, format::record_type::void_tail, 0,
                          std::string_view(payload, sizeof payload),
                          format::seed(_current->salt, offset));
    put_bytes(std::string_view(payload, sizeof payload));
    // If this batch is lost the mark is placed again elsewhere; this entry then only keeps
    // the segment a little longer.
    _current->void_targets.push_back(mark.segment);
    mark.batch = _batch_seq;
  }
}

// Places wire bytes of `message` as data records; returns how many were placed.
std::size_t store::append_wire(pending_message& message, std::string_view wire) noexcept {
  auto& record = *_record;
  const auto slot = static_cast<std::uint32_t>(&message - _pending.data());
  std::size_t done = 0;
  while (done < wire.size()) {
    const std::size_t rest = wire.size() - done;
    if (record.active && record.slot == slot && _current != nullptr &&
        record.segment == _current->id && record.payload_bytes < _config.data_record_bytes_max &&
        _current->write_offset < _current->capacity) {
      const std::size_t n = std::min<std::uint64_t>(
          {rest, _config.data_record_bytes_max - record.payload_bytes,
           _current->capacity - _current->write_offset});
      const auto piece = wire.substr(done, n);
      put_bytes(piece);
      xxh3::update(record.hash, piece.data(), piece.size());
      record.payload_bytes += static_cast<std::uint32_t>(n);
      message.ranges.back().length += static_cast<std::uint32_t>(n);
      message.body_bytes += n;
      done += n;
      continue;
    }
    const int error = ensure_room(
        format::header_bytes + std::min<std::uint64_t>(rest, _config.data_record_bytes_max), true);
    if (error != 0) {
      if (error != EAGAIN) message.error = error;
      break;
    }
    close_open_record();
    touch(message, _current->id);
    const std::uint64_t offset = _current->write_offset;
    record.header = put_header();
    record.active = true;
    record.slot = slot;
    record.payload_bytes = 0;
    record.segment = _current->id;
    record.offset = offset;
    xxh3::reset(record.hash, format::seed(_current->salt, offset));
    message.ranges.push_back(body_range{_current->id, 0, offset + format::header_bytes});
  }
  if (done > 0) message.last_batch = _batch_seq;
  return done;
}

core::result<std::size_t> store::append(message_handle handle, std::string_view wire) noexcept {
  auto& message = *lookup(handle);
  if (message.error != 0) return core::fail(message.error);
  if (placeable_bytes() == 0 && _create_error != 0) return core::fail(_create_error);
  const std::uint64_t room =
      _buffered_bytes >= _config.buffered_bytes_max ? 0
                                                     : _config.buffered_bytes_max - _buffered_bytes;
  const std::size_t placed = append_wire(message, wire.substr(0, std::min<std::uint64_t>(
                                                                  wire.size(), room)));
  if (message.error != 0) return core::fail(message.error);
  if (_open->bytes >= _config.batch_bytes_max && !_flight->active) submit();
  return placed;
}

core::result<std::size_t> store::append_raw(message_handle handle, std::string_view raw) noexcept {
  auto& message = *lookup(handle);
  if (message.error != 0) return core::fail(message.error);
  std::size_t done = 0;
  while (done < raw.size()) {
    const auto piece = raw.substr(done, raw_piece_bytes);
    const std::size_t stuffed = message.stuffer.stuffed_size(piece);
    // Place a piece whole or not at all, so the stuffer's state matches what was stored.
    const std::uint64_t need = stuffed + raw_slack_bytes;
    if (_buffered_bytes + stuffed > _config.buffered_bytes_max || placeable_bytes() < need) {
      // No segment can be created: fail now rather than take part of the input (can_append
      // promised all or an error; found by tests/sim, seed 21, docs/notes.md).
      if (placeable_bytes() < need && _create_error != 0) {
        message.error = _create_error;
        return core::fail(_create_error);
      }
      if (placeable_bytes() < need && _spare == nullptr) request_segment();
      break;
    }
    _scratch.clear();
    message.stuffer.feed(piece, [this](std::string_view out) { _scratch.append(out); });
    const std::size_t placed = append_wire(message, _scratch);
    if (message.error != 0) return core::fail(message.error);
    RINGMTA_ASSERT(placed == _scratch.size());
    done += piece.size();
  }
  if (_open->bytes >= _config.batch_bytes_max && !_flight->active) submit();
  return done;
}

core::result<std::uint64_t> store::commit(message_handle handle, const envelope& value,
                                          std::vector<body_slice>* body,
                                          std::string_view header_prefix,
                                          std::string_view pool) noexcept {
  auto& message = *lookup(handle);
  RINGMTA_ASSERT(value.id == message.id);
  RINGMTA_ASSERT(header_prefix.size() <= header_prefix_bytes_max);
  if (value.recipients.empty() || value.recipients.size() > envelope_recipients_max) {
    message.error = EINVAL;  // RFC 5321 §3.3: no DATA without a recipient; index is 16 bits
  }
  if (_index.full()) message.error = ENOSPC;  // index.h: entries_max (134 M) a shard
  if (message.error != 0) {
    const int error = message.error;
    forget_pending(message);
    return core::fail(error);
  }
  // The prefix (DKIM-Signature fields) is a data record of its own, placed right before the
  // commit record and named FIRST among the body ranges: delivery sends it ahead of the
  // received bytes. Its range is filled in once the record has its place.
  const bool prefixed = !header_prefix.empty();
  const std::uint64_t prefix_record_bytes =
      prefixed ? format::header_bytes + header_prefix.size() : 0;
  const std::size_t range_count = message.ranges.size() + (prefixed ? 1 : 0);
  _scratch.clear();
  char fixed[format::commit_fixed_bytes];
  format::store_le<std::uint64_t>(fixed, message.body_bytes + header_prefix.size());
  format::store_le<std::uint32_t>(fixed + 8, static_cast<std::uint32_t>(range_count));
  _scratch.append(fixed, sizeof fixed);
  if (prefixed) _scratch.append(format::range_bytes, '\0');  // patched below
  for (const auto& range : message.ranges) {
    char bytes[format::range_bytes];
    encode_range(bytes, range);
    _scratch.append(bytes, sizeof bytes);
  }
  const std::size_t envelope_at = _scratch.size();
  encode_envelope(value, _scratch, pool);
  format::store_le<std::uint32_t>(_scratch.data() + 12,
                                  static_cast<std::uint32_t>(_scratch.size() - envelope_at));
  const std::uint64_t record_bytes = format::header_bytes + _scratch.size();
  if (prefix_record_bytes + record_bytes > _config.segment_bytes - format::first_record_offset ||
      _scratch.size() > format::payload_bytes_max) {
    forget_pending(message);
    return core::fail(EMSGSIZE);
  }
  const int error = ensure_room(prefix_record_bytes + record_bytes, false);
  if (error == EAGAIN) return core::fail(EAGAIN);
  if (error != 0) {
    forget_pending(message);
    return core::fail(error);
  }
  close_open_record();
  touch(message, _current->id);
  if (prefixed) {
    const body_range range = place_prefix(message.id, header_prefix);
    encode_range(_scratch.data() + format::commit_fixed_bytes, range);
    message.ranges.insert(message.ranges.begin(), range);
    message.body_bytes += header_prefix.size();
  }
  const std::uint64_t offset = _current->write_offset;
  char* header = put_header();
  format::encode_record(header, format::record_type::commit, message.id, _scratch,
                        format::seed(_current->salt, offset));
  put_bytes(_scratch);

  message_entry entry;
  entry.id = message.id;
  entry.commit_offset = offset;
  entry.commit_segment = _current->id;
  entry.commit_bytes = static_cast<std::uint32_t>(record_bytes);
  entry.set_first_segment(message.first_segment);
  entry.segment_mask = message.segment_mask;
  entry.status = message_status::committing;
  entry.recipients.assign(value.recipients.size());
  _index.insert(std::move(entry));  // ids are fresh (the generator's floor): never present
  const std::uint64_t ticket = _next_ticket++;
  _open->tickets.emplace_back(ticket, message.id);
  if (body != nullptr) {
    body->clear();
    for (const auto& range : message.ranges)
      body->push_back(body_slice{segment_fd(range.segment), range.offset, range.length});
  }
  // The references now belong to the index entry.
  message.first_segment = 0;
  message.segment_mask = 0;
  forget_pending(message);
  if (_open->bytes >= _config.batch_bytes_max && !_flight->active) submit();
  return ticket;
}

// One whole data record holding `bytes`, at the current write offset (room was ensured).
body_range store::place_prefix(message_id id, std::string_view bytes) noexcept {
  const std::uint64_t offset = _current->write_offset;
  char* header = put_header();
  format::encode_record(header, format::record_type::data, id, bytes,
                        format::seed(_current->salt, offset));
  put_bytes(bytes);
  return body_range{_current->id, static_cast<std::uint32_t>(bytes.size()),
                    offset + format::header_bytes};
}

void store::release_segments(std::uint32_t first, std::uint64_t mask) noexcept {
  for (unsigned bit = 0; bit < 64; ++bit) {
    if ((mask >> bit & 1) == 0) continue;
    auto found = _segments.find(first + bit);
    RINGMTA_ASSERT(found != _segments.end() && found->second.refs > 0);
    --found->second.refs;
    maybe_remove_segment(found->second);
  }
}

void store::forget_pending(pending_message& message) noexcept {
  const auto slot = static_cast<std::uint32_t>(&message - _pending.data());
  if (_record->active && _record->slot == slot) close_open_record();
  const std::uint32_t first = message.first_segment;
  const std::uint64_t mask = message.segment_mask;
  message.first_segment = 0;
  message.segment_mask = 0;
  message.in_use = false;
  ++message.generation;
  message.ranges.clear();
  _pending_free.push_back(slot);
  if (first != 0) release_segments(first, mask);
}

void store::abort(message_handle handle) noexcept { forget_pending(*lookup(handle)); }

const message_entry* store::find(message_id id) const noexcept {
  const message_entry* entry = _index.find(id);
  if (entry == nullptr || entry->status == message_status::committing) return nullptr;
  return entry;
}

std::string_view store::bounce_reason(message_id id) const noexcept {
  const auto found = _bounce_reasons.find(id);
  return found == _bounce_reasons.end() ? std::string_view() : std::string_view(found->second);
}

bool store::journal_has_room(std::uint64_t record_bytes) const noexcept {
  const std::uint64_t open = _journal_open->items.size() * std::uint64_t{state_record_bytes} +
                             _journal_open->variable_bytes;
  return open + record_bytes <= _config.journal_buffered_bytes_max;
}

message_entry* store::find_queued(message_id id) noexcept {
  message_entry* entry = _index.find(id);
  return entry == nullptr || entry->status != message_status::queued ? nullptr : entry;
}

core::result<std::uint64_t> store::mark(message_id id, std::uint16_t recipient,
                                        recipient_status status) noexcept {
  message_entry* found = find_queued(id);
  if (found == nullptr) return core::fail(ENOENT);
  auto& entry = *found;
  if (recipient >= entry.recipients.size() || is_final(entry.recipients[recipient].state)) {
    return core::fail(EINVAL);
  }
  if (!journal_has_room(state_record_bytes)) return core::fail(ENOBUFS);
  entry.recipients.set(recipient, status);
  // The outcome of a message an operator bounced or deleted: no lag. Recovery would bounce or
  // delete a recipient whose delivered mark was lost, instead of delivering it again.
  if ((entry.flags & (message_flag_bounce | message_flag_deleted)) != 0) {
    _journal_open->urgent = true;
  }
  format::state_payload payload;
  payload.recipient = recipient;
  payload.state = static_cast<std::uint8_t>(status.state);
  payload.attempts = status.attempts;
  payload.next_attempt_seconds = status.next_attempt_seconds;
  journal_item item;
  item.id = id;
  item.state = payload;
  _journal_open->items.push_back(item);
  const std::uint64_t ticket = _next_ticket++;
  _journal_open->tickets.emplace_back(ticket, id);
  const bool all_final = std::all_of(entry.recipients.begin(), entry.recipients.end(),
                                     [](const recipient_status& s) { return is_final(s.state); });
  if (all_final) {
    entry.status = message_status::final;
    _journal_open->finals.push_back(id);
  }
  return ticket;
}

core::result<std::uint64_t> store::act(message_id id, message_action action,
                                       std::int64_t now_seconds, std::string_view reason) noexcept {
  message_entry* found = find_queued(id);
  if (found == nullptr) return core::fail(ENOENT);
  if (reason.size() > bounce_reason_bytes_max ||
      (!reason.empty() && action != message_action::bounce)) {
    return core::fail(EINVAL);
  }
  const std::uint64_t reason_bytes = reason.empty() ? 0 : format::header_bytes + reason.size();
  if (!journal_has_room(state_record_bytes + reason_bytes)) return core::fail(ENOBUFS);
  found->flags = apply_action(found->flags, action);
  journal_item item;
  item.id = id;
  if (!reason.empty()) {
    // Before the action: a crash that tears the batch keeps a prefix of it, so a surviving
    // bounce always has its reason (ringmta-sim seed 91002316 lost it when the reason came
    // second). Recovery keeps a reason only for a message whose bounce survived.
    _bounce_reasons[id] = std::string(reason);
    item.type = format::record_type::reason;
    _journal_open->items.push_back(item);
    _journal_open->variable_bytes += reason_bytes;
  }
  item.type = format::record_type::action;
  item.action.action = static_cast<std::uint8_t>(action);
  item.action.seconds = now_seconds;
  _journal_open->items.push_back(item);
  _journal_open->urgent = true;
  const std::uint64_t ticket = _next_ticket++;
  _journal_open->tickets.emplace_back(ticket, id);
  return ticket;
}

core::result<void> store::pause_destination(const destination_pause& value,
                                            std::int64_t now_ms) noexcept {
  if (value.destination.empty() || value.destination.size() > destination_name_bytes_max)
    return core::fail(EINVAL);
  const std::uint64_t bytes = format::pause_fixed_bytes + value.destination.size();
  if (!journal_has_room(state_record_bytes + bytes)) return core::fail(ENOBUFS);
  forget_expired_pauses(now_ms);
  if (value.kind == pause_kind::lifted) {
    _pauses.erase({value.destination, pause_kind::suspend});
    _pauses.erase({value.destination, pause_kind::throttle});
  } else {
    _pauses[{value.destination, value.kind}] = value;
  }
  journal_item item;
  item.type = format::record_type::pause;
  item.id = _journal_open->pauses.size();
  _journal_open->pauses.push_back(value);
  _journal_open->items.push_back(item);
  _journal_open->variable_bytes += bytes;
  // Lagged, a crash could lose the firing's only record (the jobs it holds no longer carry
  // the pause in their retry times).
  _journal_open->urgent = true;
  return {};
}

std::vector<destination_pause> store::live_pauses(std::int64_t now_ms) {
  forget_expired_pauses(now_ms);
  return pauses();
}

std::vector<destination_pause> store::pauses() const {
  std::vector<destination_pause> out;
  out.reserve(_pauses.size());
  for (const auto& [name, pause] : _pauses) out.push_back(pause);
  return out;
}

void store::forget_expired_pauses(std::int64_t now_ms) noexcept {
  std::erase_if(_pauses, [&](const auto& entry) { return entry.second.until_ms <= now_ms; });
}

core::result<commit_view> decode_commit(std::string_view payload) {
  commit_view view;
  if (auto decoded = decode_commit(payload, view); !decoded) return core::fail(decoded.error());
  return view;
}

core::result<void> decode_commit(std::string_view payload, commit_view& view) {
  if (payload.size() < format::commit_fixed_bytes) return core::fail(EBADMSG);
  view.body_bytes = format::load_le<std::uint64_t>(payload.data());
  const auto count = format::load_le<std::uint32_t>(payload.data() + 8);
  const auto envelope_bytes = format::load_le<std::uint32_t>(payload.data() + 12);
  const std::uint64_t expected = format::commit_fixed_bytes +
                                 std::uint64_t{count} * format::range_bytes + envelope_bytes;
  if (expected != payload.size()) return core::fail(EBADMSG);
  view.ranges.resize(count);  // keeps its capacity when `view` is reused
  std::uint64_t total = 0;
  const char* at = payload.data() + format::commit_fixed_bytes;
  for (auto& range : view.ranges) {
    range.segment = format::load_le<std::uint32_t>(at);
    range.length = format::load_le<std::uint32_t>(at + 4);
    range.offset = format::load_le<std::uint64_t>(at + 8);
    total += range.length;
    at += format::range_bytes;
  }
  if (total != view.body_bytes) return core::fail(EBADMSG);
  view.envelope_bytes = payload.substr(payload.size() - envelope_bytes);
  return {};
}

core::result<stored_message> store::read(message_id id) const {
  auto where = locate(id);
  if (!where) return core::fail(where.error());
  const auto salt = _segments.at(where.value().segment).salt;
  auto record = format::read_commit_record(where.value().fd, salt, where.value().offset,
                                          where.value().bytes, id);
  if (!record) return core::fail(record.error());
  return decode_stored(id, record.value());
}

core::result<commit_location> store::locate(message_id id) const noexcept {
  const message_entry* entry = find(id);
  if (entry == nullptr) return core::fail(ENOENT);
  auto segment = _segments.find(entry->commit_segment);
  if (segment == _segments.end() || segment->second.fd < 0) return core::fail(ENOENT);
  return commit_location{segment->second.fd, entry->commit_segment, entry->commit_bytes,
                         entry->commit_offset};
}

core::result<stored_message> store::parse_commit(message_id id, const commit_location& where,
                                                 std::string_view record) const {
  auto segment = _segments.find(where.segment);
  if (segment == _segments.end() || record.size() != where.bytes) return core::fail(EBADMSG);
  auto payload = format::check_commit_record(record, segment->second.salt, where.offset, id);
  if (!payload) return core::fail(payload.error());
  return decode_stored(id, payload.value());
}

// A commit record's payload (checked) as the envelope and where the body lies.
core::result<stored_message> store::decode_stored(message_id id, std::string_view payload) const {
  auto view = decode_commit(payload);
  if (!view) return core::fail(view.error());
  stored_message message;
  auto decoded = decode_envelope(view.value().envelope_bytes, &message.pool);
  if (!decoded) return core::fail(decoded.error());
  message.envelope = std::move(decoded.value());
  message.envelope.id = id;
  message.body_bytes = view.value().body_bytes;
  message.body.reserve(view.value().ranges.size());
  for (const auto& range : view.value().ranges) {
    auto holder = _segments.find(range.segment);
    if (holder == _segments.end() || holder->second.fd < 0) return core::fail(ENOENT);
    message.body.push_back(body_slice{holder->second.fd, range.offset, range.length});
  }
  return message;
}

int store::segment_fd(std::uint32_t segment) const noexcept {
  auto found = _segments.find(segment);
  return found == _segments.end() ? -1 : found->second.fd;
}

bool store::next_event(event& out) noexcept {
  if (_events.empty()) return false;
  out = _events.front();
  _events.pop_front();
  return true;
}

void store::push_event(event_kind kind, std::uint64_t ticket, message_id id, int error) noexcept {
  _events.push_back(event{kind, ticket, id, error});
}

bool store::idle() const noexcept {
  return _operations.empty() && !_flight->active && _open->bytes == 0 &&
         _open->tickets.empty() && _journal_open->empty() && !_creating_segment &&
         !_creating_journal;
}

store_stats store::stats() const noexcept {
  store_stats out = _stats;
  out.buffered_bytes = _buffered_bytes;
  out.queued_messages = 0;
  for (const auto& entry : _index) {
    if (entry.status == message_status::queued) ++out.queued_messages;
  }
  return out;
}

}  // namespace ringmta::spool
