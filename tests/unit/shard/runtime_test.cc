// shard::runtime on real rings: start/stop hooks, ordered loss-free messages across 4 shards under
// back-pressure, wake-ups of sleeping shards, control-plane posts, fd hand-off, timers, start
// failure, shutdown with ops in flight, and shard::host handlers and hooks beside the shard's.
// Every wait is bounded; a stuck runtime is stopped.
#include "ringmta/shard/runtime.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "ringmta/core/clock.h"

namespace ringmta::shard {
namespace {

// Waits (bounded) for `done`, then stops and joins the runtime whatever happened.
bool finish(runtime& rt, const std::function<bool()>& done, std::uint64_t timeout_ms = 30000) {
  const std::uint64_t deadline = core::monotonic_ns() + timeout_ms * 1'000'000;
  while (!done() && core::monotonic_ns() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool ok = done();
  rt.request_stop();
  rt.join();
  return ok;
}

runtime_options small_options(unsigned shards) {
  runtime_options options;
  options.shard_count = shards;
  options.ring.sq_entries = 64;
  options.ring.fixed_file_count = 16;
  return options;
}

struct lambda_handler final : completion_handler {
  std::function<void(shard&, const io::completion&)> fn;
  void on_completion(shard& owner, const io::completion& done) noexcept override {
    fn(owner, done);
  }
};

TEST(runtime, start_and_stop_run_hooks_on_each_shard_thread) {
  runtime rt(small_options(3));
  std::atomic<int> started{0}, stopped{0}, on_own_thread{0};
  ASSERT_TRUE(rt.start(
                    [&](shard& s) -> core::result<void> {
                      ++started;
                      if (shard::current() == &s) ++on_own_thread;
                      return {};
                    },
                    [&](shard&) { ++stopped; })
                  .ok());
  EXPECT_EQ(started.load(), 3);
  EXPECT_EQ(shard::current(), nullptr);  // the caller is not a shard
  rt.request_stop();
  rt.join();
  EXPECT_EQ(stopped.load(), 3);
  EXPECT_EQ(on_own_thread.load(), 3);
}

// ---- Ordered, loss-free traffic between every pair of 4 shards with tiny queues.

constexpr unsigned traffic_shards = 4;
constexpr std::uint64_t traffic_per_pair = 5000;

struct traffic_state {
  std::uint64_t next_to_send[traffic_shards] = {};
  std::uint64_t expected_from[traffic_shards] = {};
  std::uint64_t out_of_order = 0;
  core::timer_node pump_timer{&traffic_state::on_timer};
  shard* self = nullptr;

  static std::atomic<std::uint64_t> total_received;
  static traffic_state* states[traffic_shards];

  void pump() noexcept {
    for (unsigned to = 0; to < traffic_shards; ++to) {
      if (to == self->id()) continue;
      while (next_to_send[to] < traffic_per_pair) {
        message m;
        m.handler = &traffic_state::on_message;
        m.words[0] = next_to_send[to];
        if (!self->try_send(to, m)) break;  // back-pressure: resume later
        ++next_to_send[to];
      }
    }
  }
  bool all_sent() const noexcept {
    for (unsigned to = 0; to < traffic_shards; ++to) {
      if (to != self->id() && next_to_send[to] < traffic_per_pair) return false;
    }
    return true;
  }
  static void on_timer(core::timer_node& node) noexcept {
    auto* st = reinterpret_cast<traffic_state*>(reinterpret_cast<char*>(&node) -
                                                offsetof(traffic_state, pump_timer));
    st->pump();
    if (!st->all_sent()) st->self->timers().schedule_after(node, 1);
  }
  static void on_message(shard& s, const message& m) noexcept {
    traffic_state& st = *states[s.id()];
    if (m.words[0] != st.expected_from[m.from_shard]) ++st.out_of_order;
    st.expected_from[m.from_shard] = m.words[0] + 1;
    ++total_received;
    st.pump();  // receiving frees room elsewhere: push more of ours now
  }
};
std::atomic<std::uint64_t> traffic_state::total_received{0};
traffic_state* traffic_state::states[traffic_shards] = {};

TEST(runtime, messages_across_four_shards_arrive_in_order_without_loss) {
  runtime_options options = small_options(traffic_shards);
  options.queue_capacity = 16;
  runtime rt(options);
  traffic_state states[traffic_shards];
  for (unsigned i = 0; i < traffic_shards; ++i) traffic_state::states[i] = &states[i];
  traffic_state::total_received = 0;
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  states[s.id()].self = &s;
                  s.timers().schedule_after(states[s.id()].pump_timer, 1);
                  return {};
                },
                [&](shard& s) { s.timers().cancel(states[s.id()].pump_timer); })
                  .ok());
  const std::uint64_t total = traffic_shards * (traffic_shards - 1) * traffic_per_pair;
  EXPECT_TRUE(finish(rt, [&] { return traffic_state::total_received.load() == total; }));
  EXPECT_EQ(traffic_state::total_received.load(), total);
  std::uint64_t full = 0, wakeups = 0;
  for (unsigned i = 0; i < traffic_shards; ++i) {
    EXPECT_EQ(states[i].out_of_order, 0u) << "shard " << i;
    for (unsigned from = 0; from < traffic_shards; ++from) {
      if (from != i) {
        EXPECT_EQ(states[i].expected_from[from], traffic_per_pair);
      }
    }
    full += rt.at(i).counters().send_queue_full;
    wakeups += rt.at(i).counters().wakeups_sent;
    EXPECT_EQ(rt.at(i).counters().messages_received, (traffic_shards - 1) * traffic_per_pair);
  }
  EXPECT_GT(full, 0u) << "queues of 16 should have pushed back";
  std::printf("queue-full refusals: %llu, wake-ups sent: %llu for %llu messages\n",
              static_cast<unsigned long long>(full), static_cast<unsigned long long>(wakeups),
              static_cast<unsigned long long>(total));
}

