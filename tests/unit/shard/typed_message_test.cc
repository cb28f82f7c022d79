// Typed cross-shard messages on real rings: an owned object moves to its handler on the target
// shard (and is freed there), a context reaches the handler, small values are copied, a full
// queue leaves the object with the sender, and home_ptr refuses to be followed off its shard.
#include "ringmta/shard/typed_message.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "ringmta/core/clock.h"

namespace ringmta::shard {
namespace {

bool finish(runtime& rt, const std::function<bool()>& done) {
  const std::uint64_t deadline = core::monotonic_ns() + 10'000'000'000ull;
  while (!done() && core::monotonic_ns() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const bool ok = done();
  rt.request_stop();
  rt.join();
  return ok;
}

runtime_options small_options(unsigned shards, std::uint32_t queue_capacity = 1024) {
  runtime_options options;
  options.shard_count = shards;
  options.ring.sq_entries = 64;
  options.ring.fixed_file_count = 16;
  options.queue_capacity = queue_capacity;
  return options;
}

// Records the shard it was destroyed on.
std::atomic<int> freed_on{-1};
std::atomic<int> freed_count{0};
struct parcel {
  std::string text;
  ~parcel() {
    const shard* here = shard::current();
    freed_on = here != nullptr ? static_cast<int>(here->id()) : -2;
    ++freed_count;
  }
};

std::atomic<int> received_on{-1};
std::string received_text;  // written by the handler before received_on is set
void on_parcel(shard& target, std::unique_ptr<parcel> p) noexcept {
  received_text = p->text;
  received_on = static_cast<int>(target.id());
}

TEST(typed_message, owned_object_moves_to_its_handler_and_is_freed_on_the_target) {
  runtime rt(small_options(2));
  received_on = -1;
  freed_on = -1;
  freed_count = 0;
  std::atomic<bool> sent{false};
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  if (s.id() != 0) return {};
                  auto p = std::make_unique<parcel>();
                  p->text = "hello";
                  sent = try_post<&on_parcel>(s, 1, p);
                  EXPECT_EQ(p, nullptr);  // the message owns it now
                  return {};
                }).ok());
  EXPECT_TRUE(finish(rt, [] { return freed_count.load() == 1; }));
  EXPECT_TRUE(sent.load());
  EXPECT_EQ(received_on.load(), 1);
  EXPECT_EQ(received_text, "hello");
  EXPECT_EQ(freed_on.load(), 1);  // by the handler, on the target
}

struct registry {
  std::atomic<int> calls[2] = {};
};
void on_parcel_with(mesh& target, registry& r, std::unique_ptr<parcel> p) noexcept {
  if (p->text == "ctx") ++r.calls[target.id()];
}

TEST(typed_message, context_reaches_the_handler_by_reference) {
  runtime rt(small_options(2));
  registry shared;
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  if (s.id() != 1) return {};
                  auto p = std::make_unique<parcel>();
                  p->text = "ctx";
                  EXPECT_TRUE(s.try_send(0, make_parcel<&on_parcel_with>(std::move(p), shared)));
                  return {};
                }).ok());
  EXPECT_TRUE(finish(rt, [&] { return shared.calls[0].load() == 1; }));
  EXPECT_EQ(shared.calls[1].load(), 0);
}

struct pair_value {
  std::uint32_t small;
  std::uint64_t large;
};
std::atomic<std::uint64_t> value_sum{0};
void on_value(shard&, pair_value v) noexcept { value_sum = v.small + v.large; }

TEST(typed_message, small_values_are_copied_into_the_message) {
  runtime rt(small_options(2));
  value_sum = 0;
  ASSERT_TRUE(rt.start().ok());
  ASSERT_TRUE(post_value<&on_value>(rt, 1, pair_value{7, 0x100000000ull}));
  EXPECT_TRUE(finish(rt, [] { return value_sum.load() == 0x100000007ull; }));
}

std::atomic<int> counted{0};
void on_counted(shard&, std::unique_ptr<parcel>) noexcept { ++counted; }

TEST(typed_message, a_full_queue_leaves_the_object_with_the_sender) {
  runtime rt(small_options(2, 2));  // two messages per shard pair
  counted = 0;
  std::atomic<int> kept{0};
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  if (s.id() != 0) return {};
                  // Loops have not started: nothing drains shard 1's queue yet.
                  for (int i = 0; i < 3; ++i) {
                    auto p = std::make_unique<parcel>();
                    p->text = std::to_string(i);
                    if (!try_post<&on_counted>(s, 1, p)) {
                      EXPECT_NE(p, nullptr);
                      EXPECT_EQ(p->text, "2");  // the third, intact
                      ++kept;
                    }
                  }
                  return {};
                }).ok());
  EXPECT_TRUE(finish(rt, [] { return counted.load() == 2; }));
  EXPECT_EQ(kept.load(), 1);
}

std::atomic<int> home_checks{0};
void on_home_check(shard& target, home_ptr<int> p) noexcept {
  if (p.at_home() == (target.id() == p.home())) ++home_checks;
  if (p.at_home() && *p == 42) ++home_checks;
}

TEST(home_ptr, is_followed_only_on_its_home_shard) {
  runtime rt(small_options(2));
  home_checks = 0;
  int value = 42;
  ASSERT_TRUE(rt.start().ok());
  const home_ptr<int> p(&value, 1);
  EXPECT_FALSE(p.at_home());  // the test thread is no shard
  ASSERT_TRUE(post_value<&on_home_check>(rt, 0, p));  // away: checked, not followed
  ASSERT_TRUE(post_value<&on_home_check>(rt, 1, p));  // home: followed
  EXPECT_TRUE(finish(rt, [] { return home_checks.load() == 3; }));
}

TEST(home_ptr, following_it_away_from_home_is_a_programmer_error) {
  int value = 1;
  const home_ptr<int> p(&value, 0);
  EXPECT_DEATH((void)*p, "at_home");
}

}  // namespace
}  // namespace ringmta::shard
