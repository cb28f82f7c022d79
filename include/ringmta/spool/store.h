// spool::store: one shard's log-structured message store, sans-IO.
//
// Messages stream in (begin → append… → commit, or abort) and are laid out at once in an
// append-only segment file (data records, then a commit record holding the envelope and the
// body ranges). Appends are copied into fixed blocks of the open batch; flush() (end of the
// reactor's loop iteration) or a full batch turns the batch into write operations and, once
// they complete, one datasync per file: group commit. One flush is in flight at a time; the
// next batch accumulates meanwhile; a batch that fills with body data only is written without
// a sync (the next sync covers it). A commit ticket is reported durable (next_event) only
// after its data, its commit record and everything before them were written AND synced.
// Per-recipient delivery state goes to a separate small journal with the same batching;
// the journal is rewritten as a snapshot (compaction) when it grows, after a failed write,
// and at start-up. A segment is removed when no queued or in-progress message touches it.
//
// Invariants: the store makes no syscall except in read() (one pread) and the destructor
// (closes the fds it owns). Memory is bounded by config (buffered bytes) plus the index
// (index.h documents bytes per message). After a failed write the current segment is
// abandoned and a void_tail record in the next one tells recovery where it ends, so no
// batch ever builds on a torn region.
// Never: report a ticket durable early, reuse a file offset, or throw.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/dot_stuffer.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/index.h"
#include "ringmta/spool/operation.h"
#include "ringmta/spool/recovery.h"

namespace ringmta::spool {

struct store_config {
  std::string directory;  // this shard's directory, e.g. DIR/shard-0 (must exist)
  std::uint32_t shard = 0;
  std::uint64_t segment_bytes = 64u << 20;        // size of a segment file
  // fallocate segments at creation: a full disk then fails the creation, not an append.
  // Costs ~20% of large-message bandwidth on ext4 here (docs/spool.md).
  bool preallocate = true;
  std::uint64_t journal_bytes = 4u << 20;         // compact the journal past this size
  std::uint32_t block_bytes = 256u << 10;         // unit of batch memory
  std::uint64_t batch_bytes_max = 1u << 20;       // a batch this full flushes by itself
  std::uint64_t buffered_bytes_max = 16u << 20;   // append() pushes back beyond this
  std::uint32_t data_record_bytes_max = 1u << 20;  // payload of one data record
  std::uint64_t journal_buffered_bytes_max = 4u << 20;  // mark() fails beyond this
  std::uint32_t pending_messages_max = 65536;       // begin() fails beyond this
  // Recipient-state marks ride along with a flight that makes commits durable only every
  // this many flights (or when they pile up): their fdatasync would otherwise hold back every
  // 250. A late mark can only cause a redelivery after a crash, never a loss.
  std::uint32_t journal_lag_flights_max = 8;
  std::uint32_t journal_lag_items_max = 4096;
  // Secret per process (getrandom): salts the record checksums so that bytes inside a message
  // body can never pass for a record. sync_driver::make_config fills it.
  std::uint64_t random_seed = 0;
};

// Opaque handle of a message being received.
struct message_handle {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
};

// The body as the delivery side sends it: wire form (dot-stuffed, CRLF), without the final
// ".CRLF". Pieces in order; fd stays open until the message is final.
struct body_slice {
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint32_t length = 0;
};

inline constexpr std::size_t header_prefix_bytes_max = 64u << 10;

struct stored_message {
  spool::envelope envelope;
  std::uint64_t body_bytes = 0;
  std::vector<body_slice> body;
  std::string pool;  // the egress pool given to commit() (envelope.h), empty: none
};

// Where a message's commit record lies (store::locate): read `bytes` at `offset` of `fd`.
struct commit_location {
  int fd = -1;
  std::uint32_t segment = 0;
  std::uint32_t bytes = 0;  // header + payload
  std::uint64_t offset = 0;
};

struct store_stats {
  std::uint64_t flushes = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t datasyncs = 0;
  std::uint64_t commits_durable = 0;
  std::uint64_t commits_failed = 0;
  std::uint64_t segments_created = 0;
  std::uint64_t segments_removed = 0;
  std::uint64_t journal_snapshots = 0;
  std::uint64_t queued_messages = 0;
  std::uint64_t buffered_bytes = 0;
};

class store {
 public:
  // Takes the fds in `recovered`. Emits the operations that create the first segment and
  // journal and remove files that hold nothing live; the embedder runs them as usual.
  store(store_config config, recovered_state recovered);
  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // --- reception (the SMTP session's end of DATA / BDAT) ---
  // Starts a message and gives it its id (for the Received: header). EAGAIN: too many open.
  core::result<message_handle> begin(std::int64_t now_seconds) noexcept;
  message_id id_of(message_handle handle) const noexcept;
  // Appends body bytes in wire form. Returns how many were taken: fewer than given (even 0)
  // means the buffers are full; offer the rest after the next completion. An error fails the
  // message (the session answers 452 at its end and aborts it).
  core::result<std::size_t> append(message_handle handle, std::string_view wire) noexcept;
  // The same for a raw BDAT chunk: dot-stuffed on the way in (RFC 5321 §4.5.2), line-start
  // state kept across chunks. Counts input bytes.
  core::result<std::size_t> append_raw(message_handle handle, std::string_view raw) noexcept;
  // Ends the message: returns a ticket; answer 250 when next_event reports it durable.
  // envelope.id must be id_of(handle). EAGAIN: no segment ready yet, retry after the next
  // completion. Any other error (and a failed event) means 452 4.3.1. Consumes the handle
  // unless the error is EAGAIN.
  // With `body`, also gives where the committed body lives (what read() would say), so the
  // caller can deliver it without reading the commit record back.
  // `header_prefix` (header fields computed at the end of data, e.g. DKIM-Signature; CRLF
  // lines that never start with ".", so wire and raw form agree) is stored in its own data
  // record in the same group commit and becomes the FIRST body range: every reader (delivery,
  // `spool cat`, DSNs) sees it ahead of the received bytes. At most header_prefix_bytes_max.
  // `pool` (the egress pool an X-Ringmta-Pool header chose) is stored with the envelope and
  // given back by read().
  core::result<std::uint64_t> commit(message_handle handle, const envelope& value,
                                     std::vector<body_slice>* body = nullptr,
                                     std::string_view header_prefix = {},
                                     std::string_view pool = {}) noexcept;
  void abort(message_handle handle) noexcept;

