// timer_wheel: ordering, cancel, re-arm, long timeouts, wrap of every level, next_tick().
#include "ringmta/core/timer_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

namespace ringmta::core {
namespace {

// A timer that records, in a shared log, its id and the wheel time at which it fired.
struct probe {
  explicit probe(int id_value, std::vector<std::pair<int, std::uint64_t>>* log_value,
                 timer_wheel* wheel_value)
      : id(id_value), log(log_value), wheel(wheel_value) {}
  timer_node node{&probe::expired};
  int id;
  std::vector<std::pair<int, std::uint64_t>>* log;
  timer_wheel* wheel;
  std::uint64_t rearm_delay = 0;  // when set, the callback re-arms itself once

  static void expired(timer_node& node) noexcept {
    auto* self = reinterpret_cast<probe*>(reinterpret_cast<char*>(&node) - offsetof(probe, node));
    self->log->emplace_back(self->id, self->wheel->now());
    if (self->rearm_delay != 0) {
      const std::uint64_t delay = self->rearm_delay;
      self->rearm_delay = 0;
      self->wheel->schedule_after(self->node, delay);
    }
  }
};

using fire_log = std::vector<std::pair<int, std::uint64_t>>;

// Advances `wheel` to `tick`: every timer that fired did so at its expected tick (0: not armed;
// cleared as they fire), and every one still expected is due later.
void advance_and_check(timer_wheel& wheel, std::uint64_t tick, fire_log& log,
                       std::vector<std::uint64_t>& expected) {
  log.clear();
  wheel.advance(tick);
  for (const auto& [id, at] : log) {
    EXPECT_EQ(at, expected[id]) << "timer " << id;
    expected[id] = 0;
  }
  for (std::size_t k = 0; k < expected.size(); ++k) {
    if (expected[k] != 0) {
      ASSERT_GT(expected[k], tick) << "timer " << k << " did not fire";
    }
  }
}

TEST(timer_wheel, fires_at_deadline_in_order) {
  timer_wheel wheel(1000);
  fire_log log;
  std::vector<std::unique_ptr<probe>> probes;
  const std::uint64_t delays[] = {70, 5, 63, 64, 1, 4096, 200, 4095, 65};
  for (std::size_t i = 0; i < std::size(delays); ++i) {
    probes.push_back(std::make_unique<probe>(static_cast<int>(i), &log, &wheel));
    wheel.schedule_after(probes.back()->node, delays[i]);
  }
  EXPECT_EQ(wheel.size(), std::size(delays));
  wheel.advance(1000 + 5000);
  ASSERT_EQ(log.size(), std::size(delays));
  for (std::size_t i = 0; i < log.size(); ++i) {
    EXPECT_EQ(log[i].second, 1000 + delays[log[i].first]) << "timer " << log[i].first;
    if (i > 0) {
      EXPECT_LE(log[i - 1].second, log[i].second);
    }
  }
  EXPECT_EQ(wheel.size(), 0u);
}

TEST(timer_wheel, never_fires_early_when_advanced_one_tick_at_a_time) {
  timer_wheel wheel(0);
  fire_log log;
  probe a(1, &log, &wheel), b(2, &log, &wheel);
  wheel.schedule_at(a.node, 130);
  wheel.schedule_at(b.node, 4100);
  for (std::uint64_t t = 1; t < 130; ++t) wheel.advance(t);
  EXPECT_TRUE(log.empty());
  wheel.advance(130);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0], std::make_pair(1, std::uint64_t{130}));
  for (std::uint64_t t = 131; t <= 4100; ++t) wheel.advance(t);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1], std::make_pair(2, std::uint64_t{4100}));
}

TEST(timer_wheel, cancel_and_rearm) {
  timer_wheel wheel(0);
  fire_log log;
  probe a(1, &log, &wheel), b(2, &log, &wheel), c(3, &log, &wheel);
  wheel.schedule_after(a.node, 10);
  wheel.schedule_after(b.node, 300);
  wheel.schedule_after(c.node, 20);
  wheel.cancel(a.node);
  EXPECT_FALSE(a.node.armed());
  wheel.cancel(a.node);  // cancelling twice is harmless
  wheel.schedule_after(b.node, 15);  // re-arm earlier: moves from level 1 to level 0
  EXPECT_EQ(wheel.size(), 2u);
  wheel.advance(1000);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0], std::make_pair(2, std::uint64_t{15}));
  EXPECT_EQ(log[1], std::make_pair(3, std::uint64_t{20}));
}

