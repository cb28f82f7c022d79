// queue::scheduler and queue::build_dsn hot paths, in-process (no I/O): the cost per job of
// the scheduler's side of a delivery, of a deferral with a deep queue, and of a bounce.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "ringmta/queue/dsn.h"
#include "ringmta/queue/scheduler.h"

// Live heap bytes (the allocator's usable size of each block, so its rounding counts), by
// every operator new of this process: the measure of BM_memory_deferred, whatever allocator
// is linked (mimalloc defines operator new itself; mallinfo2 would see nothing).
std::atomic<std::int64_t> heap_bytes_live{0};

void* operator new(std::size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  heap_bytes_live.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)),
                            std::memory_order_relaxed);
  return p;
}
void* operator new[](std::size_t size) { return operator new(size); }
// GCC sees free() of a block operator new returned; this operator new is malloc().
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept {
  if (p == nullptr) return;
  heap_bytes_live.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                            std::memory_order_relaxed);
  std::free(p);
}
#pragma GCC diagnostic pop
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { operator delete(p); }

namespace {

using namespace ringmta;

// Resident bytes of the process (/proc/self/statm): what the daemon's RSS would see, freed
// blocks the allocator keeps included.
double resident_bytes() {
  long pages_total = 0;
  long pages_resident = 0;
  FILE* statm = std::fopen("/proc/self/statm", "r");
  if (statm == nullptr) return 0;
  if (std::fscanf(statm, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
  std::fclose(statm);
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}
constexpr std::int64_t t0 = 1'700'000'000'000;

std::vector<std::string> destination_names(int count) {
  std::vector<std::string> names;
  for (int i = 0; i < count; ++i) names.push_back("d" + std::to_string(i) + ".example");
  return names;
}

// add → poll → take → delivered → connection closed, over `range(0)` destinations.
void BM_deliver_cycle(benchmark::State& state) {
  queue::scheduler_config config;
  config.random_seed = 7;
  queue::scheduler scheduler(config);
  auto names = destination_names(static_cast<int>(state.range(0)));
  std::vector<queue::connect_request> requests;
  std::uint16_t recipient = 0;
  std::int64_t now = t0;
  spool::message_id id = 0;
  for (auto _ : state) {
    queue::job_spec spec;
    spec.message = ++id;
    spec.received_seconds = now / 1000;
    spec.recipients = {&recipient, 1};
    scheduler.add(names[id % names.size()], spec, now);
    requests.clear();
    scheduler.poll(now, requests);
    for (const auto& request : requests) {
      queue::take_result taken = scheduler.take_for_connection(request.connection, now);
      if (taken.status == queue::take_status::job) scheduler.delivered(taken.job.id, now);
      scheduler.connection_closed(request.connection, now);
    }
    ++now;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_deliver_cycle)->Arg(1)->Arg(1000)->Arg(100'000);

// With `range(0)` jobs scheduled over an hour on 1000 destinations, time advances 50 ms per
// iteration: poll moves the due jobs, connections take them and defer them again (heap push
// with jitter). items_per_second = deferrals per second, the retry path with a deep queue.
void BM_defer_deep_queue(benchmark::State& state) {
  queue::scheduler_config config;
  config.random_seed = 7;
  config.limits.messages_per_connection_max = 0;
  queue::scheduler scheduler(config);
  auto names = destination_names(1000);
  std::uint16_t recipient = 0;
  std::int64_t queued = state.range(0);
  for (std::int64_t i = 0; i < queued; ++i) {
    queue::job_spec spec;
    spec.message = static_cast<spool::message_id>(i + 1);
    spec.received_seconds = t0 / 1000;
    spec.recipients = {&recipient, 1};
    spec.not_before_ms = t0 + 1 + i % 3'600'000;  // spread over an hour
    scheduler.add(names[static_cast<std::size_t>(i) % names.size()], spec, t0,
                  queue::admission::forced);
  }
  std::vector<queue::connect_request> requests;
  std::int64_t now = t0;
  std::size_t deferred = 0;
  queue::failure reason{451, queue::status_code{4, 3, 0}, "451 4.3.0 try again later"};
  for (auto _ : state) {
    now += 50;
    requests.clear();
    scheduler.poll(now, requests);
    for (const auto& request : requests) {
      for (;;) {
        queue::take_result taken = scheduler.take_for_connection(request.connection, now);
        if (taken.status != queue::take_status::job) break;
        scheduler.deferred(taken.job.id, now, reason);
        ++deferred;
      }
      scheduler.connection_closed(request.connection, now);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(deferred));  // jobs deferred per second
  state.counters["bytes_per_job"] =
      static_cast<double>(scheduler.stats().memory_bytes) / static_cast<double>(queued);
}
BENCHMARK(BM_defer_deep_queue)->Arg(100'000)->Arg(1'000'000)->Unit(benchmark::kMicrosecond);

// splitmix64's finalizer: times in no order, as deferrals leave them (a time that falls with
// each job would add a wake-heap entry per job, which poll() trims and this loop never calls).
std::uint64_t mixed(std::int64_t i) {
  std::uint64_t z = static_cast<std::uint64_t>(i) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Bytes per queued job: `range(0)` jobs (one recipient each) added to 10,000 destinations,
// all deferred (next attempts spread over an hour), as in a backlog whose destinations refuse.
// heap_bytes_per_job: live heap bytes before and after the adds (every allocation the
// scheduler keeps for them, growth slack included); rss_bytes_per_job: resident bytes;
// stats_bytes_per_job: the scheduler's own estimate (scheduler_stats::memory_bytes).
// Measures memory only: one iteration, its time is the adds'.
void BM_memory_deferred(benchmark::State& state) {
  const auto names = destination_names(10'000);
  const std::int64_t queued = state.range(0);
  std::uint16_t recipient = 0;
  for (auto _ : state) {
    queue::scheduler_config config;
    config.random_seed = 7;
    const double heap_before = static_cast<double>(heap_bytes_live.load());
    const double resident_before = resident_bytes();
    auto scheduler = std::make_unique<queue::scheduler>(config);
    for (std::int64_t i = 0; i < queued; ++i) {
      queue::job_spec spec;
      spec.message = static_cast<spool::message_id>(i + 1);
      spec.received_seconds = t0 / 1000;
      spec.recipients = {&recipient, 1};
      spec.not_before_ms = t0 + 1 + static_cast<std::int64_t>(mixed(i) % 3'600'000);
      scheduler->add(names[static_cast<std::size_t>(i) % names.size()], spec, t0,
                     queue::admission::forced);
    }
    const double jobs = static_cast<double>(queued);
    state.counters["heap_bytes_per_job"] =
        (static_cast<double>(heap_bytes_live.load()) - heap_before) / jobs;
    state.counters["rss_bytes_per_job"] = (resident_bytes() - resident_before) / jobs;
    state.counters["stats_bytes_per_job"] =
        static_cast<double>(scheduler->stats().memory_bytes) / jobs;
  }
}
BENCHMARK(BM_memory_deferred)->Arg(200'000)->Arg(1'000'000)->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// A bounce of a small message (returned whole) with one recipient.
void BM_build_dsn(benchmark::State& state) {
  spool::envelope envelope;
  envelope.id = 1;
  envelope.reverse_path = "alice@example.com";
  envelope.received_seconds = t0 / 1000;
  std::string body = "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: x\r\n\r\n";
  while (body.size() < static_cast<std::size_t>(state.range(0))) body += "a body line\r\n";
  std::string_view pieces[] = {body};
  queue::dsn_recipient recipient;
  recipient.address = "bob@example.org";
  recipient.status = queue::status_code{5, 1, 1};
  recipient.remote_mta = "mx.example.org";
  recipient.diagnostic = "550 5.1.1 <bob@example.org>: Recipient address rejected";
  queue::dsn_request request;
  request.reporting_mta = "mx.example.net";
  request.original = &envelope;
  request.recipients = {&recipient, 1};
  request.original_body = pieces;
  request.original_body_bytes = body.size();
  request.dsn_id = 2;
  request.now_seconds = t0 / 1000;
  std::string out;
  for (auto _ : state) {
    out.clear();
    auto result = queue::build_dsn(request, out);
    benchmark::DoNotOptimize(result);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_build_dsn)->Arg(2'000)->Arg(60'000);

}  // namespace

BENCHMARK_MAIN();
