// queue::scheduler with injected time (ms) and seeded jitter: ordering, retries, expiry,
// limits, destination-wide backoff, operator actions, bounds and forgetting.
#include "ringmta/queue/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <set>
#include <vector>

namespace ringmta::queue {
namespace {

constexpr std::int64_t t0 = 1'700'000'000'000;  // ms; received_seconds below are t0 / 1000
constexpr std::int64_t t0_seconds = t0 / 1000;

scheduler_config plain_config() {
  scheduler_config config;
  config.jitter_permille = 0;
  config.retry_delays_ms = {1000, 5000, 60000};
  config.delay_warning_ms = 0;
  return config;
}

struct harness {
  explicit harness(scheduler_config config) : queue(std::move(config)) {}
  scheduler queue;
  std::vector<std::uint16_t> recipients_storage;

  add_result add(std::string_view destination, message_key message,
                 std::vector<std::uint16_t> recipients, std::int64_t now = t0,
                 std::int64_t not_before = 0, std::uint16_t attempts = 0,
                 admission mode = admission::checked) {
    recipients_storage = std::move(recipients);
    job_spec spec;
    spec.message = message;
    spec.received_seconds = t0_seconds;
    spec.recipients = recipients_storage;
    spec.not_before_ms = not_before;
    spec.attempts = attempts;
    return queue.add(destination, spec, now, mode);
  }
  std::vector<connect_request> poll(std::int64_t now) {
    std::vector<connect_request> out;
    queue.poll(now, out);
    return out;
  }
  // The one connection the queued work asks for at `now`, and the job taken on it.
  struct opened {
    connect_request request;
    take_result taken;
  };
  opened open_one(std::int64_t now) {
    auto requests = poll(now);
    EXPECT_EQ(requests.size(), 1u);
    if (requests.empty()) return {};
    return {requests[0], queue.take_for_connection(requests[0].connection, now)};
  }
  destination_info info(std::string_view name) {
    destination_info out;
    EXPECT_TRUE(queue.inspect(name, out)) << name;
    return out;
  }
  struct event_copy {
    event_kind kind;
    job_view job;  // job.last_error is cleared: see error_text
    std::string error_text;
  };
  std::vector<event_copy> events() {
    std::vector<event_copy> out;
    job_event event;
    while (queue.next_event(event)) {
      out.push_back(event_copy{event.kind, event.job, std::string(event.job.last_error)});
      out.back().job.last_error = {};  // only valid until the next next_event()
    }
    return out;
  }
};

const failure temporary{451, status_code{4, 3, 0}, "451 4.3.0 try again later"};
const failure refused{0, status_code{4, 4, 1}, "connection refused"};

TEST(scheduler, add_poll_take_in_order) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  harness h(config);
  EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);
  for (spool::message_id id = 1; id <= 3; ++id) {
    add_result added = h.add("example.org", id, {0});
    ASSERT_EQ(added.status, add_status::added);
    EXPECT_EQ(added.jobs_added, 1u);
  }
  EXPECT_EQ(h.queue.next_wakeup_ms(), t0);
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].name, "example.org");
  EXPECT_FALSE(requests[0].probe);
  EXPECT_EQ(h.poll(t0).size(), 0u);  // at the connection limit
  for (spool::message_id id = 1; id <= 3; ++id) {
    take_result taken = h.queue.take_for_connection(requests[0].connection, t0);
    ASSERT_EQ(taken.status, take_status::job);
    EXPECT_EQ(taken.job.message, id);
    EXPECT_EQ(taken.job.attempts, 0u);
    h.queue.delivered(taken.job.id, t0);
  }
  EXPECT_EQ(h.queue.take_for_connection(requests[0].connection, t0).status, take_status::none);
  h.queue.connection_closed(requests[0].connection, t0);
  scheduler_stats stats = h.queue.stats();
  EXPECT_EQ(stats.jobs, 0u);
  EXPECT_EQ(stats.delivered, 3u);
  EXPECT_EQ(stats.connections, 0u);
  EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);
}

TEST(scheduler, opens_connections_up_to_the_limit_for_the_backlog) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 3;
  harness h(config);
  h.add("example.org", 1, {0});
  h.add("example.org", 2, {0});
  EXPECT_EQ(h.poll(t0).size(), 2u);  // two ready jobs: two connections
  for (spool::message_id id = 3; id <= 10; ++id) h.add("example.org", id, {0});
  EXPECT_EQ(h.poll(t0).size(), 1u);  // the third and last allowed
  EXPECT_EQ(h.info("example.org").connections, 3u);
}

// Issue 17 item 8: a connection that finished its delivery used to take the job a new
// connection had just been opened for; the new one then found nothing and did only EHLO/QUIT.
TEST(scheduler, a_reused_connection_leaves_jobs_to_starting_connections) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 3;
  harness h(config);
  h.add("example.org", 1, {0});
  auto first = h.poll(t0);
  ASSERT_EQ(first.size(), 1u);
  take_result taken = h.queue.take_for_connection(first[0].connection, t0);
  ASSERT_EQ(taken.status, take_status::job);
  h.add("example.org", 2, {0});
  auto second = h.poll(t0);  // the first connection is busy: a second one for message 2
  ASSERT_EQ(second.size(), 1u);
  h.queue.delivered(taken.job.id, t0);
  // The first connection is free before the second one has greeted: message 2 is the second's.
  EXPECT_EQ(h.queue.take_for_connection(first[0].connection, t0).status, take_status::none);
  take_result for_new = h.queue.take_for_connection(second[0].connection, t0);
  ASSERT_EQ(for_new.status, take_status::job);
  EXPECT_EQ(for_new.job.message, 2u);
  // Beyond the starting connections' share, a reused connection takes work as before.
  h.add("example.org", 3, {0});
  EXPECT_EQ(h.queue.take_for_connection(first[0].connection, t0).status, take_status::job);
}

// If the connection a job waited for fails, the job is still ready for a reused connection.
TEST(scheduler, a_failed_starting_connection_leaves_its_job_to_a_reused_one) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 2;
  harness h(config);
  h.add("example.org", 1, {0});
  auto first = h.poll(t0);
  take_result taken = h.queue.take_for_connection(first[0].connection, t0);
  ASSERT_EQ(taken.status, take_status::job);
  h.add("example.org", 2, {0});
  auto second = h.poll(t0);
  ASSERT_EQ(second.size(), 1u);
  h.queue.delivered(taken.job.id, t0);
  EXPECT_EQ(h.queue.take_for_connection(first[0].connection, t0).status, take_status::none);
  h.queue.connection_closed(second[0].connection, t0);  // refused before it greeted
  take_result reused = h.queue.take_for_connection(first[0].connection, t0);
  ASSERT_EQ(reused.status, take_status::job);
  EXPECT_EQ(reused.job.message, 2u);
}

TEST(scheduler, recipients_split_by_window_and_transaction_limit) {
  scheduler_config config = plain_config();
  config.limits.recipients_per_transaction_max = 2;
  harness h(config);
  add_result added = h.add("example.org", 7, {70, 2, 0, 1, 1});
  ASSERT_EQ(added.status, add_status::added);
  EXPECT_EQ(added.jobs_added, 3u);
  std::vector<job_view> jobs;
  EXPECT_EQ(h.queue.list_jobs("example.org", 10, jobs), 3u);
  std::vector<std::vector<std::uint16_t>> recipients;
  for (const job_view& job : jobs) {
    std::vector<std::uint16_t> indices;
    job.for_each_recipient([&](std::uint16_t index) { indices.push_back(index); });
    recipients.push_back(indices);
  }
  EXPECT_EQ(recipients, (std::vector<std::vector<std::uint16_t>>{{0, 1}, {2}, {70}}));

  // Without the transaction limit, the 64-index window still splits 0 and 70.
  harness wide(plain_config());
  EXPECT_EQ(wide.add("example.org", 7, {0, 63, 64}).jobs_added, 2u);
  EXPECT_EQ(wide.add("example.org", 8, {}).status, add_status::invalid);
  EXPECT_EQ(wide.add("", 8, {1}).status, add_status::invalid);
}

// Takes the single job of a one-connection destination.
job_view take_one(harness& h, std::string_view destination, std::int64_t now,
                  connection_id& connection) {
  auto requests = h.poll(now);
  EXPECT_EQ(requests.size(), 1u) << destination;
  if (requests.empty()) return {};
  connection = requests[0].connection;
  take_result taken = h.queue.take_for_connection(connection, now);
  EXPECT_EQ(taken.status, take_status::job);
  return taken.job;
}