TEST(timer_wheel, callback_may_rearm_itself_and_deadline_in_past_fires_next_tick) {
  timer_wheel wheel(50);
  fire_log log;
  probe a(1, &log, &wheel);
  a.rearm_delay = 100;
  wheel.schedule_at(a.node, 10);  // in the past: fires at the next tick, 51
  EXPECT_EQ(a.node.deadline_tick(), 51u);
  wheel.advance(51);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(a.node.armed());
  EXPECT_EQ(wheel.advance(150), 0u);
  EXPECT_EQ(wheel.advance(151), 1u);
  EXPECT_EQ(log.back(), std::make_pair(1, std::uint64_t{151}));
}

TEST(timer_wheel, long_timeouts_beyond_range_are_parked_and_fire_on_time) {
  const std::uint64_t start = 7;
  timer_wheel wheel(start);
  fire_log log;
  probe a(1, &log, &wheel), b(2, &log, &wheel);
  const std::uint64_t far = start + timer_wheel::range_ticks * 2 + 12345;
  wheel.schedule_at(a.node, far);
  wheel.schedule_at(b.node, start + 64ull * 64 * 64 * 64 + 3);  // level 4
  wheel.advance(far - 1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].first, 2);
  EXPECT_EQ(log[0].second, start + 64ull * 64 * 64 * 64 + 3);
  wheel.advance(far);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1], std::make_pair(1, far));
}

TEST(timer_wheel, next_tick_is_a_lower_bound_and_exact_at_level_zero) {
  timer_wheel wheel(100);
  EXPECT_EQ(wheel.next_tick(), timer_wheel::no_timer);
  fire_log log;
  probe a(1, &log, &wheel), b(2, &log, &wheel);
  wheel.schedule_at(b.node, 100 + 5000);
  const std::uint64_t first = wheel.next_tick();
  EXPECT_GT(first, 100u);
  EXPECT_LE(first, 5100u);
  wheel.schedule_at(a.node, 130);
  EXPECT_EQ(wheel.next_tick(), 130u);
  // Driving the wheel only at next_tick() still fires everything on time (what the reactor does).
  std::size_t wakeups = 0;
  while (wheel.size() > 0 && wakeups < 1000) {
    wheel.advance(wheel.next_tick());
    ++wakeups;
  }
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0], std::make_pair(1, std::uint64_t{130}));
  EXPECT_EQ(log[1], std::make_pair(2, std::uint64_t{5100}));
  EXPECT_LT(wakeups, 200u);
}

// The timers of a randomized test: `count` probes on one wheel, each one's expected tick.
struct probe_set {
  probe_set(std::uint64_t start_tick, int count) : wheel(start_tick), expected(count, 0) {
    for (int i = 0; i < count; ++i) probes.push_back(std::make_unique<probe>(i, &log, &wheel));
  }
  ~probe_set() {
    for (auto& p : probes) wheel.cancel(p->node);
    EXPECT_EQ(wheel.size(), 0u);
  }
  timer_wheel wheel;
  fire_log log;
  std::vector<std::unique_ptr<probe>> probes;
  std::vector<std::uint64_t> expected;  // 0: not armed
};