// ---- Back-pressure: a full queue refuses, the refused message is the sender's to keep.

std::atomic<int> bp_received{0};
void bp_on_message(shard&, const message&) noexcept { ++bp_received; }

TEST(runtime, full_queue_refuses_and_loses_nothing) {
  runtime_options options = small_options(2);
  options.queue_capacity = 8;
  runtime rt(options);
  bp_received = 0;
  int accepted = 0;
  bool refused = false;
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  if (s.id() != 0) return {};
                  message m;
                  m.handler = &bp_on_message;
                  while (accepted < 100 && s.try_send(1, m)) ++accepted;
                  refused = !s.try_send(1, m);
                  return {};
                }).ok());
  EXPECT_TRUE(finish(rt, [&] { return bp_received.load() == accepted; }));
  EXPECT_EQ(accepted, 8);
  EXPECT_TRUE(refused);
  EXPECT_EQ(bp_received.load(), 8);
  EXPECT_EQ(rt.at(0).counters().send_queue_full, 2u);
}

// ---- Wake-ups: a ping-pong where each side sleeps while waiting for the other.

std::atomic<std::uint64_t> pong_count{0};
constexpr std::uint64_t ping_rounds = 2000;
void on_ping(shard& s, const message& m) noexcept;
void on_pong(shard& s, const message& m) noexcept {
  ++pong_count;
  if (m.words[0] + 1 >= ping_rounds) return;
  message next;
  next.handler = &on_ping;
  next.words[0] = m.words[0] + 1;
  RINGMTA_ASSERT(s.try_send(1, next));
}
void on_ping(shard& s, const message& m) noexcept {
  message reply;
  reply.handler = &on_pong;
  reply.words[0] = m.words[0];
  RINGMTA_ASSERT(s.try_send(m.from_shard, reply));
}