  // --- delivery ---
  // A durable message, queued or final; nullptr when unknown or not yet durable. The pointer
  // is valid until the next complete() (where finished messages leave the index and other
  // entries move into their places: index.h); begin/append/commit/mark/act/read/flush never
  // move an entry. Hold the id, not the pointer, across a completion.
  const message_entry* find(message_id id) const noexcept;
  // Records a recipient's new state (final states are final: EINVAL to change them). The
  // ticket is reported (event_kind::marked) when the change is durable; delivery need not
  // wait for it (losing it means a redelivery, not a loss).
  core::result<std::uint64_t> mark(message_id id, std::uint16_t recipient,
                                   recipient_status status) noexcept;
  // An operator action on a queued message (ringmta-ctl hold/release/delete/bounce): updates
  // its flags and journals an action record. The ticket is reported (event_kind::marked)
  // once the record is durable, and the batch holding it is synced with the next flight
  // (never lagged behind commits as marks are): the admin API answers only then. A delete
  // does not make the message final by itself (deliveries in flight still read its body):
  // the embedder marks each recipient `deleted` as its jobs leave; recovery does that for
  // every recipient not yet final. ENOENT: not queued; ENOBUFS: journal buffer full.
  // A bounce may carry the operator's reason (ringmta-ctl bounce --reason): journaled with
  // the action, so the DSNs of a bounce carried out after a crash still give it (EINVAL:
  // longer than bounce_reason_bytes_max, or given with another action).
  core::result<std::uint64_t> act(message_id id, message_action action, std::int64_t now_seconds,
                                  std::string_view reason = {}) noexcept;
  // The reason of a message's journaled bounce ("" when none); kept until the message leaves
  // the index.
  std::string_view bounce_reason(message_id id) const noexcept;
  // --- reply rules' destination pauses (recovery.h: destination_pause; issue 16) ---
  // Journals a destination's suspension, throttle or lift (kind lifted); the last one of each
  // kind of a destination wins (a suspension and a throttle stand side by side), a lift ends
  // both, and every snapshot carries the ones in force. Synced with the next
  // flight (never lagged behind commits), but not waited for (no ticket): a lost record only
  // ends the pause at a crash, as before. Forgets the pauses
  // expired at now_ms. EINVAL: empty name or longer than destination_name_bytes_max;
  // ENOBUFS: journal buffer full.
  core::result<void> pause_destination(const destination_pause& value,
                                       std::int64_t now_ms) noexcept;
  // The pauses in force at now_ms (recovered, or set since), by name; forgets expired ones,
  // so the next snapshot drops them.
  std::vector<destination_pause> live_pauses(std::int64_t now_ms);
  // Every pause the store holds (recovered or set since), expired ones not yet forgotten too.
  std::vector<destination_pause> pauses() const;
  // Envelope and body location of a queued message (one blocking pread of its commit
  // record; locate() + parse_commit() do the same through the ring).
  core::result<stored_message> read(message_id id) const;
  // The commit record's place (ENOENT: not durable, or its segment is gone). The segment
  // stays while a recipient of the message is open.
  core::result<commit_location> locate(message_id id) const noexcept;
  // What read() returns, from the record's bytes as read from `where` (checked: EBADMSG).
  core::result<stored_message> parse_commit(message_id id, const commit_location& where,
                                            std::string_view record) const;
  // The read-only-usable fd of a segment (-1 when unknown): for splice/sendfile of body_slices
  // and for reading a commit record through the ring.
  int segment_fd(std::uint32_t segment) const noexcept;
  // Every durable message, in no particular order.
  template <typename Visit>
  void for_each_message(Visit&& visit) const {
    for (const auto& entry : _index) {
      if (entry.status != message_status::committing) visit(entry);
    }
  }