// next_tick() is remembered between calls: every schedule, re-arm, cancel and advance in between
// must show in the next answer (a remembered tick that is too late sleeps past a deadline, one
// that is too early wakes the loop for nothing).
TEST(timer_wheel, next_tick_follows_schedules_and_cancels_between_queries) {
  timer_wheel wheel(1000);
  fire_log log;
  probe a(1, &log, &wheel), b(2, &log, &wheel);
  wheel.schedule_at(a.node, 6000);
  const std::uint64_t cascade = wheel.next_tick();  // a's level-2 slot
  EXPECT_GT(cascade, 1000u);
  EXPECT_LE(cascade, 6000u);
  wheel.schedule_at(b.node, 1010);
  EXPECT_EQ(wheel.next_tick(), 1010u);  // a new earlier slot lowers it
  wheel.cancel(b.node);
  EXPECT_EQ(wheel.next_tick(), cascade);  // the earliest slot emptied: back to a's
  wheel.schedule_at(b.node, 1010);
  wheel.schedule_at(b.node, 1500);  // re-armed later: its old slot is empty
  EXPECT_GT(wheel.next_tick(), 1010u);
  EXPECT_LE(wheel.next_tick(), 1500u);
  wheel.schedule_at(a.node, 1020);  // re-armed earlier
  EXPECT_EQ(wheel.next_tick(), 1020u);
  wheel.advance(1005);  // nothing due: the same deadline, seen from a new now
  EXPECT_EQ(wheel.next_tick(), 1020u);
  wheel.advance(1020);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0], std::make_pair(1, std::uint64_t{1020}));
  EXPECT_GT(wheel.next_tick(), 1020u);
  EXPECT_LE(wheel.next_tick(), 1500u);
  wheel.cancel(b.node);
  EXPECT_EQ(wheel.next_tick(), timer_wheel::no_timer);
}

// A loop that sleeps until next_tick(), asked after every change, fires every timer exactly at
// its deadline while timers come and go between its wakeups (what shard::run does).
TEST(timer_wheel, driven_only_at_next_tick_with_changes_between_wakeups) {
  std::mt19937_64 random(7);
  constexpr int count = 64;
  probe_set set(5000, count);
  auto& [wheel, log, probes, expected] = set;
  for (int step = 0; step < 20000; ++step) {
    const int i = static_cast<int>(random() % count);
    const std::uint64_t before = wheel.next_tick();
    switch (random() % 3) {
      case 0: {
        const std::uint64_t delay = 1 + random() % (random() % 4 == 0 ? 100000 : 200);
        const bool rearmed = probes[i]->node.armed();
        wheel.schedule_after(probes[i]->node, delay);
        expected[i] = wheel.now() + delay;
        EXPECT_LE(wheel.next_tick(), expected[i]);
        if (!rearmed && delay < timer_wheel::slots_per_level) {  // exact at level 0
          EXPECT_EQ(wheel.next_tick(), std::min(before, expected[i]));
        }
        break;
      }
      case 1:
        wheel.cancel(probes[i]->node);
        expected[i] = 0;
        EXPECT_GE(wheel.next_tick(), before);
        break;
      default: {
        const std::uint64_t wake = wheel.next_tick();
        if (wake == timer_wheel::no_timer) break;
        ASSERT_NO_FATAL_FAILURE(advance_and_check(wheel, wake, log, expected));
      }
    }
  }
}

// Random schedules, cancels and re-arms against a simple model, across wraps of the lower levels.
TEST(timer_wheel, random_operations_match_a_model) {
  std::mt19937_64 random(42);
  constexpr int count = 2000;
  probe_set set(123456, count);
  auto& [wheel, log, probes, expected] = set;
  std::uint64_t now = wheel.now();
  for (int step = 0; step < 20000; ++step) {
    const int i = static_cast<int>(random() % count);
    switch (random() % 4) {
      case 0:
      case 1: {
        const std::uint64_t delay = 1 + random() % (random() % 8 == 0 ? 300000 : 3000);
        wheel.schedule_after(probes[i]->node, delay);
        expected[i] = now + delay;
        break;
      }
      case 2:
        wheel.cancel(probes[i]->node);
        expected[i] = 0;
        break;
      default: {
        now += random() % 200;
        ASSERT_NO_FATAL_FAILURE(advance_and_check(wheel, now, log, expected));
      }
    }
  }
}

}  // namespace
}  // namespace ringmta::core

namespace ringmta::core {
namespace {

struct owner_with_timeout {
  int fired = 0;
  void on_timeout() noexcept { ++fired; }
  member_timer<owner_with_timeout, &owner_with_timeout::on_timeout> timer{*this};
};

TEST(member_timer, calls_its_owner_method_on_expiry) {
  timer_wheel wheel(100);
  owner_with_timeout a, b;
  wheel.schedule_after(a.timer, 5);
  wheel.schedule_after(b.timer, 10);
  wheel.advance(105);
  EXPECT_EQ(a.fired, 1);
  EXPECT_EQ(b.fired, 0);
  wheel.cancel(b.timer);
  wheel.advance(200);
  EXPECT_EQ(b.fired, 0);
}

}  // namespace
}  // namespace ringmta::core