TEST(scheduler, retry_schedule_counts_attempts_and_repeats_the_last_delay) {
  harness h(plain_config());
  h.add("example.org", 1, {0, 1});
  std::int64_t now = t0;
  const std::int64_t expected[] = {1000, 5000, 60000, 60000};
  for (std::uint16_t attempt = 1; attempt <= 4; ++attempt) {
    connection_id connection;
    job_view job = take_one(h, "example.org", now, connection);
    EXPECT_EQ(job.attempts, attempt - 1);
    defer_result result = h.queue.deferred(job.id, now, temporary);
    EXPECT_EQ(result.status, defer_status::scheduled);
    EXPECT_EQ(result.attempts, attempt);
    EXPECT_EQ(result.next_attempt_ms, now + expected[attempt - 1]);
    h.queue.connection_closed(connection, now);
    EXPECT_EQ(h.queue.next_wakeup_ms(), result.next_attempt_ms);
    EXPECT_TRUE(h.poll(result.next_attempt_ms - 1).empty());  // not a millisecond early
    now = result.next_attempt_ms;
  }
  connection_id connection;
  job_view job = take_one(h, "example.org", now, connection);
  EXPECT_EQ(job.attempts, 4u);
  EXPECT_EQ(job.last_error, "451 4.3.0 try again later");
  EXPECT_EQ(job.last_reply_code, 451);
  EXPECT_EQ(job.last_status, (status_code{4, 3, 0}));
  EXPECT_EQ(job.last_attempt_ms, now - 60000);
}

TEST(scheduler, partial_deferral_keeps_only_the_named_recipients) {
  harness h(plain_config());
  h.add("example.org", 1, {3, 4, 5});
  connection_id connection;
  job_view job = take_one(h, "example.org", t0, connection);
  EXPECT_EQ(job.recipient_count(), 3u);
  h.queue.deferred(job.id, t0, temporary, job.recipient_mask & 0b010);  // only index 4
  h.queue.connection_closed(connection, t0);
  job = take_one(h, "example.org", t0 + 1000, connection);
  std::vector<std::uint16_t> indices;
  job.for_each_recipient([&](std::uint16_t index) { indices.push_back(index); });
  EXPECT_EQ(indices, std::vector<std::uint16_t>{4});
}

