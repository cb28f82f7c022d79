// shard::choose_pinning (the --pin-threads auto rule) and the kernel cpu-list parser.
#include "ringmta/shard/pinning.h"

#include <gtest/gtest.h>

namespace ringmta::shard {
namespace {

TEST(pinning, cpu_lists_count_ranges_and_single_cpus) {
  EXPECT_EQ(count_cpu_list("0"), 1u);
  EXPECT_EQ(count_cpu_list("0-3"), 4u);
  EXPECT_EQ(count_cpu_list("0-3,8,10-11"), 7u);
  EXPECT_EQ(count_cpu_list(""), 0u);  // /sys/devices/system/cpu/isolated with none isolated
  EXPECT_FALSE(count_cpu_list("3-1"));
  EXPECT_FALSE(count_cpu_list("a"));
  EXPECT_FALSE(count_cpu_list("1,,2"));
}

TEST(pinning, auto_pins_only_on_a_reserved_or_isolated_cpu_set) {
  // Every online CPU allowed: shared with whatever else runs here (a client, builds).
  EXPECT_FALSE(choose_pinning(std::nullopt, {2, 2, false}).pin);
  EXPECT_FALSE(choose_pinning(std::nullopt, {64, 64, false}).pin);
  // taskset / CPUAffinity= / a cpuset narrowed us: those CPUs were set aside for ringmta.
  EXPECT_TRUE(choose_pinning(std::nullopt, {4, 16, false}).pin);
  // isolcpus=: nothing else is scheduled there.
  EXPECT_TRUE(choose_pinning(std::nullopt, {2, 2, true}).pin);
  // The operator's word wins either way, and the reason says which rule chose.
  EXPECT_TRUE(choose_pinning(true, {2, 2, false}).pin);
  EXPECT_FALSE(choose_pinning(false, {4, 16, true}).pin);
  EXPECT_NE(choose_pinning(std::nullopt, {4, 16, false}).reason.find("reserved"),
            std::string::npos);
  EXPECT_NE(choose_pinning(false, {4, 16, false}).reason.find("--pin-threads false"),
            std::string::npos);
}

}  // namespace
}  // namespace ringmta::shard
