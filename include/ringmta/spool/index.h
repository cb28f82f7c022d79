// The in-memory index of one shard's spooled messages: everything the spool keeps per message.
//
// Issue 15 (memory per queued message): a message costs its 48-byte `message_entry` in a dense
// array of fixed chunks plus one 4-byte slot of an open-addressing table at a load between 3/8
// and 3/4 while it grows (5-11 bytes; down to 1/16 while a backlog drains, then halved):
// ~53-59 bytes for a message of one recipient (61-67 with the 56-byte entry before session 10),
// whose state is held in the entry; a message of more recipients adds one allocation of 16
// bytes per recipient. (The std::unordered_map before: a 96-byte node, a 16-byte vector
// allocation, ~12 bytes of bucket.)
// The envelope, body ranges, body size and arrival time stay on disk (one read of the commit
// record brings them back: store::read).
//
// Invariants: ids are unique in an index; entries never move when the index grows (the chunks
// stay where they are, only the slot table is rebuilt); erase() moves the last entry into the
// hole, so a pointer to an entry is valid until the next erase. Never throws except for
// allocation failure; at most message_index::entries_max entries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "ringmta/core/chunked_slab.h"
#include "ringmta/core/linear_probe.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/message_id.h"

namespace ringmta::spool {

enum class message_status : std::uint8_t {
  committing,  // commit record written to the open batch, not yet durable: invisible
  queued,      // durable, at least one recipient not final
  final,       // every recipient final; kept until its commit segment is removed
};

// Where a piece of the body lives: a data record's payload in a segment.
struct body_range {
  std::uint32_t segment = 0;
  std::uint32_t length = 0;
  std::uint64_t offset = 0;
  bool operator==(const body_range&) const = default;
};

// Operator actions on a whole message (store::act), journaled as action records. A message
// carries the result as flags: held (never routed for delivery until released), deleted
// (every recipient not yet final becomes `deleted` at recovery), bounce (recovery routes its
// open recipients to be bounced by the operator).
enum class message_action : std::uint8_t { hold = 1, release = 2, remove = 3, bounce = 4 };
enum message_flag : std::uint8_t {
  message_flag_held = 1,
  message_flag_deleted = 2,
  message_flag_bounce = 4,
};
// The flags after `action`: a delete or a bounce ends a hold, nothing follows a delete.
std::uint8_t apply_action(std::uint8_t flags, message_action action) noexcept;

// Walks a container by position with its operator[] (which gives `Reference`: a value for
// recipient_list, a reference for message_entries).
template <typename Container, typename Reference>
class indexed_iterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = std::remove_cvref_t<Reference>;
  using difference_type = std::ptrdiff_t;
  using reference = Reference;
  indexed_iterator() noexcept = default;
  indexed_iterator(Container* items, std::size_t at) noexcept : _items(items), _at(at) {}
  Reference operator*() const noexcept { return (*_items)[_at]; }
  auto* operator->() const noexcept
    requires std::is_reference_v<Reference>
  {
    return &(*_items)[_at];
  }
  indexed_iterator& operator++() noexcept {
    ++_at;
    return *this;
  }
  indexed_iterator operator++(int) noexcept {
    indexed_iterator before = *this;
    ++_at;
    return before;
  }
  bool operator==(const indexed_iterator& other) const noexcept { return _at == other._at; }

 private:
  Container* _items = nullptr;
  std::size_t _at = 0;
};

// The delivery state of a message's recipients in 16 bytes: one recipient's state inline (the
// common case: no allocation), more in one array of their own. Reads give values (the inline
// state is not stored as a recipient_status object); writes go through set().
class recipient_list {
 public:
  using iterator = indexed_iterator<const recipient_list, recipient_status>;

  recipient_list() noexcept = default;
  explicit recipient_list(std::size_t count) { assign(count); }
  recipient_list(const recipient_list& other);
  recipient_list(recipient_list&& other) noexcept;
  recipient_list& operator=(const recipient_list& other);
  recipient_list& operator=(recipient_list&& other) noexcept;
  ~recipient_list() { release(); }