  // --- the embedder's loop ---
  void flush() noexcept;  // end of loop iteration: write what accumulated
  bool next_operation(operation& out) noexcept;
  void complete(std::uint64_t token, std::int64_t result) noexcept;
  bool next_event(event& out) noexcept;
  bool idle() const noexcept;  // nothing buffered, in flight or waiting to be performed
  store_stats stats() const noexcept;  // walks the index (queued count): not per message
  // The running counters only (queued_messages and buffered_bytes left 0): cheap, any time.
  const store_stats& counters() const noexcept { return _stats; }
  // Bytes in the open and in-flight batches; append() pushes back past buffered_bytes_max.
  std::uint64_t buffered_bytes() const noexcept { return _buffered_bytes; }
  // Whether append()/append_raw() of up to `bytes` wire bytes now takes all of them, or fails
  // at once because segment files cannot be created: never a partial take for want of a
  // segment that is still being created (the embedder holds its input until then).
  bool can_append(std::uint64_t bytes) const noexcept;
  const store_config& config() const noexcept { return _config; }

 private:
  enum class file_role : std::uint8_t { creating, spare, current, sealed, removing };
  struct file_slot;
  struct pending_message;
  struct extent;
  struct segment_batch;
  struct journal_batch;
  struct flight;
  struct void_mark {
    std::uint32_t segment;
    std::uint64_t valid_end;
    std::uint64_t batch;  // 0: not yet placed in a batch
  };

  core::result<stored_message> decode_stored(message_id id, std::string_view payload) const;
  // reception helpers (store.cc)
  pending_message* lookup(message_handle handle) noexcept;
  message_entry* find_queued(message_id id) noexcept;  // nullptr unless queued
  int ensure_room(std::uint64_t record_bytes, bool splittable) noexcept;
  void touch(pending_message& message, std::uint32_t segment) noexcept;
  std::size_t append_wire(pending_message& message, std::string_view wire) noexcept;
  void close_open_record() noexcept;
  char* put_header() noexcept;
  void put_bytes(std::string_view bytes) noexcept;
  char* take_block() noexcept;
  void place_voids() noexcept;
  body_range place_prefix(message_id id, std::string_view bytes) noexcept;
  void release_segments(std::uint32_t first, std::uint64_t mask) noexcept;
  void forget_pending(pending_message& message) noexcept;
  // files (store_files.cc)
  void request_segment() noexcept;
  void request_journal() noexcept;
  void request_create(std::uint32_t id, bool journal) noexcept;
  void request_remove(file_slot& file) noexcept;
  void on_create_done(std::uint32_t id, bool journal, std::int64_t result) noexcept;
  void on_remove_done(std::uint32_t id, bool journal, std::int64_t result) noexcept;
  void maybe_remove_segment(file_slot& segment) noexcept;
  void encode_snapshot(std::string& out, std::uint64_t salt, std::uint64_t offset) const;
  void encode_flag_actions(std::string& out, message_id id, std::uint8_t flags,
                           std::uint64_t salt, std::uint64_t offset) const;
  void encode_journal_items(std::string& out, std::uint64_t salt, std::uint64_t offset) const;
  void encode_reason(std::string& out, message_id id, std::uint64_t salt,
                     std::uint64_t offset) const;
  void encode_pause(std::string& out, const destination_pause& value, std::uint64_t salt,
                    std::uint64_t offset) const;
  void forget_expired_pauses(std::int64_t now_ms) noexcept;
  void remove_unneeded_files() noexcept;
  std::uint64_t placeable_bytes() const noexcept;
  std::uint64_t salt_for(std::uint32_t file_id, bool journal) const noexcept;
  bool journal_wants_compaction() const noexcept;
  bool journal_has_room(std::uint64_t record_bytes) const noexcept;
  // flushing (store_flush.cc)
  bool can_submit() const noexcept;
  void submit() noexcept;
  void submit_segment_part(bool flush_requested) noexcept;
  bool submit_journal_part() noexcept;
  void start_syncs() noexcept;
  void on_flight_done() noexcept;
  void finish_segment_part() noexcept;
  void finish_journal_part() noexcept;
  void fail_segments(int error) noexcept;
  void recycle(segment_batch& batch) noexcept;
  void push_operation(const operation& op) noexcept;
  void push_event(event_kind kind, std::uint64_t ticket, message_id id, int error) noexcept;

