// Objects in fixed chunks that never move: the storage of every per-queued-message table
// (issue 15, docs/notes.md "Backlog at scale"): the spool index's entries, the scheduler's job
// records, the relay's queued messages.
//
// - `chunked_array<T, ChunkBits>`: positions 0..size()-1 in chunks of 2^ChunkBits objects.
//   Growing adds a chunk and never moves (nor copies) an object, so addresses are stable and
//   memory is within one chunk of what the objects need (a doubling vector held up to twice
//   that and copied it all at each growth); shrinking frees trailing chunks.
// - `chunked_slab<T, ChunkBits, Link>`: a chunked_array whose released slots are reused, the
//   last released first (callers' event orders depend on it: the scheduler breaks heap ties by
//   slot). The free stack runs through the free objects' `Link` member (a `std::uint32_t T::*`)
//   when T can spare one, or else lives in a vector of its own (4 bytes a free slot).
//
// Every object of a chunk is value-initialised with the chunk and destroyed with it; a position
// handed out again holds what its object held before (callers reset what they need: one keeps
// a generation there). Never blocks; allocates only to add a chunk, or a free-stack slot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "ringmta/core/assert.h"

namespace ringmta::core {

template <class T, unsigned ChunkBits>
class chunked_array {
 public:
  static_assert(ChunkBits > 0 && ChunkBits < 32);
  static constexpr std::size_t chunk_objects = std::size_t{1} << ChunkBits;
  static constexpr std::size_t chunk_bytes = chunk_objects * sizeof(T);

  chunked_array() noexcept = default;
  chunked_array(chunked_array&& other) noexcept
      : _chunks(std::move(other._chunks)), _size(std::exchange(other._size, 0)) {}
  chunked_array& operator=(chunked_array&& other) noexcept {
    _chunks = std::move(other._chunks);
    _size = std::exchange(other._size, 0);
    return *this;
  }

  std::uint32_t size() const noexcept { return _size; }
  std::size_t chunks() const noexcept { return _chunks.size(); }
  T& operator[](std::size_t i) noexcept {
    return _chunks[i >> ChunkBits][i & (chunk_objects - 1)];
  }
  const T& operator[](std::size_t i) const noexcept {
    return _chunks[i >> ChunkBits][i & (chunk_objects - 1)];
  }

  // One more position at the end (a chunk is added when the last one is full); its object is
  // a fresh T or what was left there before a shrink.
  std::uint32_t grow() {
    RINGMTA_ASSERT(_size < UINT32_MAX);
    // Only at a chunk's first position may the chunk be missing (tested first: cheaper).
    if ((_size & (chunk_objects - 1)) == 0 && (_size >> ChunkBits) == _chunks.size())
      _chunks.push_back(std::make_unique<T[]>(chunk_objects));
    return _size++;
  }
  // Keeps the first `size` positions and frees the chunks beyond those plus `spare_chunks`
  // (kept so that a count moving around a chunk boundary does not allocate and free a chunk
  // each time). At size 0 the chunk table's own slack is given back too.
  void shrink(std::uint32_t size, std::size_t spare_chunks) noexcept {
    RINGMTA_ASSERT(size <= _size);
    _size = size;
    const std::size_t needed = (std::size_t{size} + chunk_objects - 1) >> ChunkBits;
    while (_chunks.size() > needed + spare_chunks) _chunks.pop_back();
    if (size == 0) _chunks.shrink_to_fit();
  }
  // Memory held: the chunks and the chunk table.
  std::size_t bytes() const noexcept {
    return _chunks.size() * chunk_bytes + _chunks.capacity() * sizeof(_chunks[0]);
  }

 private:
  std::vector<std::unique_ptr<T[]>> _chunks;
  std::uint32_t _size = 0;
};

template <class T, unsigned ChunkBits, auto Link = nullptr>
class chunked_slab {
  static constexpr bool linked = !std::is_same_v<decltype(Link), std::nullptr_t>;
  static_assert(!linked || std::is_same_v<decltype(Link), std::uint32_t T::*>,
                "Link: a std::uint32_t member of T, or nullptr for a free vector");

 public:
  static constexpr std::uint32_t none = UINT32_MAX;  // the end of a linked free stack
  static constexpr std::size_t chunk_objects = chunked_array<T, ChunkBits>::chunk_objects;

  T& operator[](std::uint32_t slot) noexcept { return _objects[slot]; }
  const T& operator[](std::uint32_t slot) const noexcept { return _objects[slot]; }
  std::uint32_t used() const noexcept { return _objects.size(); }  // slots ever handed out
  std::uint32_t live() const noexcept { return _live; }

  // The slot released last, or a new one. Its object is as release() left it (or fresh).
  std::uint32_t allocate() {
    std::uint32_t slot;
    if constexpr (linked) {
      slot = _free_head;
      if (slot != none) _free_head = _objects[slot].*Link;
      else slot = _objects.grow();
    } else {
      if (_free.empty()) {
        slot = _objects.grow();
      } else {
        slot = _free.back();
        _free.pop_back();
      }
    }
    ++_live;
    return slot;
  }
  // `slot` (live) goes onto the free stack; a linked stack writes the slot's Link member.
  void release(std::uint32_t slot) noexcept(linked) {
    RINGMTA_ASSERT(slot < used() && _live > 0);
    if constexpr (linked) {
      _objects[slot].*Link = _free_head;
      _free_head = slot;
    } else {
      _free.push_back(slot);
    }
    --_live;
  }
  // Nothing live (a drained queue): forgets the free slots and frees the chunks but the first
  // `keep_chunks` (whose objects stay as released: a kept generation stays valid).
  void reset(std::size_t keep_chunks) noexcept {
    RINGMTA_ASSERT(_live == 0);
    if constexpr (linked) {
      _free_head = none;
    } else {
      _free.clear();
      _free.shrink_to_fit();
    }
    _objects.shrink(0, keep_chunks);
  }
  // Memory held: chunks, chunk table and free vector.
  std::size_t bytes() const noexcept {
    if constexpr (linked) return _objects.bytes();
    else return _objects.bytes() + _free.capacity() * sizeof(std::uint32_t);
  }

 private:
  struct no_free_vector {};
  chunked_array<T, ChunkBits> _objects;
  std::uint32_t _live = 0;
  std::uint32_t _free_head = none;  // linked: the last released slot
  [[no_unique_address]] std::conditional_t<linked, no_free_vector, std::vector<std::uint32_t>>
      _free;  // not linked: released slots, the last released at the back
};

}  // namespace ringmta::core