  // `count` recipients (at most envelope_recipients_max), each in the initial state.
  void assign(std::size_t count);
  std::size_t size() const noexcept { return _count; }
  bool empty() const noexcept { return _count == 0; }
  recipient_status operator[](std::size_t i) const noexcept;
  recipient_status at(std::size_t i) const;  // asserts i < size()
  void set(std::size_t i, const recipient_status& status) noexcept;
  iterator begin() const noexcept { return iterator(this, 0); }
  iterator end() const noexcept { return iterator(this, _count); }

 private:
  bool inline_one() const noexcept { return _count == 1; }
  void release() noexcept;

  // _count == 1: the one state is next_attempt_seconds, _attempts, _state; more: _many.
  union {
    std::int64_t _next_attempt_seconds = 0;
    recipient_status* _many;
  };
  std::uint32_t _attempts = 0;
  recipient_state _state = recipient_state::queued;
  // (one byte of padding)
  std::uint16_t _count = 0;
};
static_assert(sizeof(recipient_list) == 16);
static_assert(envelope_recipients_max <= UINT16_MAX);

// The commit record's offset in its segment fits 34 bits: spool.segment_size is at most 16 GiB
// (config/settings.cc), and the store asserts its segment size against this at start.
inline constexpr std::uint64_t commit_offset_limit = std::uint64_t{1} << 34;
// A message's segments span fewer than 64 (segment_mask; recovery drops a message whose data
// lies farther back, store.cc never places one so).
inline constexpr std::uint32_t segment_span_max = 64;

// 48 bytes (was 56; docs/notes.md "Bytes per queued message, session 10"): the commit offset,
// the first segment (as its distance back from the commit's), the status and the flags share
// one word. Bit-fields cannot bind to a reference: copy one before handing it to a template
// that takes `T&&` or `const T&` (nlohmann::json, EXPECT_EQ, emplace_back).
struct message_entry {
  message_id id = 0;
  std::uint64_t segment_mask = 0;   // segments touched: bit i = first_segment() + i
  std::uint64_t commit_offset : 34 = 0;  // of the commit record's header
  std::uint64_t first_segment_back : 6 = 0;  // commit_segment - first_segment()
  message_status status : 2 = message_status::committing;
  std::uint8_t flags : 3 = 0;  // message_flag bits
  std::uint32_t commit_segment = 0;
  std::uint32_t commit_bytes = 0;   // header + payload
  recipient_list recipients;

  std::uint32_t first_segment() const noexcept {
    return commit_segment - static_cast<std::uint32_t>(first_segment_back);
  }
  // After commit_segment: `first` at most segment_span_max - 1 segments before it (asserted).
  void set_first_segment(std::uint32_t first) noexcept;
};
static_assert(sizeof(message_entry) == 48, "bytes per queued message: the comment above");
static_assert((message_flag_held | message_flag_deleted | message_flag_bounce) < 8,
              "flags are 3 bits");

// Entries in chunks of a fixed size (core::chunked_array): growing never moves (nor copies) an
// entry, and memory is within one chunk of what the entries need. Recovery builds one; the
// store's index adopts it. Dense, unlike the scheduler's and the relay's slabs (no free list):
// the index erases by moving the last entry into the hole, so that it can be walked and rebuilt
// by position and a slot holds a 27-bit position. Popping frees the entry's recipient array at
// once (not when the chunk goes) and keeps one spare chunk past the last used one, so that an
// index at a chunk boundary does not allocate and free a chunk on every insert and erase.
class message_entries {
 public:
  static constexpr unsigned chunk_bits = 10;  // 1,024 entries (48 KiB) a chunk
  static constexpr std::size_t chunk_entries = std::size_t{1} << chunk_bits;

  std::size_t size() const noexcept { return _entries.size(); }
  bool empty() const noexcept { return _entries.size() == 0; }
  message_entry& operator[](std::size_t i) noexcept { return _entries[i]; }
  const message_entry& operator[](std::size_t i) const noexcept { return _entries[i]; }
  message_entry& back() noexcept { return (*this)[size() - 1]; }
  message_entry& push_back(message_entry entry);
  void pop_back() noexcept;
  void truncate(std::size_t size) noexcept;  // keeps the first `size` entries
  std::size_t bytes() const noexcept { return _entries.bytes(); }  // not the recipient arrays