TEST(scheduler, jitter_stays_within_bounds_and_is_seeded) {
  auto run = [](std::uint64_t seed) {
    scheduler_config config = plain_config();
    config.jitter_permille = 100;
    config.retry_delays_ms = {100'000};
    config.random_seed = seed;
    harness h(config);
    std::vector<std::int64_t> delays;
    std::int64_t now = t0;
    h.add("example.org", 1, {0});
    for (int i = 0; i < 200; ++i) {
      connection_id connection;
      job_view job = take_one(h, "example.org", now, connection);
      defer_result result = h.queue.deferred(job.id, now, temporary);
      h.queue.connection_closed(connection, now);
      delays.push_back(result.next_attempt_ms - now);
      now = result.next_attempt_ms;
    }
    return delays;
  };
  std::vector<std::int64_t> delays = run(42);
  std::set<std::int64_t> distinct(delays.begin(), delays.end());
  EXPECT_GT(distinct.size(), 100u);  // really jittered
  for (std::int64_t delay : delays) {
    EXPECT_GE(delay, 90'000);
    EXPECT_LE(delay, 110'000);
  }
  EXPECT_EQ(run(42), delays);  // same seed, same schedule
  EXPECT_NE(run(43), delays);
}

TEST(scheduler, lifetime_expiry_clamps_the_last_retry_then_expires) {
  scheduler_config config = plain_config();
  config.lifetime_max_ms = 7000;
  harness h(config);
  h.add("example.org", 1, {0});
  connection_id connection;
  job_view job = take_one(h, "example.org", t0, connection);
  EXPECT_EQ(h.queue.deferred(job.id, t0, temporary).next_attempt_ms, t0 + 1000);
  h.queue.connection_closed(connection, t0);
  job = take_one(h, "example.org", t0 + 1000, connection);
  // 5000 ms would be t0 + 6000, still inside the lifetime.
  EXPECT_EQ(h.queue.deferred(job.id, t0 + 1000, temporary).next_attempt_ms, t0 + 6000);
  h.queue.connection_closed(connection, t0 + 1000);
  job = take_one(h, "example.org", t0 + 6000, connection);
  // 60000 ms would pass the lifetime: the last attempt is at the expiry time itself.
  EXPECT_EQ(h.queue.deferred(job.id, t0 + 6000, temporary).next_attempt_ms, t0 + 7000);
  h.queue.connection_closed(connection, t0 + 6000);
  job = take_one(h, "example.org", t0 + 7000, connection);
  defer_result result = h.queue.deferred(job.id, t0 + 7000, temporary);
  EXPECT_EQ(result.status, defer_status::expired);
  EXPECT_EQ(result.attempts, 4u);
  EXPECT_EQ(h.queue.stats().expired, 1u);
  EXPECT_EQ(h.queue.stats().jobs, 0u);
}

TEST(scheduler, delay_warning_once_past_the_threshold) {
  scheduler_config config = plain_config();
  config.delay_warning_ms = 3000;
  harness h(config);
  h.add("example.org", 1, {0});
  std::int64_t now = t0;
  std::vector<bool> warnings;
  for (int i = 0; i < 4; ++i) {
    connection_id connection;
    job_view job = take_one(h, "example.org", now, connection);
    defer_result result = h.queue.deferred(job.id, now, temporary);
    warnings.push_back(result.delay_warning);
    h.queue.connection_closed(connection, now);
    now = result.next_attempt_ms;
  }
  // Attempts at t0, +1000, +6000 (past 3000: warn), +66000 (already warned).
  EXPECT_EQ(warnings, (std::vector<bool>{false, false, true, false}));
}

TEST(scheduler, token_bucket_is_exact) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  config.limits.rate_messages = 3;
  config.limits.rate_period_ms = 1000;
  config.limits.rate_burst = 2;
  config.limits.messages_per_connection_max = 0;
  harness h(config);
  for (spool::message_id id = 1; id <= 10; ++id) h.add("example.org", id, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 1u);
  connection_id connection = requests[0].connection;
  auto take = [&](std::int64_t now) { return h.queue.take_for_connection(connection, now); };
  EXPECT_EQ(take(t0).status, take_status::job);  // burst of 2
  EXPECT_EQ(take(t0).status, take_status::job);
  take_result throttled = take(t0);
  EXPECT_EQ(throttled.status, take_status::throttled);
  EXPECT_EQ(throttled.retry_at_ms, t0 + 334);  // ceil(1000 / 3)
  EXPECT_EQ(take(t0 + 333).status, take_status::throttled);
  EXPECT_EQ(take(t0 + 334).status, take_status::job);
  // 2 units left over (334 * 3 - 1000): the next token is due after 333 more ms, not 334.
  EXPECT_EQ(take(t0 + 334).retry_at_ms, t0 + 334 + 333);
  EXPECT_EQ(take(t0 + 667).status, take_status::job);
  // A long pause banks at most the burst.
  EXPECT_EQ(take(t0 + 100'000).status, take_status::job);
  EXPECT_EQ(take(t0 + 100'000).status, take_status::job);
  EXPECT_EQ(take(t0 + 100'000).status, take_status::throttled);
}

TEST(scheduler, rate_limit_delays_new_connections) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 5;
  config.limits.rate_messages = 1;
  config.limits.rate_period_ms = 1000;
  config.limits.rate_burst = 1;
  harness h(config);
  for (spool::message_id id = 1; id <= 3; ++id) h.add("example.org", id, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 1u);  // one token: one connection, not five
  ASSERT_EQ(h.queue.take_for_connection(requests[0].connection, t0).status, take_status::job);
  EXPECT_EQ(h.queue.next_wakeup_ms(), t0 + 1000);
  EXPECT_TRUE(h.poll(t0 + 999).empty());
  EXPECT_EQ(h.poll(t0 + 1000).size(), 1u);
}

TEST(scheduler, messages_per_connection_then_close) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  config.limits.messages_per_connection_max = 2;
  harness h(config);
  for (spool::message_id id = 1; id <= 3; ++id) h.add("example.org", id, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 1u);
  for (int i = 0; i < 2; ++i) {
    take_result taken = h.queue.take_for_connection(requests[0].connection, t0);
    ASSERT_EQ(taken.status, take_status::job);
    h.queue.delivered(taken.job.id, t0);
  }
  EXPECT_EQ(h.queue.take_for_connection(requests[0].connection, t0).status, take_status::close);
  h.queue.connection_closed(requests[0].connection, t0);
  EXPECT_EQ(h.queue.next_wakeup_ms(), t0);  // the third job wants a new connection
  EXPECT_EQ(h.poll(t0).size(), 1u);
}

TEST(scheduler, destination_backoff_shares_one_time_then_probes) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 3;
  harness h(config);
  for (spool::message_id id = 1; id <= 5; ++id) h.add("dead.example", id, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 3u);
  for (const auto& request : requests) h.queue.connection_failed(request.connection, t0, refused);
  destination_info info = h.info("dead.example");
  EXPECT_EQ(info.ready, 0u);
  EXPECT_EQ(info.scheduled, 5u);
  EXPECT_EQ(info.connections, 0u);
  EXPECT_EQ(info.connection_failures, 1u);  // opened together, failed together: one failure
  EXPECT_TRUE(info.probing);
  EXPECT_EQ(info.last_error, "connection refused");
  std::int64_t shared = info.backoff_until_ms;
  EXPECT_EQ(shared, t0 + 1000);
  std::vector<job_view> jobs;
  h.queue.list_jobs("dead.example", 10, jobs);
  ASSERT_EQ(jobs.size(), 5u);
  std::uint32_t attempts = 0;
  for (const job_view& job : jobs) {
    EXPECT_EQ(job.next_attempt_ms, shared);
    attempts += job.attempts;
  }
  EXPECT_EQ(attempts, 1u);  // one failure, one attempt (the probe's job); the rest waited
  EXPECT_EQ(h.queue.next_wakeup_ms(), shared);
  // A job arriving meanwhile waits too: no hammering of a dead host.
  h.add("dead.example", 6, {0}, t0 + 10);
  EXPECT_TRUE(h.poll(t0 + 10).empty());
  EXPECT_EQ(h.queue.next_wakeup_ms(), shared);
  // At the shared time: one probe connection only.
  requests = h.poll(shared);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(requests[0].probe);
  EXPECT_TRUE(h.poll(shared).empty());
  // The probe works: the destination opens up again.
  ASSERT_EQ(h.queue.take_for_connection(requests[0].connection, shared).status, take_status::job);
  EXPECT_FALSE(h.info("dead.example").probing);
  EXPECT_EQ(h.poll(shared).size(), 2u);
}

TEST(scheduler, repeated_destination_failures_climb_the_schedule) {
  harness h(plain_config());
  h.add("dead.example", 1, {0});
  h.add("dead.example", 2, {0}, t0, t0 + 3000);  // scheduled before the backoff ends
  std::int64_t now = t0;
  const std::int64_t expected[] = {1000, 5000, 60000, 60000};
  for (std::int64_t delay : expected) {
    auto requests = h.poll(now);
    ASSERT_EQ(requests.size(), 1u);
    h.queue.connection_failed(requests[0].connection, now, refused);
    destination_info info = h.info("dead.example");
    EXPECT_EQ(info.backoff_until_ms, now + delay);
    EXPECT_EQ(info.next_attempt_ms, now + delay);  // the other job waits for it too
    now += delay;
  }
}

TEST(scheduler, backoff_expires_old_jobs_as_events) {
  scheduler_config config = plain_config();
  config.lifetime_max_ms = 1000;
  harness h(config);
  h.add("dead.example", 1, {0, 1});
  auto requests = h.poll(t0 + 2000);
  ASSERT_EQ(requests.size(), 1u);
  h.queue.connection_failed(requests[0].connection, t0 + 2000, refused);
  auto events = h.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, event_kind::expired);
  EXPECT_EQ(events[0].job.message, 1u);
  EXPECT_EQ(events[0].job.recipient_count(), 2u);
  EXPECT_EQ(events[0].error_text, "connection refused");
  EXPECT_EQ(h.queue.stats().jobs, 0u);
}

TEST(scheduler, suspend_and_resume) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 2;
  harness h(config);
  for (spool::message_id id = 1; id <= 3; ++id) h.add("example.org", id, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_TRUE(h.queue.suspend("example.org", t0));
  EXPECT_EQ(h.queue.take_for_connection(requests[0].connection, t0).status, take_status::close);
  h.queue.connection_closed(requests[0].connection, t0);
  h.queue.connection_closed(requests[1].connection, t0);
  EXPECT_TRUE(h.poll(t0).empty());
  EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);
  EXPECT_TRUE(h.info("example.org").suspended);
  // Suspended destinations are never forgotten, even long idle; suspending creates one.
  EXPECT_TRUE(h.queue.suspend("other.example", t0));
  h.poll(t0 + 100 * 3'600'000LL);
  destination_info info;
  EXPECT_TRUE(h.queue.inspect("other.example", info));
  EXPECT_TRUE(h.queue.resume("example.org", t0 + 5));
  EXPECT_EQ(h.queue.next_wakeup_ms(), t0 + 5);
  EXPECT_EQ(h.poll(t0 + 5).size(), 2u);
  EXPECT_FALSE(h.queue.resume("unknown.example", t0));
}

TEST(scheduler, flush_makes_scheduled_ready_keeping_attempts) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;  // one connection takes both jobs
  harness h(config);
  h.add("example.org", 1, {0});
  h.add("example.org", 2, {0}, t0, t0 + 3'600'000, 4);  // recovered, due in an hour
  connection_id connection;
  job_view job = take_one(h, "example.org", t0, connection);
  h.queue.deferred(job.id, t0, temporary);
  h.queue.connection_closed(connection, t0);
  EXPECT_EQ(h.info("example.org").scheduled, 2u);
  EXPECT_EQ(h.queue.flush("example.org", t0 + 1), 2u);
  EXPECT_EQ(h.info("example.org").ready, 2u);
  auto requests = h.poll(t0 + 1);
  ASSERT_FALSE(requests.empty());
  std::vector<std::uint16_t> attempts;
  for (int i = 0; i < 2; ++i) {
    take_result taken = h.queue.take_for_connection(requests[0].connection, t0 + 1);
    ASSERT_EQ(taken.status, take_status::job);
    attempts.push_back(taken.job.attempts);
  }
  EXPECT_EQ(attempts, (std::vector<std::uint16_t>{1, 4}));  // in next-attempt order
  EXPECT_EQ(h.queue.flush("unknown.example", t0), 0u);
}

TEST(scheduler, flush_all_lifts_backoff) {
  harness h(plain_config());
  h.add("a.example", 1, {0});
  h.add("b.example", 2, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 2u);
  for (const auto& request : requests) h.queue.connection_failed(request.connection, t0, refused);
  EXPECT_TRUE(h.poll(t0 + 1).empty());
  EXPECT_EQ(h.queue.flush_all(t0 + 1), 2u);
  EXPECT_EQ(h.poll(t0 + 1).size(), 2u);
}

// a.example's first job taken at t0, then a reply rule's pause of a.example until t0 + 60 s
// (fired at t0 + 1 by that job's reply), the job deferred to it and its connection closed.
void pause_after_first_attempt(harness& h) {
  h.add("a.example", 1, {0});
  const auto [request, taken] = h.open_one(t0);
  ASSERT_EQ(taken.status, take_status::job);
  h.queue.pause(request.destination, t0 + 1, t0 + 60'000, temporary);
  h.queue.deferred(taken.job.id, t0 + 1, temporary);
  h.queue.connection_closed(request.connection, t0 + 1);
}

// A reply rule's pause is not a backoff: a flush (or a message's retry) lifts the backoff but
// the pause holds, else every poll opens a connection that take_for_connection closes at once
// (ringmta-sim seed 7059: 19,976 connections to a paused MTA after the operator's flush).
TEST(scheduler, flush_keeps_a_reply_rule_pause) {
  harness h(plain_config());
  pause_after_first_attempt(h);
  h.add("a.example", 2, {0}, t0 + 2);
  EXPECT_EQ(h.queue.flush("a.example", t0 + 2), 1u);
  EXPECT_TRUE(h.poll(t0 + 2).empty());
  EXPECT_GE(h.queue.next_wakeup_ms(), t0 + 60'000);
  EXPECT_TRUE(h.poll(t0 + 59'999).empty());
  EXPECT_EQ(h.poll(t0 + 60'000).size(), 1u);
}

// An operator's resume ends a reply rule's pause (ringmta-ctl resume, issue 16): the job the
// pause moved to its end and one queued meanwhile for that end go now; one whose own retry
// time is after the end keeps it. resume() alone (an operator's suspension ending) does not.
TEST(scheduler, lift_pause_sends_what_the_pause_held) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  harness h(config);
  pause_after_first_attempt(h);
  h.add("a.example", 2, {0}, t0 + 2, t0 + 60'000);   // as relay.cc queue_job queues it
  h.add("a.example", 3, {0}, t0 + 2, t0 + 600'000);  // its own retry time, after the end
  EXPECT_TRUE(h.queue.resume("a.example", t0 + 3));
  EXPECT_TRUE(h.poll(t0 + 3).empty());
  EXPECT_FALSE(h.queue.lift_pause("b.example", t0 + 3));
  EXPECT_TRUE(h.queue.lift_pause("a.example", t0 + 3));
  EXPECT_EQ(h.info("a.example").paused_until_ms, 0);
  EXPECT_FALSE(h.queue.lift_pause("a.example", t0 + 3));  // nothing left to lift
  const auto requests = h.poll(t0 + 3);
  ASSERT_EQ(requests.size(), 1u);
  std::set<spool::message_id> sent;
  for (;;) {
    const take_result next = h.queue.take_for_connection(requests[0].connection, t0 + 3);
    if (next.status != take_status::job) break;
    sent.insert(next.job.message);
  }
  EXPECT_EQ(sent, (std::set<spool::message_id>{1, 2}));
  EXPECT_EQ(h.info("a.example").scheduled, 1u);
}

// has_job: a job id taken earlier names its job until the job leaves; its slot reused by
// another job (a new generation) does not make it live again.
TEST(scheduler, has_job_follows_a_job_until_it_leaves) {
  harness h(plain_config());
  h.add("a.example", 1, {0});
  const auto taken = h.open_one(t0).taken;
  ASSERT_EQ(taken.status, take_status::job);
  EXPECT_TRUE(h.queue.has_job(taken.job.id));
  h.queue.delivered(taken.job.id, t0 + 1);
  EXPECT_FALSE(h.queue.has_job(taken.job.id));
  h.add("a.example", 2, {0}, t0 + 2);  // reuses the freed slot
  EXPECT_FALSE(h.queue.has_job(taken.job.id));
  EXPECT_FALSE(h.queue.has_job(queue::job_id{1u << 20, 0}));  // a slot never used
}

TEST(scheduler, bounce_all_hands_back_every_job) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  harness h(config);
  for (spool::message_id id = 1; id <= 3; ++id) h.add("example.org", id, {0});
  h.add("example.org", 4, {0}, t0, t0 + 50'000);
  connection_id connection;
  job_view in_flight = take_one(h, "example.org", t0, connection);
  EXPECT_EQ(h.queue.bounce_all("example.org", t0), 3u);  // 2 ready + 1 scheduled
  auto events = h.events();
  ASSERT_EQ(events.size(), 3u);
  std::set<spool::message_id> bounced;
  for (const auto& event : events) {
    EXPECT_EQ(event.kind, event_kind::bounced_by_operator);
    EXPECT_EQ(event.error_text, "bounced by operator");
    EXPECT_EQ(event.job.last_status.klass, 5);
    bounced.insert(event.job.message);
  }
  EXPECT_EQ(bounced, (std::set<spool::message_id>{2, 3, 4}));
  // The job on the wire is bounced when its connection defers it...
  EXPECT_EQ(h.queue.deferred(in_flight.id, t0, temporary).status,
            defer_status::bounced_by_operator);
  EXPECT_EQ(h.queue.stats().jobs, 0u);
  EXPECT_EQ(h.queue.stats().bounced_by_operator, 4u);
  // ...but may still be delivered if the peer accepted it.
  h.add("example.org", 5, {0});
  h.queue.connection_closed(connection, t0);
  job_view later = take_one(h, "example.org", t0, connection);
  h.queue.bounce_all("example.org", t0);
  h.queue.delivered(later.id, t0);
  EXPECT_EQ(h.queue.stats().delivered, 1u);
}

TEST(scheduler, recovered_jobs_wait_for_their_stored_time) {
  harness h(plain_config());
  add_result added = h.add("example.org", 9, {2}, t0, t0 + 30'000, 3);
  ASSERT_EQ(added.status, add_status::added);
  EXPECT_EQ(h.info("example.org").scheduled, 1u);
  EXPECT_EQ(h.queue.next_wakeup_ms(), t0 + 30'000);
  EXPECT_TRUE(h.poll(t0 + 29'999).empty());
  connection_id connection;
  job_view job = take_one(h, "example.org", t0 + 30'000, connection);
  EXPECT_EQ(job.attempts, 3u);
  EXPECT_EQ(job.first_recipient, 2u);
  // Attempt 4 follows the schedule from where it stood.
  EXPECT_EQ(h.queue.deferred(job.id, t0 + 30'000, temporary).next_attempt_ms, t0 + 90'000);
}

TEST(scheduler, limits_refuse_and_forced_admission_does_not) {
  scheduler_config config = plain_config();
  config.jobs_max = 4;
  config.jobs_per_destination_max = 2;
  config.destinations_max = 2;
  harness h(config);
  EXPECT_EQ(h.add("a.example", 1, {0}).status, add_status::added);
  EXPECT_EQ(h.add("a.example", 2, {0}).status, add_status::added);
  EXPECT_EQ(h.add("a.example", 3, {0}).status, add_status::destination_full);
  EXPECT_EQ(h.queue.can_add("a.example", 1), add_status::destination_full);
  EXPECT_EQ(h.add("b.example", 4, {0}).status, add_status::added);
  EXPECT_EQ(h.add("c.example", 5, {0}).status, add_status::destinations_full);
  EXPECT_EQ(h.queue.can_add("c.example", 1), add_status::destinations_full);
  EXPECT_EQ(h.add("b.example", 5, {0}).status, add_status::added);
  EXPECT_EQ(h.add("b.example", 6, {0}).status, add_status::jobs_full);
  EXPECT_EQ(h.queue.can_add("a.example", 1), add_status::jobs_full);
  // A refused add leaves nothing behind (all or nothing).
  EXPECT_EQ(h.queue.stats().jobs, 4u);
  EXPECT_EQ(h.add("c.example", 7, {0}, t0, 0, 0, admission::forced).status, add_status::added);
  EXPECT_EQ(h.add("a.example", 8, {0}, t0, 0, 0, admission::forced).status, add_status::added);
  EXPECT_EQ(h.queue.stats().jobs, 6u);
  EXPECT_EQ(h.queue.stats().destinations, 3u);
}

TEST(scheduler, full_destination_table_forgets_an_idle_one) {
  scheduler_config config = plain_config();
  config.destinations_max = 1;
  harness h(config);
  h.add("a.example", 1, {0});
  connection_id connection;
  job_view job = take_one(h, "a.example", t0, connection);
  h.queue.delivered(job.id, t0);
  h.queue.connection_closed(connection, t0);
  EXPECT_EQ(h.add("b.example", 2, {0}).status, add_status::added);  // a.example made room
  destination_info info;
  EXPECT_FALSE(h.queue.inspect("a.example", info));
  EXPECT_EQ(h.queue.stats().destinations_forgotten, 1u);
}

TEST(scheduler, idle_destinations_are_forgotten_unless_backing_off) {
  scheduler_config config = plain_config();
  config.idle_forget_ms = 10'000;
  config.retry_delays_ms = {15'000};
  harness h(config);
  h.add("live.example", 1, {0});
  h.add("dead.example", 2, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 2u);
  for (const auto& request : requests) {
    take_result taken = h.queue.take_for_connection(request.connection, t0);
    ASSERT_EQ(taken.status, take_status::job);
    h.queue.delivered(taken.job.id, t0);
    if (request.name == "dead.example") h.queue.connection_failed(request.connection, t0, refused);
    else h.queue.connection_closed(request.connection, t0);
  }
  destination_info info;
  h.poll(t0 + 9'999);
  EXPECT_TRUE(h.queue.inspect("live.example", info));
  h.poll(t0 + 10'000);
  EXPECT_FALSE(h.queue.inspect("live.example", info));
  EXPECT_TRUE(h.queue.inspect("dead.example", info));  // still backing off: kept
  h.poll(t0 + 19'999);
  EXPECT_TRUE(h.queue.inspect("dead.example", info));
  h.poll(t0 + 20'000);  // rotated at +10 s, backoff over at +15 s, forgotten 10 s after
  EXPECT_FALSE(h.queue.inspect("dead.example", info));
  EXPECT_EQ(h.queue.stats().destinations, 0u);
}

// Forgetting an idle destination whose rate bucket is still refilling would give its next job
// a new, full bucket: two messages inside one rate period (ringmta-sim seed 31004703039256).
TEST(scheduler, an_idle_destination_is_kept_until_its_rate_bucket_is_full_again) {
  scheduler_config config = plain_config();
  config.idle_forget_ms = 4'000;
  config.limits.rate_messages = 1;
  config.limits.rate_period_ms = 10'000;
  config.limits.rate_burst = 1;
  harness h(config);
  h.add("slow.example", 1, {0});
  connection_id connection;
  h.queue.delivered(take_one(h, "slow.example", t0, connection).id, t0);
  h.queue.connection_closed(connection, t0);
  destination_info info;
  h.poll(t0 + 5'000);  // idle past idle_forget_ms, its one token not back before t0 + 10 s
  EXPECT_TRUE(h.queue.inspect("slow.example", info));
  h.add("slow.example", 2, {0});
  EXPECT_TRUE(h.poll(t0 + 9'000).empty());  // the rate holds across the idle spell
  EXPECT_EQ(h.poll(t0 + 10'000).size(), 1u);
}

TEST(scheduler, shard_connection_limit_starves_then_wakes) {
  scheduler_config config = plain_config();
  config.connections_max = 1;
  harness h(config);
  h.add("a.example", 1, {0});
  h.add("b.example", 2, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(h.poll(t0).empty());
  EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);  // no busy loop while starved
  take_result taken = h.queue.take_for_connection(requests[0].connection, t0);
  h.queue.delivered(taken.job.id, t0);
  h.queue.connection_closed(requests[0].connection, t0 + 7);
  EXPECT_EQ(h.queue.next_wakeup_ms(), t0 + 7);
  auto next = h.poll(t0 + 7);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_NE(next[0].name, requests[0].name);
}

TEST(scheduler, per_destination_limits_override) {
  harness h(plain_config());
  destination_limits narrow;
  narrow.connections_max = 1;
  h.queue.set_limits("narrow.example", narrow);
  for (spool::message_id id = 1; id <= 5; ++id) {
    h.add("narrow.example", id, {0});
    h.add("wide.example", id, {0});
  }
  auto requests = h.poll(t0);
  std::size_t narrow_count = 0;
  for (const auto& request : requests) narrow_count += request.name == "narrow.example";
  EXPECT_EQ(narrow_count, 1u);
  EXPECT_EQ(requests.size(), 6u);
  EXPECT_EQ(h.info("narrow.example").limits.connections_max, 1u);
  h.queue.clear_limits("narrow.example");
  EXPECT_EQ(h.info("narrow.example").limits.connections_max, 10u);
}

TEST(scheduler, failed_and_inspection) {
  harness h(plain_config());
  h.add("example.org", 1, {0});
  connection_id connection;
  job_view job = take_one(h, "example.org", t0, connection);
  destination_info info = h.info("example.org");
  EXPECT_EQ(info.in_flight, 1u);
  EXPECT_EQ(info.connections, 1u);
  h.queue.failed(job.id, t0, failure{550, status_code{5, 1, 1}, "550 5.1.1 no such user"});
  info = h.info("example.org");
  EXPECT_EQ(info.in_flight, 0u);
  EXPECT_EQ(info.last_error, "550 5.1.1 no such user");
  EXPECT_EQ(h.queue.stats().failed, 1u);
  std::size_t listed = 0;
  h.queue.list_destinations(10, [&](const destination_info& each) {
    EXPECT_EQ(each.name, "example.org");
    ++listed;
  });
  EXPECT_EQ(listed, 1u);
}

TEST(scheduler, error_texts_are_shared_and_bounded) {
  scheduler_config config = plain_config();
  config.error_texts_max = 2;
  config.limits.connections_max = 1;  // one connection takes all four jobs
  harness h(config);
  for (spool::message_id id = 1; id <= 4; ++id) h.add("example.org", id, {0});
  auto requests = h.poll(t0);
  std::vector<job_id> taken;
  for (int i = 0; i < 4; ++i) {
    take_result result = h.queue.take_for_connection(requests[0].connection, t0);
    ASSERT_EQ(result.status, take_status::job);
    taken.push_back(result.job.id);
  }
  const std::string texts[] = {"451 a", "451 b", "451 c", "451 a"};
  for (int i = 0; i < 4; ++i)
    h.queue.deferred(taken[i], t0, failure{451, status_code{4, 0, 0}, texts[i]});
  EXPECT_EQ(h.queue.stats().error_texts, 2u);  // "451 c" did not fit: that job keeps none
  std::vector<job_view> jobs;
  h.queue.list_jobs("example.org", 10, jobs);
  std::multiset<std::string> kept;
  for (const auto& job : jobs) kept.insert(std::string(job.last_error));
  EXPECT_EQ(kept, (std::multiset<std::string>{"", "451 a", "451 a", "451 b"}));
  std::string long_text(2000, 'x');
  EXPECT_EQ(h.queue.list_jobs("example.org", 2, jobs), 2u);  // bounded listing
}

TEST(scheduler, slots_are_reused_so_memory_stays_flat) {
  harness h(plain_config());
  std::int64_t now = t0;
  for (int round = 0; round < 1000; ++round) {
    h.add("example.org", static_cast<spool::message_id>(round + 1), {0, 1});
    auto requests = h.poll(now);
    for (const auto& request : requests) {
      take_result taken = h.queue.take_for_connection(request.connection, now);
      if (taken.status == take_status::job) h.queue.delivered(taken.job.id, now);
      h.queue.connection_closed(request.connection, now);
    }
    now += 10;
  }
  scheduler_stats stats = h.queue.stats();
  EXPECT_EQ(stats.jobs, 0u);
  EXPECT_EQ(stats.delivered, 1000u);
  EXPECT_EQ(stats.connections, 0u);
  EXPECT_LT(stats.memory_bytes, 16u * 1024);  // a few slots, reused 1000 times
}

// Destination (and site) records sit in chunks of 32 that never move (issue 15, docs/notes.md
// "Bytes per destination"): 5,000 destinations hold 5,024 records, where a doubling vector held
// 8,192 (~150 bytes more per destination at 240 bytes a record).
TEST(scheduler, destination_records_grow_by_chunks_not_by_doubling) {
  harness h(plain_config());
  constexpr int count = 5000;
  for (int i = 0; i < count; ++i)
    h.add("d" + std::to_string(i) + ".example", static_cast<spool::message_id>(i + 1), {0});
  scheduler_stats stats = h.queue.stats();
  EXPECT_EQ(stats.destinations, static_cast<std::uint64_t>(count));
  const double per_destination = static_cast<double>(stats.memory_bytes) / count;
  std::printf("memory per destination with one job: %.0f bytes\n", per_destination);
  EXPECT_LT(per_destination, 480.0);
  h.queue.suspend("d4999.example", t0);  // found by name, rescheduled by its own slot
  EXPECT_TRUE(h.info("d4999.example").suspended);
  EXPECT_FALSE(h.info("d4998.example").suspended);
}

// Job records sit in fixed chunks with the free ones on a stack: a freed slot is reused
// last-freed first (as the free vector did: slot numbers break ties in the heaps, so event
// order depends on it), with its generation advanced; then new slots follow the used ones.
TEST(scheduler, freed_job_slots_are_reused_last_freed_first) {
  harness h(plain_config());
  for (spool::message_id id = 1; id <= 3; ++id) h.add("example.org", id, {0}, t0, t0 + 60'000);
  const auto slot_of = [&](spool::message_id message) {
    std::vector<job_view> jobs;
    h.queue.list_jobs("example.org", 100, jobs);
    for (const job_view& job : jobs)
      if (job.message == message) return job.id;
    ADD_FAILURE() << "no job of message " << message;
    return job_id{};
  };
  const job_id first = slot_of(1);
  const job_id third = slot_of(3);
  EXPECT_TRUE(h.queue.remove_message("example.org", 1, t0).found);
  EXPECT_TRUE(h.queue.remove_message("example.org", 3, t0).found);
  for (spool::message_id id = 4; id <= 6; ++id) h.add("example.org", id, {0}, t0, t0 + 60'000);
  EXPECT_EQ(slot_of(4).slot, third.slot);
  EXPECT_EQ(slot_of(4).generation, third.generation + 1);
  EXPECT_EQ(slot_of(5).slot, first.slot);
  EXPECT_EQ(slot_of(5).generation, first.generation + 1);
  EXPECT_EQ(slot_of(6).slot, 3u);  // a new slot after the three ever used
}

// A job record keeps its next attempt in 43 bits (ms, until the year 2248): a later time is
// clamped there in the job's view, while the heap keeps the exact time, so the wake-up and
// the destination's next attempt are exact and the order of far times is kept.
TEST(scheduler, a_next_attempt_past_the_records_range_keeps_exact_wake_ups) {
  harness h(plain_config());
  constexpr std::int64_t record_max = (std::int64_t{1} << 43) - 1;
  h.add("example.org", 1, {0}, t0, record_max + 2000);
  h.add("example.org", 2, {0}, t0, record_max + 1000);
  EXPECT_EQ(h.queue.next_wakeup_ms(), record_max + 1000);
  EXPECT_EQ(h.info("example.org").next_attempt_ms, record_max + 1000);
  std::vector<job_view> jobs;
  h.queue.list_jobs("example.org", 10, jobs);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].message, 2u);  // heap order: the exact times
  EXPECT_EQ(jobs[0].next_attempt_ms, record_max);
  EXPECT_EQ(jobs[1].next_attempt_ms, record_max);
  EXPECT_EQ(h.poll(record_max + 1000).size(), 1u);
  EXPECT_EQ(h.info("example.org").ready, 1u);
}

TEST(scheduler, bytes_per_queued_job) {
  harness h(plain_config());
  constexpr int count = 200'000;
  for (int i = 0; i < count; ++i) {
    std::string name = "d" + std::to_string(i % 1000) + ".example";
    // Half ready, half scheduled (recovered with a later attempt time).
    h.add(name, static_cast<spool::message_id>(i + 1), {0}, t0, i % 2 ? t0 + 60'000 : 0);
  }
  scheduler_stats stats = h.queue.stats();
  EXPECT_EQ(stats.jobs, static_cast<std::uint64_t>(count));
  double per_job = static_cast<double>(stats.memory_bytes) / count;
  std::printf("scheduler memory: %.1f bytes per job (%d jobs, 1000 destinations)\n", per_job,
              count);
  EXPECT_LT(per_job, 64.0);  // 48 + 6 (half of a 12-byte heap entry) + growth slack
}

// A ready job costs its record alone (no heap entry): 48 bytes (issue 15: was 56, whose
// first_attempt_seconds nobody read), plus the 1,000 destinations' share (~2 bytes here).
TEST(scheduler, a_ready_job_costs_its_48_byte_record) {
  harness h(plain_config());
  constexpr int count = 200'000;
  for (int i = 0; i < count; ++i)
    h.add("d" + std::to_string(i % 1000) + ".example", static_cast<spool::message_id>(i + 1),
          {0});
  const scheduler_stats stats = h.queue.stats();
  EXPECT_EQ(stats.ready, static_cast<std::uint64_t>(count));
  const double per_job = static_cast<double>(stats.memory_bytes) / count;
  std::printf("scheduler memory: %.1f bytes per ready job\n", per_job);
  EXPECT_LT(per_job, 52.0);
}

}  // namespace
}  // namespace ringmta::queue

namespace ringmta::queue {
namespace {

// Issue 9: after a restart, several connections to a dead destination failed together and
// each failure reported every job of the destination again (three `deferred` records per
// job, attempts unchanged). A destination-wide deferral yields exactly one `deferred` event
// per job it attempted, with the advanced attempt count; later failures during the backoff
// yield none.
TEST(scheduler, destination_failures_report_each_attempted_job_once) {
  scheduler_config config = plain_config();
  harness h(config);
  h.add("dead.example", 1, {0});
  h.add("dead.example", 2, {0});
  h.add("dead.example", 3, {0});
  auto requests = h.poll(t0 + 10);
  ASSERT_GE(requests.size(), 2u);  // several connections at once, as after a restart
  std::vector<harness::event_copy> events;
  for (const auto& request : requests) {
    h.queue.connection_failed(request.connection, t0 + 20, refused);
    auto more = h.events();
    events.insert(events.end(), more.begin(), more.end());
  }
  // Issue 15: the connections tried no job; one failure counts one attempt, for the oldest.
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, event_kind::deferred);
  EXPECT_EQ(events[0].job.message, 1u);
  EXPECT_EQ(events[0].job.attempts, 1u);
  EXPECT_GT(events[0].job.next_attempt_ms, t0 + 20);
  EXPECT_EQ(h.info("dead.example").scheduled, 3u);
}

}  // namespace
}  // namespace ringmta::queue

namespace ringmta::queue {
namespace {

// Issue 15: at a restart every destination was due at once, its MX lookups failed under the
// flood, and each failed connection deferred every ready job of the destination (one log
// record and one spool mark each: 1.97 M deferrals for 116 k deliveries). A connection that
// failed before it took a job now costs one deferral (the probe's job); the rest wait on the
// destination unattempted, and go out once a probe connects.
TEST(scheduler, dns_failure_defers_one_job_and_the_rest_wait_for_the_probe) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 4;
  harness h(config);
  constexpr std::uint32_t jobs = 500;
  for (std::uint32_t id = 1; id <= jobs; ++id) h.add("storm.example", id, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 4u);
  const failure dns{0, status_code{4, 4, 3}, "MX lookup for storm.example: server failure"};
  h.queue.connection_failed(requests[0].connection, t0 + 5, dns);
  auto events = h.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, event_kind::deferred);
  EXPECT_EQ(events[0].job.message, 1u);
  EXPECT_EQ(events[0].error_text, dns.text);
  for (std::size_t i = 1; i < requests.size(); ++i)  // opened together, failing together
    h.queue.connection_failed(requests[i].connection, t0 + 6, dns);
  EXPECT_TRUE(h.events().empty());
  destination_info info = h.info("storm.example");
  EXPECT_EQ(info.ready, 0u);
  EXPECT_EQ(info.scheduled, jobs);
  EXPECT_TRUE(info.probing);
  std::vector<job_view> listed;
  h.queue.list_jobs("storm.example", jobs, listed);
  std::uint32_t attempts = 0;
  for (const job_view& job : listed) {
    EXPECT_EQ(job.next_attempt_ms, info.backoff_until_ms);  // all wait for the one time
    attempts += job.attempts;
  }
  EXPECT_EQ(attempts, 1u);
  // The probe connects: every job goes out, none deferred again.
  std::int64_t now = h.queue.next_wakeup_ms();
  EXPECT_EQ(now, info.backoff_until_ms);
  requests = h.poll(now);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_TRUE(requests[0].probe);
  std::vector<connection_id> open;
  for (const auto& request : requests) open.push_back(request.connection);
  std::uint32_t delivered = 0;
  for (int round = 0; round < 1000 && !open.empty(); ++round) {
    for (std::size_t i = 0; i < open.size();) {
      const take_result taken = h.queue.take_for_connection(open[i], now);
      if (taken.status == take_status::job) {
        h.queue.delivered(taken.job.id, now);
        ++delivered;
        ++i;
        continue;
      }
      h.queue.connection_closed(open[i], now);
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
    }
    for (const auto& request : h.poll(now)) open.push_back(request.connection);
  }
  EXPECT_EQ(delivered, jobs);
  EXPECT_TRUE(h.events().empty());
  EXPECT_EQ(h.queue.stats().jobs, 0u);
  EXPECT_EQ(h.queue.stats().delivered, jobs);
}

// After a restart the destination-wide backoff continues the retry schedule where the jobs'
// attempts left it, instead of starting over at the first delay.
TEST(scheduler, recovered_attempts_continue_the_backoff_schedule) {
  scheduler_config config = plain_config();
  config.jitter_permille = 0;
  config.retry_delays_ms = {1000, 2000, 4000, 8000};
  harness h(config);
  h.add("dead.example", 1, {0}, t0, /*not_before=*/0, /*attempts=*/2);
  auto requests = h.poll(t0 + 10);
  ASSERT_EQ(requests.size(), 1u);
  h.queue.connection_failed(requests[0].connection, t0 + 10, refused);
  auto events = h.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].job.attempts, 3u);
  EXPECT_EQ(h.info("dead.example").backoff_until_ms, t0 + 10 + 4000);  // third failure's delay
}

}  // namespace
}  // namespace ringmta::queue

// ---- per-message operator actions (scheduler_message.cc)

namespace ringmta::queue {
namespace {

TEST(scheduler_message, hold_keeps_jobs_out_until_release) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  config.lifetime_max_ms = 60'000;
  harness h(config);
  h.add("example.org", 1, {0});
  h.add("example.org", 1, {70});  // a second job of message 1 (another recipient window)
  h.add("example.org", 2, {0});
  h.add("example.org", 3, {0}, t0, t0 + 5'000);
  auto held = h.queue.hold_message("example.org", 1, t0);
  EXPECT_TRUE(held.found);
  EXPECT_EQ(held.jobs, 2u);
  EXPECT_EQ(h.queue.hold_message("example.org", 3, t0).jobs, 1u);  // scheduled jobs too
  EXPECT_EQ(h.info("example.org").held, 3u);
  EXPECT_EQ(h.info("example.org").ready, 1u);
  EXPECT_EQ(h.info("example.org").scheduled, 0u);
  connection_id connection;
  job_view job = take_one(h, "example.org", t0, connection);
  EXPECT_EQ(job.message, 2u);
  h.queue.delivered(job.id, t0);
  EXPECT_EQ(h.queue.take_for_connection(connection, t0).status, take_status::none);
  h.queue.connection_closed(connection, t0);
  // Held jobs wake nothing, never expire, and keep their destination alive.
  EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);
  EXPECT_TRUE(h.poll(t0 + 10 * 86'400'000LL).empty());
  EXPECT_TRUE(h.events().empty());
  EXPECT_EQ(h.info("example.org").held, 3u);
  std::vector<job_view> listed;
  h.queue.list_jobs("example.org", 10, listed);
  ASSERT_EQ(listed.size(), 3u);
  for (const auto& j : listed) EXPECT_TRUE(j.held);
  // Release: ready at once, taken in order.
  const std::int64_t later = t0 + 10 * 86'400'000LL;
  auto released = h.queue.release_message("example.org", 1, later);
  EXPECT_TRUE(released.found);
  EXPECT_EQ(released.jobs, 2u);
  EXPECT_EQ(h.info("example.org").ready, 2u);
  EXPECT_EQ(h.info("example.org").held, 1u);
  job = take_one(h, "example.org", later, connection);
  EXPECT_EQ(job.message, 1u);
  EXPECT_FALSE(job.held);
}

// The relay keys jobs by its message's address (message_key) and asks has_message before it
// reads through a key an operator action carries: true in every state a job can be in, false
// once the last job of the key at that destination is gone, and only at that destination.
TEST(scheduler_message, has_message_sees_a_key_in_every_state_until_its_last_job_leaves) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  harness h(config);
  // Keys as the relay makes them: addresses, any 64-bit value, compared whole.
  const message_key flying = 0x00007f12'34560008ull, ready = 0x00007f12'34560010ull,
                    scheduled = 0x00007f12'34560018ull, held = 0xffffffff'fffffff8ull;
  h.add("example.org", flying, {0});
  h.add("example.org", ready, {0});
  h.add("example.org", scheduled, {0}, t0, t0 + 5'000);
  h.add("example.org", held, {0});
  h.queue.hold_message("example.org", held, t0);
  connection_id connection;
  const job_view job = take_one(h, "example.org", t0, connection);
  ASSERT_EQ(job.message, flying);
  h.add("example.net", 0x00007f12'34560020ull, {0});
  for (const message_key key : {flying, ready, scheduled, held})
    EXPECT_TRUE(h.queue.has_message("example.org", key)) << std::hex << key;
  EXPECT_FALSE(h.queue.has_message("example.org", flying + 0x1'00000000ull));  // no truncation
  EXPECT_FALSE(h.queue.has_message("example.org", 0x00007f12'34560020ull));    // other place
  EXPECT_FALSE(h.queue.has_message("nowhere.example", ready));
  h.queue.delivered(job.id, t0 + 1);
  EXPECT_FALSE(h.queue.has_message("example.org", flying));
  h.queue.remove_message("example.org", held, t0 + 2);
  h.queue.remove_message("example.org", scheduled, t0 + 2);
  EXPECT_EQ(h.events().size(), 2u);
  EXPECT_FALSE(h.queue.has_message("example.org", held));
  EXPECT_FALSE(h.queue.has_message("example.org", scheduled));
  EXPECT_TRUE(h.queue.has_message("example.org", ready));
}

TEST(scheduler_message, a_job_in_flight_finishes_then_the_action_applies) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  harness h(config);
  h.add("example.org", 1, {0});
  connection_id connection;
  job_view job = take_one(h, "example.org", t0, connection);
  auto held = h.queue.hold_message("example.org", 1, t0);
  EXPECT_TRUE(held.found);
  EXPECT_EQ(held.jobs, 0u);
  EXPECT_EQ(held.in_flight, 1u);
  // The transaction deferred: the job is held, not scheduled, and not tried again.
  defer_result deferred = h.queue.deferred(job.id, t0 + 10, temporary);
  EXPECT_EQ(deferred.status, defer_status::held);
  EXPECT_EQ(deferred.attempts, 1u);
  EXPECT_EQ(h.info("example.org").held, 1u);
  EXPECT_EQ(h.info("example.org").scheduled, 0u);
  EXPECT_EQ(h.queue.take_for_connection(connection, t0 + 10).status, take_status::none);
  // The same action on a delivered transaction: the delivery stands, nothing is held.
  h.add("example.org", 2, {0});
  job = h.queue.take_for_connection(connection, t0 + 20).job;
  ASSERT_EQ(job.message, 2u);
  h.queue.hold_message("example.org", 2, t0 + 20);
  h.queue.delivered(job.id, t0 + 30);
  EXPECT_EQ(h.info("example.org").held, 1u);
  EXPECT_EQ(h.queue.stats().delivered, 1u);
  // A release before the transaction ends cancels the pending hold.
  h.add("example.org", 3, {0});
  job = h.queue.take_for_connection(connection, t0 + 40).job;
  ASSERT_EQ(job.message, 3u);
  h.queue.hold_message("example.org", 3, t0 + 40);
  EXPECT_EQ(h.queue.release_message("example.org", 3, t0 + 41).in_flight, 1u);
  EXPECT_EQ(h.queue.deferred(job.id, t0 + 50, temporary).status, defer_status::scheduled);
}

TEST(scheduler_message, remove_and_bounce_hand_back_only_that_message) {
  scheduler_config config = plain_config();
  config.limits.connections_max = 1;
  harness h(config);
  h.add("example.org", 1, {0});                 // in flight below
  h.add("example.org", 1, {70});                // ready
  h.add("example.org", 1, {140}, t0, t0 + 5000);  // scheduled
  h.add("example.org", 2, {0});
  h.add("example.org", 3, {0});
  h.queue.hold_message("example.org", 3, t0);
  connection_id connection;
  job_view flying = take_one(h, "example.org", t0, connection);
  ASSERT_EQ(flying.message, 1u);
  auto removed = h.queue.remove_message("example.org", 1, t0);
  EXPECT_EQ(removed.jobs, 2u);
  EXPECT_EQ(removed.in_flight, 1u);
  auto events = h.events();
  ASSERT_EQ(events.size(), 2u);
  for (const auto& event : events) {
    EXPECT_EQ(event.kind, event_kind::removed_by_operator);
    EXPECT_EQ(event.job.message, 1u);
    EXPECT_EQ(event.error_text, "deleted by the operator");
  }
  EXPECT_EQ(h.queue.deferred(flying.id, t0 + 1, temporary).status,
            defer_status::removed_by_operator);
  // Bounce of a held message: its job leaves as a bounce; message 2 is untouched.
  auto bounced = h.queue.bounce_message("example.org", 3, t0 + 2);
  EXPECT_EQ(bounced.jobs, 1u);
  events = h.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, event_kind::bounced_by_operator);
  EXPECT_EQ(events[0].job.message, 3u);
  EXPECT_EQ(events[0].error_text, "bounced by the operator");
  EXPECT_EQ(h.queue.stats().jobs, 1u);
  EXPECT_EQ(h.queue.stats().removed_by_operator, 3u);
  EXPECT_EQ(h.queue.stats().bounced_by_operator, 1u);
  // A bounce of a job in flight that is then delivered: delivered, never bounced too.
  job_view two = h.queue.take_for_connection(connection, t0 + 3).job;
  ASSERT_EQ(two.message, 2u);
  EXPECT_EQ(h.queue.bounce_message("example.org", 2, t0 + 3).in_flight, 1u);
  h.queue.delivered(two.id, t0 + 4);
  EXPECT_TRUE(h.events().empty());
  EXPECT_EQ(h.queue.stats().delivered, 1u);
  // Unknown message or destination: nothing found.
  EXPECT_FALSE(h.queue.remove_message("example.org", 99, t0).found);
  EXPECT_FALSE(h.queue.hold_message("nowhere.example", 2, t0).found);
}

TEST(scheduler_message, retry_makes_one_message_ready_and_lifts_the_backoff) {
  scheduler_config config = plain_config();
  harness h(config);
  h.add("example.org", 1, {0}, t0, t0 + 60'000);
  h.add("example.org", 2, {0}, t0, t0 + 60'000);
  auto retried = h.queue.retry_message("example.org", 2, t0);
  EXPECT_TRUE(retried.found);
  EXPECT_EQ(retried.jobs, 1u);
  EXPECT_EQ(h.info("example.org").ready, 1u);
  EXPECT_EQ(h.info("example.org").scheduled, 1u);
  connection_id connection;
  EXPECT_EQ(take_one(h, "example.org", t0, connection).message, 2u);
  // Held jobs stay held.
  h.queue.hold_message("example.org", 1, t0);
  EXPECT_EQ(h.queue.retry_message("example.org", 1, t0).jobs, 0u);
  EXPECT_EQ(h.info("example.org").held, 1u);
}

TEST(scheduler_message, recovered_held_jobs_are_held_at_once) {
  harness h(plain_config());
  std::vector<std::uint16_t> recipients = {0, 1};
  job_spec spec;
  spec.message = 7;
  spec.received_seconds = t0_seconds;
  spec.recipients = recipients;
  spec.attempts = 2;
  spec.not_before_ms = t0 + 1000;
  spec.held = true;
  ASSERT_EQ(h.queue.add("example.org", spec, t0, admission::forced).status, add_status::added);
  EXPECT_EQ(h.info("example.org").held, 1u);
  EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);
  EXPECT_TRUE(h.poll(t0 + 5000).empty());
  EXPECT_EQ(h.queue.release_message("example.org", 7, t0 + 5000).jobs, 1u);
  connection_id connection;
  job_view job = take_one(h, "example.org", t0 + 5000, connection);
  EXPECT_EQ(job.attempts, 2u);
  EXPECT_EQ(job.recipient_count(), 2u);
}

}  // namespace
}  // namespace ringmta::queue

namespace ringmta::queue {
namespace {

// Issue 15 (backlog at scale): a dead destination holding many jobs costs one attempt per
// retry, not one per job. After the first failure (every ready job deferred once), each
// probe takes one job; when it fails only that job is deferred (one event), the others move
// to the next shared time unattempted, and the wake-ups are one per destination.
TEST(scheduler, a_probing_destination_defers_one_job_per_retry) {
  scheduler_config config = plain_config();
  config.retry_delays_ms = {1000};
  harness h(config);
  constexpr int jobs = 100;
  for (int id = 1; id <= jobs; ++id)
    h.add("dead.example", static_cast<spool::message_id>(id), {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), config.limits.connections_max);
  for (const auto& request : requests) h.queue.connection_failed(request.connection, t0, refused);
  EXPECT_EQ(h.events().size(), 1u);  // the first failure: one attempt, the rest wait
  std::int64_t now = t0;
  for (int round = 0; round < 5; ++round) {
    now = h.queue.next_wakeup_ms();
    EXPECT_EQ(now, t0 + 1000 * (round + 1));
    requests = h.poll(now);
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_TRUE(requests[0].probe);
    destination_info info = h.info("dead.example");
    EXPECT_EQ(info.ready, 1u);  // the probe's job; the rest wait on the destination
    EXPECT_EQ(info.scheduled, static_cast<std::uint32_t>(jobs - 1));
    EXPECT_TRUE(h.poll(now).empty());
    EXPECT_EQ(h.queue.next_wakeup_ms(), no_wakeup_ms);  // nothing until the probe ends
    h.queue.connection_failed(requests[0].connection, now, refused);
    auto events = h.events();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, event_kind::deferred);
    // (time, slot) order: the same job is the probe each time; its attempts count up.
    EXPECT_EQ(events[0].job.message, 1u);
    EXPECT_EQ(events[0].job.attempts, 2u + static_cast<unsigned>(round));
  }
  std::vector<job_view> listed;
  h.queue.list_jobs("dead.example", jobs, listed);
  ASSERT_EQ(listed.size(), static_cast<std::size_t>(jobs));
  std::uint32_t attempts = 0;
  for (const job_view& job : listed) {
    EXPECT_EQ(job.next_attempt_ms, now + 1000);  // every job shares the destination's time
    attempts += job.attempts;
  }
  EXPECT_EQ(attempts, 1u + 5u);  // 1 at first, then 1 a round
  // The probe works: every due job goes out on the open connections.
  requests = h.poll(now + 1000);
  ASSERT_EQ(requests.size(), 1u);
  ASSERT_EQ(h.queue.take_for_connection(requests[0].connection, now + 1000).status,
            take_status::job);
  EXPECT_EQ(h.info("dead.example").ready, static_cast<std::uint32_t>(jobs - 1));
}

// The jobs that wait on a probing destination still expire and still get their delay
// warning: both are checked at each failure of the probe.
TEST(scheduler, jobs_waiting_on_a_probe_expire_and_warn) {
  scheduler_config config = plain_config();
  config.retry_delays_ms = {1000};
  config.lifetime_max_ms = 10'000;
  config.delay_warning_ms = 2'500;
  harness h(config);
  h.add("dead.example", 1, {0});
  auto requests = h.poll(t0);
  ASSERT_EQ(requests.size(), 1u);
  h.queue.connection_failed(requests[0].connection, t0, refused);
  ASSERT_EQ(h.events().size(), 1u);
  h.add("dead.example", 2, {0}, t0 + 500, t0 + 600);  // arrives during the backoff
  std::set<std::pair<spool::message_id, event_kind>> seen;
  std::int64_t now = t0;
  for (int round = 0; round < 20 && h.queue.stats().jobs > 0; ++round) {
    now = h.queue.next_wakeup_ms();
    requests = h.poll(now);  // none at t0 + 600: job 2 is made ready, the backoff runs on
    ASSERT_LE(requests.size(), 1u);
    if (requests.empty()) continue;
    h.queue.connection_failed(requests[0].connection, now, refused);
    for (const auto& event : h.events()) seen.insert({event.job.message, event.kind});
  }
  EXPECT_EQ(h.queue.stats().jobs, 0u);
  EXPECT_LE(now, t0 + 10'000 + 1000);  // at most one backoff delay past the lifetime
  for (spool::message_id id : {1u, 2u}) {
    EXPECT_TRUE(seen.contains({id, event_kind::expired})) << id;
    EXPECT_TRUE(seen.contains({id, event_kind::delay_warning})) << id;
  }
}

// Issue 15 drain fairness: four destinations with 30 jobs each and room for two connections
// in the whole shard. A connection that has had its turn (turn_messages) closes while others
// wait, and the slot goes to the longest waiting destination: each has its first delivery
// within the first four turns (the first had both slots before anyone waited; then one
// connection each while others wait), and the shard's limit holds throughout. Without turns
// the first destinations kept their connections until empty (the fourth waited 90 messages).
std::vector<std::size_t> first_delivery_order(std::uint32_t turn_messages) {
  scheduler_config config = plain_config();
  config.connections_max = 2;
  config.limits.connections_max = 2;
  config.turn_messages = turn_messages;
  harness h(config);
  const std::vector<std::string> names = {"a.test", "b.test", "c.test", "d.test"};
  for (spool::message_id id = 1; id <= 120; ++id)
    EXPECT_EQ(h.add(names[id % 4], id, {0}).status, add_status::added);
  std::vector<std::size_t> first(names.size(), 0);  // 1-based delivery count at the first
  std::size_t delivered = 0;
  for (int round = 0; round < 1000 && delivered < 120; ++round) {
    const auto opened = h.poll(t0);
    EXPECT_LE(h.queue.stats().connections, 2u);
    for (const auto& request : opened) {
      for (;;) {
        const auto taken = h.queue.take_for_connection(request.connection, t0);
        if (taken.status != take_status::job) break;
        ++delivered;
        const auto index = static_cast<std::size_t>(
            std::find(names.begin(), names.end(), request.name) - names.begin());
        if (first[index] == 0) first[index] = delivered;
        h.queue.delivered(taken.job.id, t0);
      }
      h.queue.connection_closed(request.connection, t0);
    }
  }
  EXPECT_EQ(delivered, 120u);
  return first;
}

TEST(scheduler, drain_hands_the_connection_slot_on_after_a_turn) {
  for (const std::size_t at : first_delivery_order(10)) EXPECT_LE(at, 4u * 10 + 1);
  // The same drain without turns: the last destination waits for most of it.
  const auto unfair = first_delivery_order(0);
  EXPECT_GT(*std::max_element(unfair.begin(), unfair.end()), 60u);
}

// Issue 15 idle backlog: with probe_backoff_max_ms a dead destination's probes thin out,
// doubling from the first retry delay (Postfix's minimal/maximal_backoff_time); the wait is
// never shorter than the schedule's and ends at the first expiry or delay warning, so the
// bounce is not delayed. Probes go at +0, +1, +3, +7 s; the next wait (8 s) would pass the
// 10 s lifetime and is cut to it: the probe at +10 s expires the job.
TEST(scheduler, probe_backoff_doubles_to_its_cap_but_not_past_expiry) {
  scheduler_config config = plain_config();
  config.retry_delays_ms = {1000};
  config.probe_backoff_max_ms = 8000;
  config.lifetime_max_ms = 10'000;
  harness h(config);
  h.add("dead.example", 1, {0});
  std::vector<std::int64_t> probes;
  std::int64_t now = t0;
  std::vector<harness::event_copy> events;
  for (int round = 0; round < 10 && h.queue.stats().jobs != 0; ++round) {
    const auto requests = h.poll(now);
    ASSERT_EQ(requests.size(), 1u) << "at +" << now - t0;
    probes.push_back(now - t0);
    h.queue.connection_failed(requests[0].connection, now, refused);
    for (auto& event : h.events()) events.push_back(event);
    now = h.queue.next_wakeup_ms();
    if (now == no_wakeup_ms) break;
  }
  EXPECT_EQ(probes, (std::vector<std::int64_t>{0, 1000, 3000, 7000, 10'000}));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, event_kind::expired);
  // Without an expiry in reach the wait stops growing at the cap; the schedule's own delay
  // wins when it is longer.
  config.lifetime_max_ms = 86'400'000;
  config.retry_delays_ms = {1000, 1000, 1000, 1000, 1000, 20'000};
  harness capped(config);
  capped.add("dead.example", 1, {0});
  std::vector<std::int64_t> waits;
  now = t0;
  for (int round = 0; round < 7; ++round) {
    const auto requests = capped.poll(now);
    ASSERT_EQ(requests.size(), 1u);
    capped.queue.connection_failed(requests[0].connection, now, refused);
    waits.push_back(capped.queue.next_wakeup_ms() - now);
    now = capped.queue.next_wakeup_ms();
  }
  EXPECT_EQ(waits, (std::vector<std::int64_t>{1000, 2000, 4000, 8000, 8000, 20'000, 20'000}));
}

}  // namespace
}  // namespace ringmta::queue