  store_config _config;
  message_id_generator _ids;
  // Segments and journals count their ids separately, and a failed creation is retried with
  // the same id: consecutive segments then have consecutive ids, which a message's segment
  // mask (64 segments from its first) relies on, even across journal compactions or a full disk.
  std::uint32_t _next_segment_id;
  std::uint32_t _next_journal_id;
  std::uint32_t _retry_segment_id = 0;  // 0: none
  std::uint32_t _retry_journal_id = 0;
  std::uint64_t _last_snapshot_bytes = 0;  // compaction waits for the journal to double it
  std::uint32_t _flights_since_journal = 0;
  std::map<std::uint32_t, file_slot> _segments;
  std::map<std::uint32_t, file_slot> _journals;
  file_slot* _current = nullptr;       // segment receiving appends
  file_slot* _spare = nullptr;         // created, ready to become current
  file_slot* _journal = nullptr;       // journal receiving the next journal write
  file_slot* _journal_spare = nullptr;  // fresh journal for the next snapshot
  bool _creating_segment = false;
  bool _creating_journal = false;
  int _create_error = 0;               // last segment creation failure, until one succeeds
  int _journal_create_error = 0;
  bool _snapshot_needed = true;        // the next journal write starts a fresh journal
  message_index _index;
  // The operator's reasons of journaled bounces, by message (few: an operator's actions).
  std::unordered_map<message_id, std::string> _bounce_reasons;
  // Reply rules' pauses by destination and kind (few: a suspension and a throttle per
  // destination a rule fired for; one of each kind, kept side by side).
  std::map<std::pair<std::string, pause_kind>, destination_pause> _pauses;
  std::vector<pending_message> _pending;
  std::vector<std::uint32_t> _pending_free;
  std::vector<void_mark> _voids;
  std::unique_ptr<segment_batch> _open;
  std::unique_ptr<journal_batch> _journal_open;
  std::unique_ptr<flight> _flight;
  bool _flush_requested = false;
  std::uint64_t _batch_seq = 1;        // seq of the open segment batch
  // Segment bytes written but not yet covered by a successful datasync: a batch that fills
  // up without any commit in it is written at once (memory back) but synced only with the
  // next batch that carries tickets, so a large message costs one sync, not one per batch.
  std::uint64_t _unsynced_since = 0;   // seq of the oldest unsynced flight, 0: none
  std::vector<std::pair<std::uint32_t, std::uint64_t>> _unsynced_starts;  // segment, offset
  std::vector<std::unique_ptr<char[]>> _blocks;
  std::vector<char*> _free_blocks;
  char* _block = nullptr;              // block being filled, owned by _open
  std::uint32_t _block_used = 0;
  std::uint64_t _buffered_bytes = 0;   // bytes in open + in-flight segment batches
  struct open_record;  // the data record still growing at the end of the open batch
  std::unique_ptr<open_record> _record;
  std::string _scratch;
  std::uint64_t _next_ticket = 1;
  std::deque<operation> _operations;
  std::deque<event> _events;
  store_stats _stats;
};

// Decoding of a commit record payload (for drivers that read it through the ring).
struct commit_view {
  std::uint64_t body_bytes = 0;
  std::vector<body_range> ranges;
  std::string_view envelope_bytes;
};
core::result<commit_view> decode_commit(std::string_view payload);
// The same into a view the caller reuses (recovery: no allocation per commit).
core::result<void> decode_commit(std::string_view payload, commit_view& view);

}  // namespace ringmta::spool
