// core::chunked_array and core::chunked_slab (core/chunked_slab.h): addresses that survive
// growth, last-released-first reuse through either free stack, chunks given back when the
// objects shrink or drain, and the bytes reported being the bytes held.
#include "ringmta/core/chunked_slab.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace ringmta::core {
namespace {

// Counts the objects in existence: chunks are made and freed whole.
struct counted {
  static inline int alive = 0;
  std::uint64_t value = 7;  // a fresh object's
  std::uint32_t link = 0;
  counted() noexcept { ++alive; }
  counted(const counted& other) noexcept : value(other.value), link(other.link) { ++alive; }
  counted& operator=(const counted&) noexcept = default;
  ~counted() { --alive; }
};

constexpr unsigned bits = 3;  // 8 objects a chunk: many chunks in a small test
using array = chunked_array<counted, bits>;
using vector_slab = chunked_slab<counted, bits>;
using linked_slab = chunked_slab<counted, bits, &counted::link>;

TEST(chunked_array, addresses_stay_while_it_grows_by_chunks) {
  array objects;
  std::vector<counted*> addresses;
  for (std::uint32_t i = 0; i < 100; ++i) {
    EXPECT_EQ(objects.grow(), i);
    objects[i].value = i;
    addresses.push_back(&objects[i]);
  }
  EXPECT_EQ(objects.size(), 100u);
  EXPECT_EQ(objects.chunks(), 13u);  // ceil(100 / 8)
  EXPECT_EQ(counted::alive, 13 * 8);  // every object of a chunk is made with it
  for (std::uint32_t i = 0; i < 100; ++i) {
    EXPECT_EQ(&objects[i], addresses[i]) << i;
    EXPECT_EQ(objects[i].value, i);
  }
}

TEST(chunked_array, shrinking_frees_chunks_beyond_the_spare_ones) {
  {
    array objects;
    for (int i = 0; i < 40; ++i) objects.grow();  // 5 chunks
    objects.shrink(17, 1);                       // needs 3, one spare
    EXPECT_EQ(objects.size(), 17u);
    EXPECT_EQ(objects.chunks(), 4u);
    EXPECT_EQ(counted::alive, 4 * 8);
    objects[16].value = 99;
    objects.shrink(16, 0);
    EXPECT_EQ(objects.chunks(), 2u);
    EXPECT_EQ(objects.grow(), 16u);  // a fresh chunk: a fresh object
    EXPECT_EQ(objects[16].value, 7u);
    objects[15].value = 98;
    objects.shrink(15, 1);
    EXPECT_EQ(objects.grow(), 15u);  // a kept chunk: the object as left
    EXPECT_EQ(objects[15].value, 98u);
    objects.shrink(0, 0);
    EXPECT_EQ(objects.chunks(), 0u);
    EXPECT_EQ(objects.bytes(), 0u);  // the chunk table's slack too
    EXPECT_EQ(counted::alive, 0);
    objects.grow();  // usable again
    EXPECT_EQ(counted::alive, 8);
  }
  EXPECT_EQ(counted::alive, 0);  // the destructor frees the chunks
}

TEST(chunked_array, bytes_are_the_chunks_and_the_chunk_table) {
  array objects;
  EXPECT_EQ(objects.bytes(), 0u);
  for (int i = 0; i < 20; ++i) objects.grow();
  EXPECT_GE(objects.bytes(), 3 * array::chunk_bytes + 3 * sizeof(void*));
  EXPECT_LE(objects.bytes(), 3 * array::chunk_bytes + 4 * sizeof(void*));  // capacity 3 or 4
  array moved = std::move(objects);
  EXPECT_EQ(objects.size(), 0u);
  EXPECT_EQ(objects.bytes(), 0u);
  EXPECT_EQ(moved.size(), 20u);
}

// The slab's reuse order, whichever free stack: the last released first, then new slots.
template <class Slab>
void expect_last_released_first() {
  Slab slab;
  for (std::uint32_t i = 0; i < 20; ++i) EXPECT_EQ(slab.allocate(), i);
  slab.release(3);
  slab.release(17);
  slab.release(9);
  EXPECT_EQ(slab.live(), 17u);
  EXPECT_EQ(slab.used(), 20u);
  EXPECT_EQ(slab.allocate(), 9u);
  EXPECT_EQ(slab.allocate(), 17u);
  EXPECT_EQ(slab.allocate(), 3u);
  EXPECT_EQ(slab.allocate(), 20u);
  EXPECT_EQ(slab.live(), 21u);
}

TEST(chunked_slab, reuses_the_last_released_slot_first) {
  expect_last_released_first<vector_slab>();
  expect_last_released_first<linked_slab>();
}

TEST(chunked_slab, a_linked_free_stack_runs_through_the_objects) {
  linked_slab slab;
  for (int i = 0; i < 4; ++i) slab.allocate();
  slab.release(1);
  slab.release(2);
  EXPECT_EQ(slab[1].link, linked_slab::none);  // the bottom of the stack
  EXPECT_EQ(slab[2].link, 1u);
  EXPECT_EQ(slab.bytes(), linked_slab::chunk_objects * sizeof(counted) + sizeof(void*));
}

template <class Slab>
void expect_drained_slab_gives_chunks_back() {
  Slab slab;
  std::vector<counted*> addresses;
  for (std::uint32_t i = 0; i < 50; ++i) addresses.push_back(&slab[slab.allocate()]);
  for (std::uint32_t i = 0; i < 50; i += 2) slab.release(i);
  for (std::uint32_t i = 1; i < 50; i += 2) EXPECT_EQ(&slab[i], addresses[i]);
  const std::size_t full = slab.bytes();
  EXPECT_GE(full, 7 * Slab::chunk_objects * sizeof(counted));
  for (std::uint32_t i = 1; i < 50; i += 2) slab.release(i);
  EXPECT_EQ(slab.live(), 0u);
  slab.reset(1);
  EXPECT_EQ(slab.used(), 0u);
  EXPECT_EQ(counted::alive, static_cast<int>(Slab::chunk_objects));  // the kept chunk
  EXPECT_LE(slab.bytes(), Slab::chunk_objects * sizeof(counted) + sizeof(void*));
  EXPECT_EQ(slab.allocate(), 0u);  // from the start, not from a forgotten free slot
  EXPECT_EQ(&slab[0], addresses[0]);
  slab.release(0);
  slab.reset(0);
  EXPECT_EQ(slab.bytes(), 0u);
  EXPECT_EQ(counted::alive, 0);
}

TEST(chunked_slab, a_drained_slab_gives_its_chunks_back) {
  expect_drained_slab_gives_chunks_back<vector_slab>();
  expect_drained_slab_gives_chunks_back<linked_slab>();
}

}  // namespace
}  // namespace ringmta::core