  using iterator = indexed_iterator<message_entries, message_entry&>;
  using const_iterator = indexed_iterator<const message_entries, const message_entry&>;
  iterator begin() noexcept { return iterator(this, 0); }
  iterator end() noexcept { return iterator(this, size()); }
  const_iterator begin() const noexcept { return const_iterator(this, 0); }
  const_iterator end() const noexcept { return const_iterator(this, size()); }

 private:
  core::chunked_array<message_entry, chunk_bits> _entries;
};

// Id → entry: a table of 4-byte slots, linear probing, deletion by backward shift (no
// tombstones). A slot holds the entry's position + 1 in its low bits (0: empty) and 5 bits of
// the id's hash above, so a probe reads an entry only when those bits match.
//
// Ids are not spread in their low bits: seconds | shard | sequence (message_id.h), so at a few
// messages a second most ids end in sequence 0. The slot comes from the top bits of a mixed
// 64-bit hash (splitmix64's finalizer) instead; tests/unit/spool/index_test.cc checks the
// probe lengths on such ids.
//
// Growth (past 3/4 full) frees the slot table and rebuilds it twice as large from the entries:
// no old and new table side by side, and entries never move; at 5,000,000 entries the slot
// table is 32 MiB, built in one pass over the entries. Below 1/16 full it is rebuilt half as
// large (when that allocation fails, it stays), and trailing chunks are freed as the entries
// shrink: a drained backlog gives its memory back.
//
// The slots (core::tagged_slots: position and tag, the probe, the backward shift) are
// core/linear_probe.h's, shared with the relay home's id_index (src/server/relay_tables.h),
// which rebuilds them from its slab instead of from dense entries. At 4 bytes a slot a loose
// load (3/8-3/4) keeps probes short for ~2 bytes a message.
class message_index {
 public:
  static constexpr unsigned position_bits = core::tagged_slots::position_bits;
  static constexpr std::size_t entries_max = core::tagged_slots::position_limit;

  message_index() noexcept = default;
  // Adopts recovered entries (ascending ids, as recovery gives them; asserted).
  explicit message_index(message_entries entries);
  message_index(message_index&&) noexcept = default;
  message_index& operator=(message_index&&) noexcept = default;

  std::size_t size() const noexcept { return _entries.size(); }
  bool full() const noexcept { return _entries.size() >= entries_max; }
  message_entry* find(message_id id) noexcept;
  const message_entry* find(message_id id) const noexcept;
  // `entry.id` must not be in the index, and !full(). Moves no other entry.
  message_entry& insert(message_entry entry);
  // Whether `id` was there. The last entry moves into its place.
  bool erase(message_id id) noexcept {
    return erase_if(id, [](const message_entry&) { return true; });
  }
  // Erases `id` when `pred(entry)` holds, with one probe for it: a caller that reads the
  // entry before erasing it asks here, not find() then erase() (two probes for it).
  template <class Pred>
  bool erase_if(message_id id, Pred&& pred) noexcept {
    const std::size_t slot = slot_of(id);
    if (slot >= slot_count() || !pred(std::as_const(_entries[position_at(slot)]))) return false;
    erase_slot(slot);
    return true;
  }
  // Memory held by the chunks and the slot table (recipient arrays not counted).
  std::size_t bytes() const noexcept;
  std::size_t slot_count() const noexcept { return _slots.size(); }
  // The longest probe sequence of any entry (slots examined to find it): for tests.
  std::size_t probe_length_max() const noexcept;

  // Every entry, dense (positions 0..size-1); in insertion order until erasures move some.
  message_entries::iterator begin() noexcept { return _entries.begin(); }
  message_entries::iterator end() noexcept { return _entries.end(); }
  message_entries::const_iterator begin() const noexcept { return _entries.begin(); }
  message_entries::const_iterator end() const noexcept { return _entries.end(); }

 private:
  static constexpr std::size_t slots_min = 16;

  // The slot holding `id`, or slot_count() when absent.
  std::size_t slot_of(message_id id) const noexcept;
  std::uint32_t position_at(std::size_t slot) const noexcept { return _slots.position_at(slot); }
  std::uint64_t hash_at(std::uint32_t position) const noexcept;
  void rebuild(std::size_t slots);
  void place_all() noexcept;
  void erase_slot(std::size_t slot) noexcept;  // the entry of `slot` goes

  message_entries _entries;
  core::tagged_slots _slots;  // a power of two long; none before the first insert
};

}  // namespace ringmta::spool
