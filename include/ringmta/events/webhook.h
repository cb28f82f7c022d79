// events::webhook: the thread that posts the event log to the operator's HTTP endpoint
// (--events-url), batched, at least once (events/event_log.h holds the durable cursor).
//
// One POST per batch: a JSON array of records (Content-Type: application/json), at most
// --events-batch-size records; a partial batch waits at most --events-interval for more.
// X-Ringmta-Batch names the batch by where it starts in the event log ("SEGMENT-OFFSET"): a
// batch sent again after a failure or a restart carries the same key, so a receiver can drop
// duplicates. A 2xx answer acknowledges the batch (the cursor moves past it, durably); any
// other answer, a refused connection or a timeout (--events-timeout, for connect, each read
// and each write: a stalled endpoint) is retried after an exponential backoff (0.5 s doubling
// up to --events-retry-max), the same batch again. While the endpoint fails, records pile up
// on disk up to --events-max-backlog; then the oldest are dropped and counted.
//
// Never on a shard, never blocks a shard: shards only write log records, as always.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "ringmta/admin/log_writer.h"
#include "ringmta/admin/metrics.h"

namespace ringmta::events {

class event_log;
struct batch;

// "http://host:port/path" or "https://…": the part httplib's client takes, and the path.
struct endpoint_url {
  std::string origin;  // "http://127.0.0.1:8080"
  std::string path;    // "/hook" ("/" when none)
  bool https = false;
};
// nullopt for anything but http(s)://HOST[:PORT][/PATH] (HOST may be [IPv6]).
std::optional<endpoint_url> parse_endpoint_url(std::string_view url);

struct webhook_config {
  endpoint_url url;
  std::uint32_t batch_size = 100;
  std::uint32_t interval_ms = 1000;
  std::uint32_t timeout_ms = 10'000;
  std::uint32_t retry_max_ms = 60'000;
  std::size_t batch_bytes_max = 4u << 20;  // a batch stops growing past this (JSON bytes)
  std::string authorization;  // an Authorization header value; empty: none
};

struct webhook_counters {
  admin::counter batches_sent;
  admin::counter records_sent;
  admin::counter failures;  // posts that failed (status, connection, timeout)
  admin::gauge failing;     // 1 while the endpoint fails
};

class webhook {
 public:
  // `writer` gets the webhook's own records (events_failed, events_recovered,
  // events_dropped); it must outlive stop().
  webhook(std::shared_ptr<event_log> log, admin::log_writer& writer, webhook_config config);
  ~webhook();  // stop()
  webhook(const webhook&) = delete;
  webhook& operator=(const webhook&) = delete;

  void start();
  // Ends the thread: an interrupted post counts as failed (the batch is sent after restart).
  void stop() noexcept;
  void update(webhook_config config);  // reload: taken before the next post

  const webhook_counters& counters() const noexcept { return _counters; }

 private:
  void run() noexcept;
  bool post(const batch& sending, const webhook_config& config, std::string& failure);
  void backoff(std::chrono::milliseconds delay) noexcept;
  void report_dropped() noexcept;

  std::shared_ptr<event_log> _log;
  admin::log_writer& _writer;
  std::mutex _mutex;  // _config, _stopping, _client
  std::condition_variable _stop_signal;
  webhook_config _config;
  bool _config_changed = false;
  bool _stopping = false;
  std::shared_ptr<void> _client;  // httplib::Client (kept out of this header)
  // What _client was built for: a post with another origin or timeout builds a new one (an
  // update() between run()'s copy of the configuration and the post must not leave the old
  // host with the new path).
  std::string _client_origin;
  std::uint32_t _client_timeout_ms = 0;
  webhook_counters _counters;
  std::thread _thread;
};

}  // namespace ringmta::events