TEST(runtime, sleeping_shards_are_woken_by_msg_ring) {
  runtime_options options = small_options(2);
  options.idle_wait_ms_max = 60000;  // only a wake-up can make an idle shard move
  runtime rt(options);
  pong_count = 0;
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  if (s.id() == 0) {
                    message first;
                    first.handler = &on_ping;
                    RINGMTA_ASSERT(s.try_send(1, first));
                  }
                  return {};
                }).ok());
  EXPECT_TRUE(finish(rt, [&] { return pong_count.load() == ping_rounds; }));
  const auto& a = rt.at(0).counters();
  const auto& b = rt.at(1).counters();
  EXPECT_GT(a.wakeups_sent + b.wakeups_sent, 0u);
  EXPECT_LE(a.wakeups_sent, a.messages_sent);  // never more than one per message
  EXPECT_LE(b.wakeups_sent, b.messages_sent);
  EXPECT_GT(a.sleeps + b.sleeps, 0u);
}

// ---- Control plane: a thread that is not a shard posts a message.

std::atomic<std::uint64_t> posted_value{0};
void on_posted(shard&, const message& m) noexcept { posted_value = m.words[1]; }

TEST(runtime, post_from_a_foreign_thread_reaches_an_idle_shard) {
  runtime_options options = small_options(2);
  options.idle_wait_ms_max = 60000;
  runtime rt(options);
  posted_value = 0;
  ASSERT_TRUE(rt.start().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let shard 1 fall asleep
  message m;
  m.handler = &on_posted;
  m.words[1] = 0xfeed;
  ASSERT_TRUE(rt.post(1, m));
  EXPECT_TRUE(finish(rt, [&] { return posted_value.load() == 0xfeed; }, 10000));
}

// ---- Heartbeat: an idle shard still turns (bounded sleep); a blocked one does not.

std::atomic<bool> blocked_started{false};
std::atomic<bool> release_blocked{false};

void block_until_released(shard&, const message&) noexcept {
  blocked_started = true;
  const std::uint64_t deadline = core::monotonic_ns() + 10'000'000'000ull;
  while (!release_blocked.load() && core::monotonic_ns() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST(runtime, heartbeat_advances_while_idle_and_stops_while_a_handler_blocks) {
  runtime_options options = small_options(2);
  options.idle_wait_ms_max = 20;  // no timers, no messages: the loop turns only by the bound
  runtime rt(options);
  EXPECT_EQ(rt.at(1).last_turn_ms(), 0u);
  ASSERT_TRUE(rt.start().ok());
  const auto wait_for = [](const std::function<bool()>& done) {
    const std::uint64_t deadline = core::monotonic_ns() + 5'000'000'000ull;
    while (!done() && core::monotonic_ns() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return done();
  };
  ASSERT_TRUE(wait_for([&] { return rt.at(1).last_turn_ms() != 0; }));
  const std::uint64_t idle_turn = rt.at(1).last_turn_ms();
  EXPECT_TRUE(wait_for([&] { return rt.at(1).last_turn_ms() > idle_turn; }))
      << "an idle shard must keep turning";

  blocked_started = false;
  release_blocked = false;
  message m;
  m.handler = &block_until_released;
  ASSERT_TRUE(rt.post(1, m));
  ASSERT_TRUE(wait_for([] { return blocked_started.load(); }));
  const std::uint64_t frozen_turn = rt.at(1).last_turn_ms();
  const std::uint64_t shard0_turn = rt.at(0).last_turn_ms();
  // Shard 0 turns several times (its own bound) while shard 1's heartbeat must not move.
  EXPECT_TRUE(wait_for([&] { return rt.at(0).last_turn_ms() > shard0_turn + 60; }));
  EXPECT_EQ(rt.at(1).last_turn_ms(), frozen_turn);
  release_blocked = true;
  EXPECT_TRUE(finish(rt, [&] { return rt.at(1).last_turn_ms() > frozen_turn; }, 5000));
}

// ---- A connection (fixed file) handed from shard 0 to shard 1.

struct handoff_receiver final : fd_handoff_handler {
  std::atomic<int> received_index{-1};
  std::atomic<unsigned> from{99};
  std::atomic<std::uint32_t> cookie{0};
  std::atomic<int> send_result{0};
  std::atomic<int> failures{0};
  lambda_handler send_done;
  io::op_kind send_kind = 0;
  void on_fd_received(shard& owner, unsigned from_shard, std::uint32_t fixed_index,
                      std::uint32_t cookie_value) noexcept override {
    from = from_shard;
    cookie = cookie_value;
    received_index = static_cast<int>(fixed_index);
    (void)owner.ring().prep_send(static_cast<int>(fixed_index), "moved", 5,
                                 io::pack_user_data(send_kind, 0, fixed_index),
                                 io::sqe::fixed_file);
  }
  void on_fd_send_failed(shard&, unsigned, std::uint32_t, int) noexcept override { ++failures; }
};

TEST(runtime, a_connection_moves_to_another_shard) {
  runtime rt(small_options(2));
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  handoff_receiver receiver;
  receiver.send_done.fn = [&](shard&, const io::completion& done) {
    receiver.send_result = done.res;
  };
  struct kick_state {
    core::timer_node timer{&kick_state::fire};
    shard* self = nullptr;
    static void fire(core::timer_node& node) noexcept {
      auto* k = reinterpret_cast<kick_state*>(reinterpret_cast<char*>(&node) -
                                              offsetof(kick_state, timer));
      RINGMTA_ASSERT(k->self->send_fd(1, 5, 4242).ok());
    }
  } kick;
  std::atomic<bool> supported{true};
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  s.set_fd_handoff_handler(receiver);
                  auto kind = s.add_handler(receiver.send_done);
                  if (!kind) return core::fail(kind.error());
                  if (s.id() == 1) receiver.send_kind = kind.value();  // the receiving shard's
                  if (!s.ring().features().msg_ring_fd) {
                    supported = false;
                    return {};
                  }
                  if (s.id() == 0) {
                    if (auto ok = s.ring().update_fixed_file(5, pair[0]); !ok) return ok;
                    kick.self = &s;
                    s.timers().schedule_after(kick.timer, 1);  // send from the loop
                  }
                  return {};
                }).ok());
  if (!supported) {
    rt.request_stop();
    rt.join();
    GTEST_SKIP() << "kernel lacks MSG_RING fd passing";
  }
  close(pair[0]);  // the fixed table holds the socket now
  EXPECT_TRUE(finish(rt, [&] { return receiver.send_result.load() != 0; }, 10000));
  EXPECT_EQ(receiver.failures.load(), 0);
  EXPECT_GE(receiver.received_index.load(), 0);
  EXPECT_EQ(receiver.from.load(), 0u);
  EXPECT_EQ(receiver.cookie.load(), 4242u);
  EXPECT_EQ(receiver.send_result.load(), 5);
  char got[5] = {};
  EXPECT_EQ(read(pair[1], got, sizeof got), 5);
  EXPECT_EQ(std::string(got, 5), "moved");
  close(pair[1]);
}

// ---- Timers run on the shard and can stop the runtime.

std::atomic<int> timer_fired{0};
struct stop_timer {
  core::timer_node node{&stop_timer::fire};
  static void fire(core::timer_node&) noexcept {
    ++timer_fired;
    shard::current()->request_stop();
  }
};

TEST(runtime, a_timer_fires_on_its_shard_and_stops_the_runtime) {
  runtime rt(small_options(2));
  timer_fired = 0;
  stop_timer timer;
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  if (s.id() == 1) s.timers().schedule_after(timer.node, 20);
                  return {};
                }).ok());
  EXPECT_TRUE(finish(rt, [&] { return timer_fired.load() == 1; }, 10000));
  EXPECT_EQ(rt.at(1).counters().timers_fired, 1u);
}

