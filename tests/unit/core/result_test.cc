#include "ringmta/core/result.h"

#include <cerrno>
#include <string>

#include <gtest/gtest.h>

#include "ringmta/core/allocator.h"

namespace ringmta::core {
namespace {

result<int> parse_port(int raw) {
  if (raw <= 0 || raw > 65535) return fail(EINVAL);
  return raw;
}

TEST(result, carries_value_or_errno) {
  auto good = parse_port(25);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good.value(), 25);
  auto bad = parse_port(70000);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), EINVAL);
  EXPECT_STREQ(bad.error_text(), "Invalid argument");
}

TEST(result, void_result) {
  result<void> fine;
  EXPECT_TRUE(fine.ok());
  result<void> full = fail(ENOSPC);
  EXPECT_EQ(full.error(), ENOSPC);
}

TEST(result_death, reading_value_of_error_aborts) {
  EXPECT_DEATH({ (void)parse_port(0).value(); }, "assertion failed");
}

TEST(allocator, names_the_allocator_in_use) {
  const std::string name = allocator_name();
#if RINGMTA_WITH_MIMALLOC
  EXPECT_EQ(name.rfind("mimalloc ", 0), 0u) << name;
#else
  EXPECT_EQ(name, "libc malloc");
#endif
}

}  // namespace
}  // namespace ringmta::core
