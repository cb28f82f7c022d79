// auth::failure_throttle (growing delays, lockout, decay) and auth::verifier (off-shard checks,
// bounded queue).
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "ringmta/auth/verifier.h"

namespace ringmta::auth {
namespace {

TEST(failure_throttle, delays_grow_then_lock_out_then_decay) {
  throttle_settings settings;
  settings.failures_max = 4;
  settings.lockout_ms = 1000;
  settings.delay_base_ms = 100;
  settings.delay_max_ms = 300;
  failure_throttle t(settings);
  EXPECT_FALSE(t.locked("192.0.2.1", "u", 0));
  EXPECT_EQ(t.record_failure("192.0.2.1", "u", 10), 100u);
  EXPECT_EQ(t.record_failure("192.0.2.1", "u", 20), 200u);
  EXPECT_EQ(t.record_failure("192.0.2.1", "v", 30), 300u);  // the address: third failure
  EXPECT_FALSE(t.locked("192.0.2.1", "w", 40));
  EXPECT_EQ(t.record_failure("192.0.2.1", "w", 40), 300u);  // capped
  EXPECT_TRUE(t.locked("192.0.2.1", "anyone", 50));         // the address is locked
  EXPECT_FALSE(t.locked("192.0.2.2", "w", 50));              // another address is not
  EXPECT_FALSE(t.locked("192.0.2.1", "anyone", 1041 + 10));  // lockout over
  // Per login, from many addresses: the login locks.
  for (int i = 0; i < 4; ++i) t.record_failure("198.51.100." + std::to_string(i), "target", 2000);
  EXPECT_TRUE(t.locked("203.0.113.9", "target", 2001));
  t.record_success("target");
  EXPECT_FALSE(t.locked("203.0.113.9", "target", 2002));
  // Old failures are forgotten after lockout_ms: the count starts over.
  EXPECT_EQ(t.record_failure("192.0.2.3", "x", 5000), 100u);
  EXPECT_EQ(t.record_failure("192.0.2.3", "x", 7000), 100u);
}

TEST(failure_throttle, a_full_table_forgets_the_oldest) {
  throttle_settings settings;
  settings.entries_max = 64;
  failure_throttle t(settings);
  for (int i = 0; i < 1000; ++i) t.record_failure("a" + std::to_string(i), "u", i);
  EXPECT_FALSE(t.locked("a0", "v", 1001));  // forgotten, not locked
}

struct collected {
  std::mutex mutex;
  std::condition_variable done;
  std::vector<verify_result> results;
};

TEST(verifier, checks_on_its_threads_and_refuses_beyond_the_queue) {
  collected out;
  const auto main_thread = std::this_thread::get_id();
  std::thread::id worker;
  verifier pool(1, 2, throttle_settings{}, [&](std::unique_ptr<verify_result>& r) {
    std::lock_guard lock(out.mutex);
    worker = std::this_thread::get_id();
    out.results.push_back(*r);
    out.done.notify_all();
    return true;
  });
  const auto table = credentials::from_text("u:" + make_hash("pw", "yescrypt") + "\n", "t");
  const auto request = [&](const char* password, std::uint32_t slot) {
    auto r = std::make_unique<verify_request>();
    r->user = "u";
    r->password = password;
    r->client = "192.0.2.1";
    r->table = table;
    r->reply_to = {0, slot, 7};
    return r;
  };
  EXPECT_FALSE(pool.submit(request("pw", 0)));  // not started
  // Before start() nothing runs: fill the queue, the third is refused (454 for the session).
  pool.start();
  ASSERT_TRUE(pool.submit(request("pw", 1)));
  ASSERT_TRUE(pool.submit(request("wrong", 2)));
  std::unique_lock lock(out.mutex);
  out.done.wait_for(lock, std::chrono::seconds(30), [&] { return out.results.size() == 2; });
  ASSERT_EQ(out.results.size(), 2u);
  EXPECT_NE(worker, main_thread);
  EXPECT_EQ(out.results[0].outcome, verify_outcome::success);
  EXPECT_EQ(out.results[0].reply_to.slot, 1u);
  EXPECT_EQ(out.results[1].outcome, verify_outcome::failure);
  EXPECT_EQ(out.results[1].delay_ms, 500u);
  EXPECT_EQ(out.results[1].reply_to.generation, 7u);
  lock.unlock();
  pool.stop();
  EXPECT_FALSE(pool.submit(request("pw", 3)));
  EXPECT_EQ(pool.counters().succeeded.load(), 1u);
  EXPECT_EQ(pool.counters().failed.load(), 1u);
}

TEST(verifier, a_full_queue_refuses) {
  std::mutex gate;
  std::unique_lock hold(gate);  // the worker's delivery blocks until released
  verifier pool(1, 1, throttle_settings{}, [&](std::unique_ptr<verify_result>&) {
    std::lock_guard wait(gate);
    return true;
  });
  pool.start();
  const auto table = credentials::from_text("u:" + make_hash("pw", "sha512") + "\n", "t");
  int accepted = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = std::make_unique<verify_request>();
    r->user = "u";
    r->password = "pw";
    r->table = table;
    accepted += pool.submit(std::move(r)) ? 1 : 0;
  }
  EXPECT_LE(accepted, 2);  // one in the worker's hands at most, one queued
  EXPECT_GE(pool.counters().queue_full.load(), 8u);
  hold.unlock();
  pool.stop();
}

}  // namespace
}  // namespace ringmta::auth