// ---- A shard that fails to start stops everyone.

TEST(runtime, a_failed_start_stops_and_joins_every_shard) {
  runtime rt(small_options(3));
  std::atomic<int> stopped{0};
  auto result = rt.start(
      [](shard& s) -> core::result<void> {
        if (s.id() == 1) return core::fail(EADDRINUSE);
        return {};
      },
      [&](shard&) { ++stopped; });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error(), EADDRINUSE);
  EXPECT_FALSE(rt.running());
  EXPECT_EQ(stopped.load(), 2);  // the two that had started
}

// ---- Shutdown: on_stop cancels an op in flight and its handler still sees the final CQE.

TEST(runtime, shutdown_lets_cancelled_ops_complete) {
  runtime rt(small_options(1));
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  lambda_handler handler;
  std::atomic<int> final_result{1};
  handler.fn = [&](shard&, const io::completion& done) { final_result = done.res; };
  char buffer[8];
  ASSERT_TRUE(rt.start(
                    [&](shard& s) -> core::result<void> {
                      auto kind = s.add_handler(handler);
                      if (!kind) return core::fail(kind.error());
                      return s.ring().prep_recv(pair[0], buffer, sizeof buffer,
                                                io::pack_user_data(kind.value(), 0, 0));
                    },
                    [&](shard& s) {
                      (void)s.ring().prep_cancel_fd(pair[0], io::pack_user_data(4, 0, 0));
                    })
                  .ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  rt.request_stop();
  rt.join();
  EXPECT_EQ(final_result.load(), -ECANCELED);
  close(pair[0]);
  close(pair[1]);
}

// shard::host (shard/host.h): host-only handlers and hooks registered on a real shard get
// their completions and iterations, beside the shard's own kind, in the order added.
TEST(runtime, host_handlers_and_hooks_run_beside_shard_handlers) {
  struct host_side final : host_handler, host_hook {
    void on_completion(const io::completion& done) noexcept override {
      if (done.tag().slot == 7) ++completions;
    }
    void before_wait() noexcept override { order.push_back('h'); }
    std::atomic<int> completions{0};
    std::vector<char> order;
  };
  struct shard_side final : iteration_hook {
    void before_wait(shard&) noexcept override { order->push_back('s'); }
    std::vector<char>* order = nullptr;
  };
  runtime rt(small_options(1));
  host_side on_host;
  shard_side on_shard;
  on_shard.order = &on_host.order;
  lambda_handler shard_kind;
  std::atomic<int> shard_completions{0};
  shard_kind.fn = [&](shard&, const io::completion& done) {
    if (done.tag().slot == 9) ++shard_completions;
  };
  std::atomic<bool> registered{false};
  ASSERT_TRUE(rt.start([&](shard& s) -> core::result<void> {
                  host& as_host = s;
                  auto shard_owned = s.add_handler(shard_kind);
                  auto host_owned = as_host.add_handler(on_host);
                  if (!shard_owned || !host_owned) return core::fail(EINVAL);
                  as_host.add_iteration_hook(on_host);
                  s.add_iteration_hook(on_shard);
                  // Through the interface, as host-only glue submits.
                  if (auto queued = as_host.io().prep_nop(
                          io::pack_user_data(host_owned.value(), 0, 7));
                      !queued) {
                    return queued;
                  }
                  if (auto queued = s.ring().prep_nop(
                          io::pack_user_data(shard_owned.value(), 0, 9));
                      !queued) {
                    return queued;
                  }
                  registered = true;
                  return {};
                })
                  .ok());
  EXPECT_TRUE(finish(rt, [&] { return on_host.completions == 1 && shard_completions == 1; }));
  EXPECT_TRUE(registered.load());
  EXPECT_EQ(on_host.completions.load(), 1);
  EXPECT_EQ(shard_completions.load(), 1);
  // Every iteration ran the host hook, then the shard hook (the order they were added).
  ASSERT_GE(on_host.order.size(), 2u);
  for (std::size_t i = 0; i + 1 < on_host.order.size(); i += 2) {
    EXPECT_EQ(on_host.order[i], 'h');
    EXPECT_EQ(on_host.order[i + 1], 's');
  }
  EXPECT_EQ(rt.at(0).counters().stale_completions, 0u);
}

}  // namespace
}  // namespace ringmta::shard
