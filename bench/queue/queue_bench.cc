// queue::scheduler and queue::build_dsn hot paths, in-process (no I/O): the cost per job of
// the scheduler's side of a delivery, of a deferral with a deep queue, and of a bounce.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "ringmta/queue/dsn.h"
#include "ringmta/queue/scheduler.h"

namespace {

using namespace ringmta;
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
