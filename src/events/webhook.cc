// The webhook thread. See events/webhook.h.
#include "ringmta/events/webhook.h"

#include <algorithm>

#include <fmt/format.h>
#include <httplib.h>

#include "ringmta/core/assert.h"
#include "ringmta/events/event_log.h"

namespace ringmta::events {

using namespace std::chrono_literals;

std::optional<endpoint_url> parse_endpoint_url(std::string_view url) {
  endpoint_url out;
  std::string_view rest;
  if (url.starts_with("http://")) rest = url.substr(7);
  else if (url.starts_with("https://")) rest = url.substr(8), out.https = true;
  else return std::nullopt;
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  out.path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string_view host = authority, port;
  if (authority.starts_with('[')) {  // RFC 3986 §3.2.2: [IPv6]
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(0, close + 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(':')) return std::nullopt;
    if (!after.empty()) port = after.substr(1);
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  const auto bad = [](char c) {
    return static_cast<unsigned char>(c) <= ' ' || c == '@' || c == '?' || c == '#';
  };
  if (host.empty() || host == "[]" || std::any_of(authority.begin(), authority.end(), bad) ||
      std::any_of(out.path.begin(), out.path.end(), [](char c) {
        return static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
      }))
    return std::nullopt;
  if (!port.empty() || authority.ends_with(':')) {
    unsigned value = 0;
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        (value = static_cast<unsigned>(std::stoul(std::string(port)))) == 0 || value > 65535)
      return std::nullopt;
  }
  out.origin = std::string(url.substr(0, url.size() - rest.size())) + std::string(authority);
  return out;
}

webhook::webhook(std::shared_ptr<event_log> log, admin::log_writer& writer,
                 webhook_config config)
    : _log(std::move(log)), _writer(writer), _config(std::move(config)) {
  RINGMTA_ASSERT(_log != nullptr && _config.batch_size > 0);
}

webhook::~webhook() { stop(); }

void webhook::start() {
  RINGMTA_ASSERT(!_thread.joinable());
  _thread = std::thread([this] { run(); });
}

void webhook::stop() noexcept {
  std::shared_ptr<void> client;
  {
    std::lock_guard lock(_mutex);
    _stopping = true;
    client = _client;
  }
  _stop_signal.notify_all();
  _log->interrupt();
  if (client) static_cast<httplib::Client*>(client.get())->stop();  // a post in progress ends
  if (_thread.joinable()) _thread.join();
}

void webhook::update(webhook_config config) {
  {
    std::lock_guard lock(_mutex);
    _config = std::move(config);
    _config_changed = true;
  }
  _stop_signal.notify_all();  // a backoff ends early: the new endpoint may be up
}

void webhook::backoff(std::chrono::milliseconds delay) noexcept {
  std::unique_lock lock(_mutex);
  _stop_signal.wait_for(lock, delay, [&] { return _stopping || _config_changed; });
}

void webhook::report_dropped() noexcept {
  const std::uint64_t dropped = _log->take_dropped_report();
  if (dropped == 0) return;
  _writer.post_record("events_dropped", [&](admin::log_record& r) {
    r.field("records", dropped).field("reason", "events.max_backlog reached: oldest dropped");
  });
}

bool webhook::post(const batch& sending, const webhook_config& config, std::string& failure) {
  std::shared_ptr<httplib::Client> client;
  {
    std::lock_guard lock(_mutex);
    if (_stopping) return false;
    if (!_client || _client_origin != config.url.origin ||
        _client_timeout_ms != config.timeout_ms) {
      auto made = std::make_shared<httplib::Client>(config.url.origin);
      const auto seconds = static_cast<time_t>(config.timeout_ms / 1000);
      const auto micros = static_cast<time_t>(config.timeout_ms % 1000 * 1000);
      made->set_connection_timeout(seconds, micros);
      made->set_read_timeout(seconds, micros);
      made->set_write_timeout(seconds, micros);
      made->set_keep_alive(true);
      _client = made;
      _client_origin = config.url.origin;
      _client_timeout_ms = config.timeout_ms;
    }
    client = std::static_pointer_cast<httplib::Client>(_client);
  }
  httplib::Headers headers{
      {"User-Agent", "ringmta"},
      {"X-Ringmta-Batch", fmt::format("{:x}-{}", sending.start.segment, sending.start.offset)},
      {"X-Ringmta-Records", std::to_string(sending.records)}};
  if (!config.authorization.empty()) headers.emplace("Authorization", config.authorization);
  const auto result = client->Post(config.url.path, headers, sending.json, "application/json");
  if (!result) {
    failure = httplib::to_string(result.error());
    return false;
  }
  if (result->status < 200 || result->status > 299) {
    failure = fmt::format("HTTP {}", result->status);
    return false;
  }
  return true;
}

void webhook::run() noexcept {
  batch pending;  // read from the cursor, not acknowledged yet
  auto first_seen = std::chrono::steady_clock::now();
  auto delay = 0ms;
  std::uint64_t failures = 0;  // in the current streak
  for (;;) {
    webhook_config config;
    {
      std::lock_guard lock(_mutex);
      if (_stopping) return;
      config = _config;
      _config_changed = false;  // a later update() ends a backoff
    }
    report_dropped();
    if (pending.empty() || _log->cursor() != pending.start) {  // none, or dropped under it
      pending = {};
      if (!_log->wait(500ms)) continue;
      pending = _log->read(config.batch_size, config.batch_bytes_max);
      first_seen = std::chrono::steady_clock::now();
      if (pending.empty()) {  // unreadable: try again a little later
        backoff(100ms);
        continue;
      }
    }
    // A partial batch waits for more, up to the interval since its first record was seen.
    while (!pending.full && failures == 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          first_seen + std::chrono::milliseconds(config.interval_ms) -
          std::chrono::steady_clock::now());
      if (left <= 0ms || !_log->wait(left, _log->backlog_bytes())) break;
      pending = _log->read(config.batch_size, config.batch_bytes_max);
    }
    if (pending.records == 0) {  // only lines that were not records
      _log->acknowledge(pending.end);
      pending = {};
      continue;
    }
    std::string failure;
    if (post(pending, config, failure)) {
      _counters.batches_sent.add();
      _counters.records_sent.add(pending.records);
      if (!_log->acknowledge(pending.end)) {
        _writer.post("warning", "events: cannot write the cursor; the batch will be resent");
      }
      if (failures > 0) {
        _writer.post_record("events_recovered", [&](admin::log_record& r) {
          r.field("url", config.url.origin + config.url.path).field("failures", failures);
        });
      }
      _counters.failing.set(0);
      failures = 0;
      delay = 0ms;
      pending = {};
      continue;
    }
    {
      std::lock_guard lock(_mutex);
      if (_stopping) return;
    }
    _counters.failures.add();
    _counters.failing.set(1);
    if (failures++ == 0) {  // one record per streak, not per retry
      _writer.post_record("events_failed", [&](admin::log_record& r) {
        r.field("url", config.url.origin + config.url.path).field("error", failure)
            .field("backlog_bytes", _log->backlog_bytes());
      });
    }
    delay = std::min<std::chrono::milliseconds>(std::max<std::chrono::milliseconds>(delay * 2,
                                                                                   500ms),
                                                std::chrono::milliseconds(config.retry_max_ms));
    backoff(delay);
  }
}

}  // namespace ringmta::events
