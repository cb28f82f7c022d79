// Cross-shard hand-off cost: messages through the SPSC queues with MSG_RING wake-ups between two
// pinned shards, streamed (wake-ups batched per loop iteration, or flushed after every message)
// and ping-ponged (every hop finds the peer asleep: one wake-up per message); a NOP round trip
// on one ring for reference. Results and the command: bench/shard/README.md.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>

#include "ringmta/core/assert.h"
#include "ringmta/io/ring.h"
#include "ringmta/shard/runtime.h"

namespace ringmta::shard {
namespace {

// ---- Reference: one NOP through submit, wait and reap on a single ring.

void ring_nop_round_trip(benchmark::State& state) {
  io::ring r;
  RINGMTA_ASSERT(r.init(io::ring_options{}).ok());
  io::completion out[1];
  for (auto _ : state) {
    RINGMTA_ASSERT(r.prep_nop(io::pack_user_data(16, 0, 0)).ok());
    RINGMTA_ASSERT(r.submit_and_wait(1).ok());
    benchmark::DoNotOptimize(r.reap(out));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(ring_nop_round_trip);

// ---- Two shards; the benchmark thread starts a run on shard 0 and sleeps until it ends.

struct bench_state {
  std::uint64_t to_send = 0;   // stream: messages left for shard 0 to push
  std::uint64_t received = 0;  // stream: messages shard 1 got in this run
  std::uint64_t goal = 0;
  bool flush_each = false;
  std::atomic<std::uint64_t> runs_done{0};
};
bench_state bench;

void finish_run() noexcept {
  bench.runs_done.fetch_add(1, std::memory_order_release);
  bench.runs_done.notify_one();
}

void on_stream_message(shard&, const message&) noexcept {
  if (++bench.received == bench.goal) finish_run();
}

// Shard 0: push as many as the queue takes; when it is full, continue on the next loop
// iteration by messaging ourselves (the documented back-pressure pattern).
void on_pump(shard& s, const message&) noexcept {
  message m;
  m.handler = &on_stream_message;
  while (bench.to_send > 0 && s.try_send(1, m)) {
    --bench.to_send;
    if (bench.flush_each) s.flush_wakeups();
  }
  if (bench.to_send > 0) {
    message again;
    again.handler = &on_pump;
    RINGMTA_ASSERT(s.try_send(0, again));
  }
}

void on_ping(shard& s, const message& m) noexcept;
void on_pong(shard& s, const message& m) noexcept {
  if (m.words[0] + 1 == bench.goal) {
    finish_run();
    return;
  }
  message next;
  next.handler = &on_ping;
  next.words[0] = m.words[0] + 1;
  RINGMTA_ASSERT(s.try_send(1, next));
}
void on_ping(shard& s, const message& m) noexcept {
  message reply;
  reply.handler = &on_pong;
  reply.words[0] = m.words[0];
  RINGMTA_ASSERT(s.try_send(0, reply));
}

void on_ping_start(shard& s, const message&) noexcept {
  message first;
  first.handler = &on_ping;
  RINGMTA_ASSERT(s.try_send(1, first));
}

runtime_options two_shards() {
  runtime_options options;
  options.shard_count = 2;
  options.queue_capacity = 1024;
  options.ring.fixed_file_count = 0;
  return options;
}

std::uint64_t total_wakeups(runtime& rt) {
  return rt.at(0).counters().wakeups_sent + rt.at(1).counters().wakeups_sent;
}

void run_and_wait(runtime& rt, message::handler_fn first) {
  const std::uint64_t before = bench.runs_done.load(std::memory_order_acquire);
  message start;
  start.handler = first;
  RINGMTA_ASSERT(rt.post(0, start));
  std::uint64_t now = before;
  while (now == before) {
    bench.runs_done.wait(now, std::memory_order_acquire);  // futex: no spinning on 2 cores
    now = bench.runs_done.load(std::memory_order_acquire);
  }
}

void handoff_stream(benchmark::State& state, bool flush_each) {
  constexpr std::uint64_t per_run = 100'000;
  runtime rt(two_shards());
  RINGMTA_ASSERT(rt.start().ok());
  bench.flush_each = flush_each;
  for (auto _ : state) {
    bench.to_send = per_run;
    bench.received = 0;
    bench.goal = per_run;
    run_and_wait(rt, &on_pump);
  }
  rt.request_stop();
  rt.join();
  const double messages = static_cast<double>(state.iterations() * per_run);
  state.SetItemsProcessed(static_cast<std::int64_t>(messages));
  state.counters["ns_per_message"] = benchmark::Counter(
      messages, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["wakeups_per_message"] = static_cast<double>(total_wakeups(rt)) / messages;
  state.counters["queue_full_per_message"] =
      static_cast<double>(rt.at(0).counters().send_queue_full) / messages;
}

void handoff_stream_batched(benchmark::State& state) { handoff_stream(state, false); }
void handoff_stream_flush_each(benchmark::State& state) { handoff_stream(state, true); }
BENCHMARK(handoff_stream_batched)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(handoff_stream_flush_each)->Unit(benchmark::kMillisecond)->UseRealTime();

void handoff_ping_pong(benchmark::State& state) {
  constexpr std::uint64_t round_trips = 5'000;
  runtime rt(two_shards());
  RINGMTA_ASSERT(rt.start().ok());
  for (auto _ : state) {
    bench.goal = round_trips;
    run_and_wait(rt, &on_ping_start);
  }
  rt.request_stop();
  rt.join();
  const double messages = static_cast<double>(state.iterations() * round_trips * 2);
  state.SetItemsProcessed(static_cast<std::int64_t>(messages));
  state.counters["ns_per_message"] = benchmark::Counter(
      messages, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["wakeups_per_message"] = static_cast<double>(total_wakeups(rt)) / messages;
}

BENCHMARK(handoff_ping_pong)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace ringmta::shard

BENCHMARK_MAIN();
