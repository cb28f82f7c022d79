// spool::store: group commit. flush() turns the open batch into writes, then one datasync per
// file once every write completed; tickets are reported only after the syncs succeed.
#include <algorithm>
#include <cerrno>

#include "store_internal.h"

namespace ringmta::spool {

void store::push_operation(const operation& op) noexcept { _operations.push_back(op); }

bool store::next_operation(operation& out) noexcept {
  if (_operations.empty()) return false;
  out = _operations.front();
  _operations.pop_front();
  return true;
}

void store::flush() noexcept {
  _flush_requested = true;
  // Failed creations are retried once per flush (the reactor's loop iteration), not per call.
  // The error stays until a creation succeeds: meanwhile appends fail at once (452 for the
  // client) rather than wait for a retry that is likely to fail the same way.
  if (_create_error != 0 && !_creating_segment && _spare == nullptr) request_segment();
  if ((_journal_create_error != 0 || _snapshot_needed) && !_creating_journal &&
      _journal_spare == nullptr) {
    _journal_create_error = 0;
    request_journal();
  }
  if (!_flight->active) submit();
}

void store::submit() noexcept {
  RINGMTA_ASSERT(!_flight->active);
  auto& f = *_flight;
  f.segment_error = 0;
  f.journal_error = 0;
  f.writes_pending = 0;
  f.syncs_pending = 0;
  f.syncs_issued = false;
  f.journal_file = nullptr;
  f.seq = _batch_seq;
  f.sync_segments = false;
  f.segment_sync_fds.clear();
  close_open_record();
  const std::size_t first_op = _operations.size();
  const bool flush_requested = _flush_requested;
  const bool commits = !_open->tickets.empty();
  if (_open->bytes > 0 || commits) submit_segment_part(flush_requested);
  // Marks wait for a flight without commits, unless they have waited long or piled up.
  const bool journal_lags = commits && !_snapshot_needed &&
                            _flights_since_journal < _config.journal_lag_flights_max &&
                            _journal_open->items.size() < _config.journal_lag_items_max &&
                            !_journal_open->urgent;
  bool journal_deferred = false;
  if (journal_lags) {
    journal_deferred = !_journal_open->empty();  // keep the request: marks still to write
  } else {
    journal_deferred = !submit_journal_part();
  }
  _flights_since_journal = f.journal_file != nullptr ? 0 : _flights_since_journal + 1;
  if (f.writes_pending == 0) {
    // Nothing to write. A request stays only for marks waiting for their journal file (its
    // creation completes into a submit); else the next full batch would sync for nothing.
    _flush_requested = journal_deferred;
    return;
  }
  _flush_requested = false;
  f.active = true;
  ++_stats.flushes;
  // The datasyncs go out now, chained behind the writes (each op links to the next): the
  // kernel starts them as soon as the writes are done, without a trip through the loop.
  // Only when this flight's operations are nothing but its writes (a file creation queued in
  // between would break the chain): a sync must never start before the writes it covers.
  const bool only_writes = _operations.size() - first_op == f.writes_pending;
  if ((f.sync_segments || f.journal_file != nullptr) && only_writes) {
    f.syncs_issued = true;
    start_syncs();
    for (std::size_t i = first_op; i + 1 < _operations.size(); ++i) {
      _operations[i].link_next = true;
    }
  }
}

void store::submit_segment_part(bool flush_requested) noexcept {
  auto& f = *_flight;
  std::swap(f.segments, *_open);
  f.sync_segments = flush_requested || !f.segments.tickets.empty();
  if (_unsynced_since == 0) _unsynced_since = f.seq;
  for (const auto& part : f.segments.extents) {
    const bool known = std::any_of(_unsynced_starts.begin(), _unsynced_starts.end(),
                                   [&](const auto& start) { return start.first == part.segment; });
    if (!known) _unsynced_starts.emplace_back(part.segment, part.offset);
  }
  if (f.sync_segments) {
    for (const auto& [segment, offset] : _unsynced_starts) {
      auto found = _segments.find(segment);
      RINGMTA_ASSERT(found != _segments.end() && found->second.fd >= 0);
      f.segment_sync_fds.push_back(found->second.fd);
    }
  }
  _open->seq = ++_batch_seq;
  _block = nullptr;  // the partly filled block travels with the flight
  _block_used = 0;
  for (std::size_t i = 0; i < f.segments.extents.size(); ++i) {
    const auto& part = f.segments.extents[i];
    operation op;
    op.kind = operation_kind::write;
    op.token = make_token(token_class::segment_write, f.seq << 16 | i);
    op.fd = part.fd;
    op.offset = part.offset;
    op.iovecs = part.pieces.data();
    op.iovec_count = static_cast<std::uint32_t>(part.pieces.size());
    op.bytes = part.bytes;
    push_operation(op);
    ++f.writes_pending;
  }
}

// The journal is compacted once it passes journal_bytes and has at least doubled since the last
// snapshot: a snapshot larger than journal_bytes (many messages kept until their segment goes)
// must not trigger another one at every flush. Rewrites stay within 2x of what is appended.
bool store::journal_wants_compaction() const noexcept {
  if (_journal == nullptr) return false;
  const std::uint64_t threshold =
      std::max<std::uint64_t>(_config.journal_bytes, 2 * _last_snapshot_bytes);
  return _journal->write_offset > threshold;
}

// False when marks wait for a journal file to be created.
bool store::submit_journal_part() noexcept {
  auto& f = *_flight;
  if (_journal_open->empty() && !_snapshot_needed) return true;
  if (!_snapshot_needed && journal_wants_compaction() && _journal_spare != nullptr) {
    _snapshot_needed = true;  // compaction: rewrite the live state into a fresh journal
  }
  file_slot* target = _snapshot_needed ? _journal_spare : _journal;
  if (target == nullptr) {
    request_journal();
    return false;  // marks wait in the open journal batch
  }
  std::swap(f.journal, *_journal_open);
  _journal_open->clear();
  f.journal_bytes.clear();
  f.journal_snapshot = _snapshot_needed;
  if (_snapshot_needed) {
    encode_snapshot(f.journal_bytes, target->salt, target->write_offset);
    _last_snapshot_bytes = f.journal_bytes.size();
    _journal_spare = nullptr;
    target->role = file_role::current;
    if (_journal != nullptr) _journal->role = file_role::sealed;
    _journal = target;
    _snapshot_needed = false;
    ++_stats.journal_snapshots;
  } else {
    encode_journal_items(f.journal_bytes, target->salt, target->write_offset);
  }
  f.journal_file = target;  // an empty write still gets its sync: the snapshot is then durable
  f.journal_iovec = iovec{f.journal_bytes.data(), f.journal_bytes.size()};
  operation op;
  op.kind = operation_kind::write;
  op.token = make_token(token_class::journal_write, f.seq << 16);
  op.fd = target->fd;
  op.offset = target->write_offset;
  op.iovecs = &f.journal_iovec;
  op.iovec_count = 1;
  op.bytes = f.journal_bytes.size();
  target->write_offset += f.journal_bytes.size();
  push_operation(op);
  ++f.writes_pending;
  return true;
}

void store::complete(std::uint64_t token, std::int64_t result) noexcept {
  const token_class kind = token_kind(token);
  const std::uint64_t value = token_value(token);
  switch (kind) {
    case token_class::create_segment:
    case token_class::create_journal:
      on_create_done(static_cast<std::uint32_t>(value), kind == token_class::create_journal,
                     result);
      return;
    case token_class::remove_segment:
    case token_class::remove_journal:
      on_remove_done(static_cast<std::uint32_t>(value), kind == token_class::remove_journal,
                     result);
      return;
    default: break;
  }
  auto& f = *_flight;
  RINGMTA_ASSERT(f.active && (value >> 16) == f.seq);
  const std::size_t index = value & 0xffff;
  const bool segment = kind == token_class::segment_write || kind == token_class::segment_sync;
  int error = result < 0 ? static_cast<int>(-result) : 0;
  if (kind == token_class::segment_write || kind == token_class::journal_write) {
    const std::uint64_t expected =
        segment ? f.segments.extents[index].bytes : f.journal_bytes.size();
    if (error == 0 && static_cast<std::uint64_t>(result) != expected) error = EIO;  // short
    if (error == 0) _stats.bytes_written += expected;
    (segment ? f.segment_error : f.journal_error) |= error;
    RINGMTA_ASSERT(f.writes_pending > 0);
    if (--f.writes_pending > 0) return;
    if (!f.syncs_issued) return start_syncs();
    if (f.syncs_pending == 0) on_flight_done();  // a driver may finish syncs first
    return;
  }
  RINGMTA_ASSERT(kind == token_class::segment_sync || kind == token_class::journal_sync);
  if (error == 0) ++_stats.datasyncs;
  int& part_error = segment ? f.segment_error : f.journal_error;
  if (part_error == 0) part_error = error;
  RINGMTA_ASSERT(f.syncs_pending > 0);
  if (--f.syncs_pending == 0 && f.writes_pending == 0) on_flight_done();
}

void store::start_syncs() noexcept {
  auto& f = *_flight;
  if (f.segment_error == 0) {
    for (std::size_t i = 0; i < f.segment_sync_fds.size(); ++i) {
      operation op;
      op.kind = operation_kind::datasync;
      op.token = make_token(token_class::segment_sync, f.seq << 16 | i);
      op.fd = f.segment_sync_fds[i];
      push_operation(op);
      ++f.syncs_pending;
    }
  }
  if (f.journal_file != nullptr && f.journal_error == 0) {
    operation op;
    op.kind = operation_kind::datasync;
    op.token = make_token(token_class::journal_sync, f.seq << 16);
    op.fd = f.journal_file->fd;
    push_operation(op);
    ++f.syncs_pending;
  }
  if (f.syncs_pending == 0 && f.writes_pending == 0) on_flight_done();
}

void store::recycle(segment_batch& batch) noexcept {
  for (char* block : batch.blocks) _free_blocks.push_back(block);
  RINGMTA_ASSERT(_buffered_bytes >= batch.bytes);
  _buffered_bytes -= batch.bytes;
  batch.blocks.clear();
  batch.extents.clear();
  batch.tickets.clear();
  batch.bytes = 0;
}

void store::on_flight_done() noexcept {
  auto& f = *_flight;
  finish_segment_part();
  finish_journal_part();
  recycle(f.segments);
  f.active = false;
  remove_unneeded_files();
  if (_flush_requested || _open->bytes >= _config.batch_bytes_max ||
      (_snapshot_needed && _journal_spare != nullptr)) {
    submit();
  }
}

void store::finish_segment_part() noexcept {
  auto& f = *_flight;
  if (f.segment_error != 0) {
    fail_segments(f.segment_error);
    return;
  }
  if (!f.sync_segments) return;  // written, not yet durable: nothing to report
  _unsynced_since = 0;
  _unsynced_starts.clear();
  for (const auto& [ticket, id] : f.segments.tickets) {
    message_entry* found = _index.find(id);
    RINGMTA_ASSERT(found != nullptr);
    found->status = message_status::queued;
    ++_stats.commits_durable;
    push_event(event_kind::committed, ticket, id, 0);
  }
  std::erase_if(_voids, [&](const void_mark& mark) {
    return mark.batch != 0 && mark.batch <= f.seq;  // durable now
  });
}

void store::finish_journal_part() noexcept {
  auto& f = *_flight;
  if (f.journal_file == nullptr) return;
  auto& batch = f.journal;
  if (f.journal_error != 0) {
    // The journal may now hold a torn region: abandon it and rewrite everything as a snapshot
    // in a fresh one. Finals stay pending until that snapshot is durable.
    for (const auto& [ticket, id] : batch.tickets) {
      push_event(event_kind::marked, ticket, id, f.journal_error);
    }
    for (message_id id : batch.finals) _journal_open->finals.push_back(id);
    if (_journal == f.journal_file) {
      _journal->role = file_role::sealed;
      _journal = nullptr;
    }
    // A snapshot that failed holds nothing the older journals do not: remove its file. The
    // next attempt waits for the next flush(), so a broken disk costs one try per loop
    // iteration, not a storm of new files.
    if (f.journal_snapshot) request_remove(*f.journal_file);
    _snapshot_needed = true;
  } else {
    for (const auto& [ticket, id] : batch.tickets) push_event(event_kind::marked, ticket, id, 0);
    for (message_id id : batch.finals) {
      const message_entry* found = _index.find(id);
      RINGMTA_ASSERT(found != nullptr && found->status == message_status::final);
      const auto& entry = *found;
      auto holder = _segments.find(entry.commit_segment);
      RINGMTA_ASSERT(holder != _segments.end());
      holder->second.final_ids.push_back(id);
      release_segments(entry.first_segment(), entry.segment_mask);
    }
    if (f.journal_snapshot) {
      // Older journals are superseded by the snapshot now that it is durable.
      for (auto& [id, journal] : _journals) {
        if (id < f.journal_file->id && journal.role == file_role::sealed) request_remove(journal);
      }
    }
    if (journal_wants_compaction()) request_journal();
  }
  batch.clear();
}

// A segment write or sync failed: nothing written since the last successful sync can be
// trusted (a sync error may stem from any earlier unsynced page). Fail every ticket in the
// failed and the open batch, fail the messages with data in any unsynced batch,
// abandon the segments they touched (void_tail records in the next segment mark where those
// end) and continue in a fresh segment.
void store::fail_segments(int error) noexcept {
  auto& f = *_flight;
  const std::uint64_t lost_from = _unsynced_since != 0 ? _unsynced_since : f.seq;
  close_open_record();
  _record->active = false;
  for (const auto& [segment, offset] : _unsynced_starts) {
    _voids.push_back(void_mark{segment, offset, 0});
    if (_current != nullptr && _current->id == segment) {
      _current->role = file_role::sealed;
      _current = nullptr;
    }
  }
  for (segment_batch* batch : {&f.segments, _open.get()}) {
    for (const auto& part : batch->extents) {
      auto found = std::find_if(_voids.begin(), _voids.end(), [&](const void_mark& mark) {
        return mark.segment == part.segment && mark.batch == 0;
      });
      if (found == _voids.end()) {
        _voids.push_back(void_mark{part.segment, part.offset, 0});
      } else {
        found->valid_end = std::min(found->valid_end, part.offset);
      }
      if (_current != nullptr && _current->id == part.segment) {
        _current->role = file_role::sealed;
        _current = nullptr;
      }
    }
    for (const auto& [ticket, id] : batch->tickets) {
      std::uint32_t first = 0;
      std::uint64_t mask = 0;
      const bool erased = _index.erase_if(id, [&](const message_entry& found) {
        first = found.first_segment();
        mask = found.segment_mask;
        return true;
      });
      RINGMTA_ASSERT(erased);
      release_segments(first, mask);
      ++_stats.commits_failed;
      push_event(event_kind::committed, ticket, id, error);
    }
  }
  for (auto& mark : _voids) {
    if (mark.batch >= lost_from) mark.batch = 0;  // its record was in a lost batch: place again
  }
  for (auto& message : _pending) {
    if (message.in_use && message.error == 0 && message.last_batch >= lost_from) {
      message.error = error;
    }
  }
  _unsynced_since = 0;
  _unsynced_starts.clear();
  recycle(*_open);
  _open->seq = ++_batch_seq;
  _block = nullptr;
  _block_used = 0;
}

}  // namespace ringmta::spool
