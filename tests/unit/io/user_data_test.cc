// user_data packing and slot_table's stale-generation detection.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>

#include "ringmta/io/slot_table.h"
#include "ringmta/io/user_data.h"

namespace ringmta::io {
namespace {

TEST(user_data, pack_and_unpack_are_inverse) {
  const op_tag cases[] = {{1, 0, 0},
                          {255, generation_mask, 0xffffffffu},
                          {17, 0x123456, 42},
                          {op_kind_first_free, 1, 0x80000000u}};
  for (const op_tag& tag : cases) {
    const std::uint64_t packed = pack_user_data(tag);
    const op_tag back = unpack_user_data(packed);
    EXPECT_EQ(back.kind, tag.kind);
    EXPECT_EQ(back.generation, tag.generation);
    EXPECT_EQ(back.slot, tag.slot);
    EXPECT_EQ(kind_of(packed), tag.kind);
  }
  // The generation keeps 24 bits and never spills into the kind.
  const op_tag wrapped = unpack_user_data(pack_user_data(3, 0x1000005u, 9));
  EXPECT_EQ(wrapped.kind, 3);
  EXPECT_EQ(wrapped.generation, 5u);
  static_assert(pack_user_data(0xab, 0xcdef01, 0x23456789) == 0xabcdef0123456789ull);
}

TEST(user_data, completion_flag_helpers) {
  completion c{pack_user_data(20, 7, 3), 100, cqe_flag_buffer | cqe_flag_more | (513u << 16)};
  EXPECT_TRUE(c.has_buffer());
  EXPECT_TRUE(c.more());
  EXPECT_EQ(c.buffer_id(), 513);
  EXPECT_FALSE(c.notification());
  EXPECT_FALSE(c.failed());
  EXPECT_EQ(c.kind(), 20);
  EXPECT_EQ(c.tag().slot, 3u);
  completion failed{0, -104, cqe_flag_notification};
  EXPECT_TRUE(failed.failed());
  EXPECT_EQ(failed.error(), 104);
  EXPECT_TRUE(failed.notification());
}

TEST(slot_table, stale_completion_is_detected_after_reuse) {
  slot_table<int> table(2);
  auto first = table.acquire();
  ASSERT_TRUE(first.has_value());
  *table.get(first->slot, first->generation) = 11;
  const std::uint64_t old_user_data = table.user_data(30, *first);
  table.release(first->slot);
  auto second = table.acquire();  // the same slot, a new generation
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->slot, first->slot);
  EXPECT_NE(second->generation, first->generation);
  EXPECT_EQ(*table.get(second->slot, second->generation), 0);  // fresh value
  // A completion for the first owner arrives late: it must not reach the second owner.
  EXPECT_EQ(table.get(unpack_user_data(old_user_data)), nullptr);
  EXPECT_NE(table.get(unpack_user_data(table.user_data(30, *second))), nullptr);
}

TEST(slot_table, bounded_and_out_of_range_is_null) {
  slot_table<int> table(3);
  std::set<std::uint32_t> slots;
  for (int i = 0; i < 3; ++i) {
    auto h = table.acquire();
    ASSERT_TRUE(h.has_value());
    slots.insert(h->slot);
  }
  EXPECT_EQ(slots.size(), 3u);
  EXPECT_FALSE(table.acquire().has_value());
  EXPECT_EQ(table.live_count(), 3u);
  EXPECT_EQ(table.get(3, 0), nullptr);
  EXPECT_EQ(table.get(0xffffffffu, 0), nullptr);
  table.release(1);
  EXPECT_EQ(table.get(1, 0), nullptr);  // released: stale whatever the generation
  EXPECT_TRUE(table.acquire().has_value());
}

TEST(slot_table, generation_wraps_within_24_bits) {
  slot_table<int> table(1);
  for (std::uint32_t i = 0; i < (1u << 24) + 2; ++i) {
    auto h = table.acquire();
    ASSERT_TRUE(h.has_value());
    ASSERT_LE(h->generation, generation_mask);
    table.release(h->slot);
  }
  EXPECT_EQ(table.generation(0), 2u);
}

}  // namespace
}  // namespace ringmta::io
