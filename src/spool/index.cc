// spool::message_index and its parts (index.h): recipient lists, entry chunks, the id table.
#include "ringmta/spool/index.h"

#include <algorithm>
#include <new>

#include "ringmta/core/assert.h"
#include "ringmta/core/linear_probe.h"

namespace ringmta::spool {

// --- message_entry ---

void message_entry::set_first_segment(std::uint32_t first) noexcept {
  // Unsigned: a segment number that wrapped past 2^32 still counts back correctly.
  const std::uint32_t back = commit_segment - first;
  RINGMTA_ASSERT(back < segment_span_max);
  first_segment_back = back;
}

// --- recipient_list ---

recipient_list::recipient_list(const recipient_list& other) {
  *this = other;
}

recipient_list::recipient_list(recipient_list&& other) noexcept {
  *this = std::move(other);
}

recipient_list& recipient_list::operator=(const recipient_list& other) {
  if (this == &other) return *this;
  assign(other._count);
  for (std::size_t i = 0; i < _count; ++i) set(i, other[i]);
  return *this;
}

recipient_list& recipient_list::operator=(recipient_list&& other) noexcept {
  if (this == &other) return *this;
  release();
  if (other._count > 1) {
    _many = other._many;  // taken: `other` is left empty, not freeing it
  } else {
    _next_attempt_seconds = other._next_attempt_seconds;
  }
  _attempts = other._attempts;
  _state = other._state;
  _count = std::exchange(other._count, 0);
  return *this;
}

void recipient_list::release() noexcept {
  if (_count > 1) delete[] _many;
  _count = 0;
  _next_attempt_seconds = 0;
  _attempts = 0;
  _state = recipient_state::queued;
}

void recipient_list::assign(std::size_t count) {
  RINGMTA_ASSERT(count <= envelope_recipients_max);
  release();
  if (count > 1) _many = new recipient_status[count];
  _count = static_cast<std::uint16_t>(count);
}

recipient_status recipient_list::operator[](std::size_t i) const noexcept {
  if (inline_one()) return recipient_status{_state, _attempts, _next_attempt_seconds};
  return _many[i];
}

recipient_status recipient_list::at(std::size_t i) const {
  RINGMTA_ASSERT(i < _count);
  return (*this)[i];
}

void recipient_list::set(std::size_t i, const recipient_status& status) noexcept {
  RINGMTA_ASSERT(i < _count);
  if (!inline_one()) {
    _many[i] = status;
    return;
  }
  _state = status.state;
  _attempts = status.attempts;
  _next_attempt_seconds = status.next_attempt_seconds;
}

// --- message_entries ---

message_entry& message_entries::push_back(message_entry entry) {
  // A new chunk holds default-constructed entries (no allocation each); its pages are
  // touched as they fill.
  message_entry& slot = _entries[_entries.grow()];
  slot = std::move(entry);
  return slot;
}

void message_entries::pop_back() noexcept {
  RINGMTA_ASSERT(!empty());
  back().recipients.assign(0);  // frees a recipient array now, not with the chunk
  _entries.shrink(_entries.size() - 1, 1);
}

void message_entries::truncate(std::size_t size) noexcept {
  while (this->size() > size) pop_back();
  if (empty()) _entries.shrink(0, 0);
}

// --- message_index ---

namespace {

// Slots for `entries` at most 3/4 full (a power of two).
std::size_t slots_for(std::size_t entries, std::size_t minimum) noexcept {
  std::size_t slots = minimum;
  while (entries * 4 > slots * 3) slots *= 2;
  return slots;
}

}  // namespace

message_index::message_index(message_entries entries) : _entries(std::move(entries)) {
  RINGMTA_ASSERT(_entries.size() <= entries_max);
  if (_entries.empty()) return;
  // Ascending (recovery builds them so) is unique, checked in one sequential pass.
  for (std::size_t i = 1; i < _entries.size(); ++i)
    RINGMTA_ASSERT(_entries[i - 1].id < _entries[i].id);
  rebuild(slots_for(_entries.size(), slots_min));
}

std::uint64_t message_index::hash_at(std::uint32_t position) const noexcept {
  return core::mix64(_entries[position].id);
}

std::size_t message_index::slot_of(message_id id) const noexcept {
  return _slots.find(core::mix64(id),
                     [&](std::uint32_t position) { return _entries[position].id == id; });
}

message_entry* message_index::find(message_id id) noexcept {
  const std::size_t slot = slot_of(id);
  if (slot >= slot_count()) return nullptr;
  return &_entries[position_at(slot)];
}

const message_entry* message_index::find(message_id id) const noexcept {
  return const_cast<message_index*>(this)->find(id);
}

// Frees the table first, then builds the new one from the entries: the only transient is the
// new table itself.
void message_index::rebuild(std::size_t slots) {
  _slots.renew(slots);
  place_all();
}

void message_index::place_all() noexcept {
  for (std::size_t i = 0; i < _entries.size(); ++i)
    _slots.place(hash_at(static_cast<std::uint32_t>(i)), static_cast<std::uint32_t>(i));
}

message_entry& message_index::insert(message_entry entry) {
  RINGMTA_ASSERT(!full());
  if (slot_count() == 0 || (_entries.size() + 1) * 4 > slot_count() * 3) {
    const message_id id = entry.id;
    message_entry& placed = _entries.push_back(std::move(entry));
    rebuild(slot_count() == 0 ? slots_min : slot_count() * 2);  // places the new entry too
    RINGMTA_ASSERT(find(id) == &placed);  // else the id was there already
    return placed;
  }
  // One probe finds the free slot and checks on the way that the id is new.
  const message_id id = entry.id;
  message_entry& placed = _entries.push_back(std::move(entry));
  _slots.place(core::mix64(id), static_cast<std::uint32_t>(_entries.size() - 1),
               [&](std::uint32_t position) { return _entries[position].id != id; });
  return placed;
}

// One probe for the erased id (the caller's, which found it), one for the entry that moves
// into its place: that slot is known by its position, so the probe compares slots only.
void message_index::erase_slot(std::size_t slot) noexcept {
  const std::uint32_t position = position_at(slot);
  // The slot's home comes from its entry's id: the 4-byte slot holds no full hash.
  _slots.remove(slot, [&](std::uint32_t at) { return hash_at(at); });
  const std::uint32_t last = static_cast<std::uint32_t>(_entries.size() - 1);
  if (position != last) {
    // The last entry fills the hole; its slot learns the new position.
    _slots.move_position(_slots.find_position(hash_at(last), last), position);
    _entries[position] = std::move(_entries[last]);
  }
  _entries.pop_back();
  if (_entries.empty()) {
    _slots.clear();
  } else if (slot_count() > slots_min && _entries.size() * 16 < slot_count()) {
    // ≤ 1/8 full afterwards: far from growing again. Shrinking is optional (erase is noexcept
    // and runs from the store's completions): without memory for it the table stays as is.
    const std::size_t slots = slot_count() / 2;
    if (std::unique_ptr<std::uint32_t[]> smaller{new (std::nothrow) std::uint32_t[slots]()}) {
      _slots.adopt(std::move(smaller), slots);
      place_all();
    }
  }
}

std::size_t message_index::bytes() const noexcept { return _entries.bytes() + _slots.bytes(); }

std::size_t message_index::probe_length_max() const noexcept {
  return _slots.probe_length_max([&](std::uint32_t position) { return hash_at(position); });
}

}  // namespace ringmta::spool
