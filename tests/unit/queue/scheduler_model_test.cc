// Property test: many random operations on queue::scheduler, checked step by step against a
// small reference model (plain maps and vectors, no heaps, no intrusive lists). The model
// predicts the order of jobs, which connections may be opened, retry times (within the jitter
// bounds), expiry, destination-wide backoff and every event; the scheduler's counts, wake-up
// times and outputs must agree. Seeded: a failure names its seed and step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ringmta/queue/scheduler.h"

namespace ringmta::queue {
namespace {

using key = std::pair<spool::message_id, std::uint16_t>;  // message, first recipient

struct model_job {
  job_id id;
  std::string destination;
  enum { ready, scheduled, in_flight } where = ready;
  std::int64_t next_ms = 0;
  std::uint16_t attempts = 0;
  std::uint64_t mask = 0;
  std::int64_t received_ms = 0;
  bool warned = false;
  bool bounce = false;
};

struct model_destination {
  std::vector<key> ready;  // FIFO
  bool suspended = false;
  bool probing = false;
  std::int64_t backoff_until_ms = 0;
  std::uint32_t failures = 0;
  std::uint32_t connections = 0;
  std::uint32_t starting = 0;
  std::vector<std::int64_t> takes_ms;
};

struct model_connection {
  connection_id id;
  std::string destination;
  bool started = false;
  std::uint32_t taken = 0;
};

// What a run exercised, summed over seeds: a property test that never expires a job or
// backs off a destination proves nothing about those paths.
struct coverage {
  std::uint64_t takes = 0, throttled = 0, deferrals = 0, expired = 0, bounced = 0;
  std::uint64_t backoffs = 0, forgotten = 0, warnings = 0, deferred = 0;
};

class model_run {
 public:
  model_run(std::uint64_t seed, bool rate_limited) : _random(seed), _rate(rate_limited) {
    _config.retry_delays_ms = {1000, 3000, 10000};
    _config.jitter_permille = 100;
    _config.lifetime_max_ms = 180'000;
    _config.delay_warning_ms = 20'000;
    _config.idle_forget_ms = 5'000;
    _config.connections_max = 4;
    _config.random_seed = seed;
    _config.limits.connections_max = 1 + static_cast<std::uint32_t>(seed % 3);
    _config.limits.messages_per_connection_max = 3;
    _config.limits.recipients_per_transaction_max = 2;
    if (rate_limited) {
      _config.limits.rate_messages = 2;
      _config.limits.rate_period_ms = 1000;
      _config.limits.rate_burst = 2;
    }
    _queue = std::make_unique<scheduler>(_config);
  }

  coverage seen;

  void run(int steps) {
    for (_step = 0; _step < steps && !::testing::Test::HasFailure(); ++_step) {
      _now += std::uniform_int_distribution<int>(0, _rate ? 200 : 1500)(_random);
      _op = std::uniform_int_distribution<int>(0, 19)(_random);
      switch (_op) {
        case 0: case 1: case 2: case 3: add(); break;
        case 4: case 5: case 6: poll(); break;
        case 7: case 8: case 9: case 10: take(); break;
        case 11: case 12: case 13: outcome(); break;
        case 14: close_connection(false); break;
        case 15: close_connection(true); break;
        case 16: operator_action(); break;
        default: poll(); break;
      }
      drain_events();
      check();
    }
    finish();
  }

 private:
  std::string where() const {
    return "step " + std::to_string(_step) + " op " + std::to_string(_op) + " now +" +
           std::to_string(_now - base_ms);
  }
  std::string pick_destination() {
    static const char* names[] = {"a.example", "b.example", "c.example", "d.example"};
    return names[std::uniform_int_distribution<int>(0, 3)(_random)];
  }
  model_destination& model_of(const std::string& name) { return _destinations[name]; }

  std::uint32_t limit(const model_destination& d) const {
    return d.probing ? 1 : _config.limits.connections_max;
  }

  // The scheduler moves due jobs to ready in (time, slot) order when it services a
  // destination (poll, take, flush); a probing destination only until one is ready (the
  // probe's job), except on flush (`all`).
  void move_due(const std::string& name, std::int64_t upto_ms, bool all = false) {
    std::vector<std::pair<std::pair<std::int64_t, std::uint32_t>, key>> due;
    for (auto& [k, job] : _jobs) {
      if (job.destination == name && job.where == model_job::scheduled && job.next_ms <= upto_ms)
        due.push_back({{job.next_ms, job.id.slot}, k});
    }
    std::sort(due.begin(), due.end());
    for (auto& [order, k] : due) {
      if (!all && model_of(name).probing && !model_of(name).ready.empty()) break;
      _jobs[k].where = model_job::ready;
      model_of(name).ready.push_back(k);
    }
  }

  void add() {
    std::string name = pick_destination();
    std::vector<std::uint16_t> recipients;
    int count = std::uniform_int_distribution<int>(1, 4)(_random);
    for (int i = 0; i < count; ++i)
      recipients.push_back(static_cast<std::uint16_t>(std::uniform_int_distribution<int>(0, 80)(
          _random)));
    job_spec spec;
    spec.message = ++_message;
    spec.received_seconds = _now / 1000;
    spec.recipients = recipients;
    bool later = std::uniform_int_distribution<int>(0, 4)(_random) == 0;
    if (later) spec.not_before_ms = _now + std::uniform_int_distribution<int>(1, 8000)(_random);
    add_result result = _queue->add(name, spec, _now);
    ASSERT_EQ(result.status, add_status::added) << where();
    model_of(name);  // known to the model even when every job is scheduled
    std::vector<job_view> listed;
    _queue->list_jobs(name, 1'000'000, listed);
    std::uint32_t found = 0;
    for (const job_view& view : listed) {
      if (view.message != spec.message) continue;
      ++found;
      model_job job;
      job.id = view.id;
      job.destination = name;
      job.mask = view.recipient_mask;
      job.received_ms = spec.received_seconds * 1000;
      job.where = later ? model_job::scheduled : model_job::ready;
      job.next_ms = later ? spec.not_before_ms : _now;
      _jobs[{spec.message, view.first_recipient}] = job;
      _recipients_in += view.recipient_count();
      if (!later) model_of(name).ready.push_back({spec.message, view.first_recipient});
    }
    ASSERT_EQ(found, result.jobs_added) << where();
  }

  void poll() {
    for (auto& [name, d] : _destinations)
      if (!d.suspended) move_due(name, _now);
    std::vector<connect_request> requests;
    _queue->poll(_now, requests);
    for (const connect_request& request : requests) {
      std::string name(request.name);
      model_destination& d = model_of(name);
      ASSERT_FALSE(d.suspended) << where();
      ASSERT_LE(d.backoff_until_ms, _now) << where();
      ASSERT_LT(d.connections, limit(d)) << where() << " " << name;
      ASSERT_GT(d.ready.size(), d.starting) << where();
      ASSERT_EQ(request.probe, d.probing) << where();
      ++d.connections;
      ++d.starting;
      _connections.push_back(model_connection{request.connection, name});
    }
    ASSERT_LE(_connections.size(), _config.connections_max) << where();
    forget_idle();
    // Liveness: whatever could open a connection now did (without a rate limit to model).
    if (_rate || _connections.size() >= _config.connections_max) return;
    for (auto& [name, d] : _destinations) {
      bool wants = !d.suspended && d.backoff_until_ms <= _now && d.connections < limit(d) &&
                   d.ready.size() > d.starting;
      ASSERT_FALSE(wants) << where() << " " << name << " was not served";
    }
  }

  // The scheduler may forget idle destinations during poll(): mirror it.
  void forget_idle() {
    for (auto it = _destinations.begin(); it != _destinations.end();) {
      destination_info info;
      if (_queue->inspect(it->first, info)) {
        ++it;
        continue;
      }
      const model_destination& d = it->second;
      ASSERT_TRUE(d.ready.empty() && d.connections == 0 && !d.suspended) << where();
      ASSERT_LE(d.backoff_until_ms, _now) << where();
      for (auto& [k, job] : _jobs) ASSERT_NE(job.destination, it->first) << where();
      ++seen.forgotten;
      it = _destinations.erase(it);
    }
  }

  model_connection* pick_connection() {
    if (_connections.empty()) return nullptr;
    return &_connections[std::uniform_int_distribution<std::size_t>(0, _connections.size() - 1)(
        _random)];
  }

  void take() {
    model_connection* c = pick_connection();
    if (c == nullptr) return;
    model_destination& d = model_of(c->destination);
    const bool reused = c->started;
    if (!c->started) {
      c->started = true;
      --d.starting;
      d.failures = 0;
      d.probing = false;
      d.backoff_until_ms = 0;
    }
    if (!d.suspended) move_due(c->destination, _now);
    take_result result = _queue->take_for_connection(c->id, _now);
    if (d.suspended || c->taken >= _config.limits.messages_per_connection_max) {
      ASSERT_EQ(result.status, take_status::close) << where();
      return;
    }
    if (d.ready.empty() || (reused && d.ready.size() <= d.starting)) {
      ASSERT_EQ(result.status, take_status::none) << where();  // left for a starting one
      return;
    }
    if (_rate && result.status == take_status::throttled) {
      ++seen.throttled;
      ASSERT_GT(result.retry_at_ms, _now) << where();
      return;
    }
    ASSERT_EQ(result.status, take_status::job) << where();
    key expected = d.ready.front();
    ASSERT_EQ(key(result.job.message, result.job.first_recipient), expected) << where();
    model_job& job = _jobs[expected];
    ASSERT_EQ(result.job.id, job.id) << where();
    ASSERT_EQ(result.job.attempts, job.attempts) << where();
    ASSERT_EQ(result.job.recipient_mask, job.mask) << where();
    ++seen.takes;
    d.ready.erase(d.ready.begin());
    job.where = model_job::in_flight;
    ++c->taken;
    d.takes_ms.push_back(_now);
  }

  void outcome() {
    std::vector<key> flying;
    for (auto& [k, job] : _jobs)
      if (job.where == model_job::in_flight) flying.push_back(k);
    if (flying.empty()) return;
    key k = flying[std::uniform_int_distribution<std::size_t>(0, flying.size() - 1)(_random)];
    model_job& job = _jobs[k];
    int choice = std::uniform_int_distribution<int>(0, 3)(_random);
    if (choice == 0) {
      _queue->delivered(job.id, _now);
      _recipients_out += __builtin_popcountll(job.mask);
      _jobs.erase(k);
    } else if (choice == 1) {
      _queue->failed(job.id, _now, failure{550, status_code{5, 1, 1}, "550 no"});
      _recipients_out += __builtin_popcountll(job.mask);
      _jobs.erase(k);
    } else {
      std::uint64_t keep = job.mask;
      if (choice == 3 && __builtin_popcountll(keep) > 1) keep &= keep - 1;  // drop one
      defer(k, keep);
    }
  }

  void defer(key k, std::uint64_t keep) {
    model_job& job = _jobs[k];
    ++seen.deferrals;
    _recipients_out += __builtin_popcountll(job.mask & ~keep);
    defer_result result =
        _queue->deferred(job.id, _now, failure{451, status_code{4, 0, 0}, "451 later"}, keep);
    job.mask &= keep;
    if (job.bounce) {
      ASSERT_EQ(result.status, defer_status::bounced_by_operator) << where();
      _recipients_out += __builtin_popcountll(job.mask);
      _jobs.erase(k);
      return;
    }
    ++job.attempts;
    ASSERT_EQ(result.attempts, job.attempts) << where();
    std::int64_t expiry = job.received_ms + _config.lifetime_max_ms;
    if (_now >= expiry) {
      ++seen.expired;
      ASSERT_EQ(result.status, defer_status::expired) << where();
      _recipients_out += __builtin_popcountll(job.mask);
      _jobs.erase(k);
      return;
    }
    ASSERT_EQ(result.status, defer_status::scheduled) << where();
    std::int64_t delay = _config.retry_delays_ms[std::min<std::size_t>(job.attempts, 3) - 1];
    std::int64_t next = result.next_attempt_ms;
    if (next != expiry) {
      ASSERT_GE(next - _now, delay - delay / 10) << where();
      ASSERT_LE(next - _now, delay + delay / 10) << where();
    }
    ASSERT_LE(next, expiry) << where();
    bool warn = !job.warned && _now >= job.received_ms + _config.delay_warning_ms;
    ASSERT_EQ(result.delay_warning, warn) << where();
    job.warned = job.warned || warn;
    job.where = model_job::scheduled;
    job.next_ms = next;
  }

  void close_connection(bool failed) {
    if (_connections.empty()) return;
    std::size_t index =
        std::uniform_int_distribution<std::size_t>(0, _connections.size() - 1)(_random);
    model_connection c = _connections[index];
    _connections.erase(_connections.begin() + static_cast<std::ptrdiff_t>(index));
    model_destination& d = model_of(c.destination);
    --d.connections;
    if (!c.started) --d.starting;
    if (!failed) {
      _queue->connection_closed(c.id, _now);
      return;
    }
    _queue->connection_failed(c.id, _now, failure{0, status_code{4, 4, 1}, "refused"});
    destination_info info;
    ASSERT_TRUE(_queue->inspect(c.destination, info)) << where();
    // A failure that starts a backoff counts an attempt for the oldest ready job (the probe's);
    // the other ready jobs wait on the destination unattempted (issue 15).
    std::size_t attempted_max = 0;
    if (d.backoff_until_ms <= _now) {
      attempted_max = 1;
      ++seen.backoffs;
      ++d.failures;
      std::int64_t delay = _config.retry_delays_ms[std::min<std::size_t>(d.failures, 3) - 1];
      ASSERT_GE(info.backoff_until_ms - _now, delay - delay / 10) << where();
      ASSERT_LE(info.backoff_until_ms - _now, delay + delay / 10) << where();
      d.backoff_until_ms = info.backoff_until_ms;
    }
    ASSERT_EQ(info.backoff_until_ms, d.backoff_until_ms) << where();
    d.probing = true;
    std::int64_t until = d.backoff_until_ms;
    std::size_t attempted = 0;
    for (const key& k : d.ready) {
      model_job& job = _jobs[k];
      const bool attempt = attempted < attempted_max;
      attempted += attempt;
      ++job.attempts;  // an unattempted job counts one only when it expires here
      if (_now >= job.received_ms + _config.lifetime_max_ms) {
        _expected_events.insert({k, event_kind::expired});
        job.where = model_job::in_flight;  // leaving: erased when the event is seen
        job.next_ms = -1;
        continue;
      }
      if (!attempt) --job.attempts;
      job.where = model_job::scheduled;
      job.next_ms = until;
      if (attempt) _expected_events.insert({k, event_kind::deferred});
      if (!job.warned && _now >= job.received_ms + _config.delay_warning_ms) {
        job.warned = true;
        _expected_events.insert({k, event_kind::delay_warning});
      }
    }
    d.ready.clear();
    // Jobs due before the destination is back wait for it, unattempted; their lifetime and
    // delay warning are checked now.
    for (auto& [k, job] : _jobs) {
      if (job.destination != c.destination || job.where != model_job::scheduled ||
          job.next_ms >= until)
        continue;
      if (_now >= job.received_ms + _config.lifetime_max_ms) {
        ++job.attempts;
        _expected_events.insert({k, event_kind::expired});
        job.where = model_job::in_flight;
        job.next_ms = -1;
        continue;
      }
      job.next_ms = until;
      if (!job.warned && _now >= job.received_ms + _config.delay_warning_ms) {
        job.warned = true;
        _expected_events.insert({k, event_kind::delay_warning});
      }
    }
  }

  void operator_action() {
    std::string name = pick_destination();
    model_destination& d = model_of(name);
    switch (std::uniform_int_distribution<int>(0, 3)(_random)) {
      case 0:
        d.suspended = !d.suspended;
        if (d.suspended) {
          ASSERT_TRUE(_queue->suspend(name, _now)) << where();
        } else {
          ASSERT_TRUE(_queue->resume(name, _now)) << where();
        }
        break;
      case 1:
      case 2: {
        std::size_t scheduled = 0;
        for (auto& [k, job] : _jobs)
          scheduled += job.destination == name && job.where == model_job::scheduled;
        move_due(name, std::numeric_limits<std::int64_t>::max(), true);
        ASSERT_EQ(_queue->flush(name, _now), scheduled) << where();
        d.backoff_until_ms = 0;
        break;
      }
      default: {
        std::size_t expected = 0;
        for (auto& [k, job] : _jobs) {
          if (job.destination != name) continue;
          if (job.where == model_job::in_flight) {
            job.bounce = true;
            continue;
          }
          _expected_events.insert({k, event_kind::bounced_by_operator});
          job.where = model_job::in_flight;
          job.next_ms = -1;
          ++expected;
        }
        d.ready.clear();
        ASSERT_EQ(_queue->bounce_all(name, _now), expected) << where();
        break;
      }
    }
  }

  void drain_events() {
    job_event event;
    while (_queue->next_event(event)) {
      key k{event.job.message, event.job.first_recipient};
      auto found = _expected_events.find({k, event.kind});
      ASSERT_NE(found, _expected_events.end()) << where();
      _expected_events.erase(found);
      seen.expired += event.kind == event_kind::expired;
      seen.bounced += event.kind == event_kind::bounced_by_operator;
      seen.warnings += event.kind == event_kind::delay_warning;
      seen.deferred += event.kind == event_kind::deferred;
      if (event.kind != event_kind::delay_warning && event.kind != event_kind::deferred) {
        _recipients_out += event.job.recipient_count();
        _jobs.erase(k);
      } else {
        ASSERT_EQ(event.next_attempt_ms, _jobs[k].next_ms) << where();
      }
    }
    ASSERT_TRUE(_expected_events.empty()) << where();
  }

  void check() {
    scheduler_stats stats = _queue->stats();
    ASSERT_EQ(stats.jobs, _jobs.size()) << where();
    ASSERT_EQ(stats.connections, _connections.size()) << where();
    std::uint64_t queued = 0;
    for (auto& [k, job] : _jobs) queued += __builtin_popcountll(job.mask);
    ASSERT_EQ(_recipients_in, _recipients_out + queued) << where() << ": a recipient was lost";
    std::int64_t wake = _queue->next_wakeup_ms();
    for (auto& [name, d] : _destinations) {
      destination_info info;
      if (!_queue->inspect(name, info)) {
        ASSERT_TRUE(d.ready.empty() && d.connections == 0 && !d.suspended) << where();
        continue;
      }
      std::uint32_t scheduled = 0, in_flight = 0, earliest_due = 0;
      std::int64_t earliest = no_wakeup_ms;
      for (auto& [k, job] : _jobs) {
        if (job.destination != name) continue;
        scheduled += job.where == model_job::scheduled;
        in_flight += job.where == model_job::in_flight;
        if (job.where == model_job::scheduled) earliest = std::min(earliest, job.next_ms);
      }
      (void)earliest_due;
      ASSERT_EQ(info.ready, d.ready.size()) << where() << " " << name;
      ASSERT_EQ(info.scheduled, scheduled) << where() << " " << name;
      ASSERT_EQ(info.in_flight, in_flight) << where() << " " << name;
      ASSERT_EQ(info.connections, d.connections) << where() << " " << name;
      ASSERT_EQ(info.suspended, d.suspended) << where();
      ASSERT_EQ(info.probing, d.probing) << where();
      if (d.suspended) continue;
      // The wake-up covers the earliest scheduled job and any connection wanted now.
      // (A probing destination with a ready job: the rest wait for the probe.)
      if (!d.probing || d.ready.empty()) {
        ASSERT_LE(wake, earliest) << where() << " " << name;
      }
      bool wants = d.connections < limit(d) && d.ready.size() > d.starting && !_rate &&
                   _connections.size() < _config.connections_max;
      if (wants) {
        ASSERT_LE(wake, std::max(_now, d.backoff_until_ms))
            << where() << " " << name << " ready " << d.ready.size() << " starting "
            << d.starting << " connections " << d.connections << " backoff "
            << d.backoff_until_ms - base_ms << " earliest " << earliest - base_ms;
      }
    }
    if (_rate) check_rate();
  }

  // Token bucket bound: in any window [a, b], at most burst + (b - a) * rate / period takes.
  void check_rate() {
    for (auto& [name, d] : _destinations) {
      const auto& t = d.takes_ms;
      for (std::size_t i = 0; i < t.size(); ++i) {
        for (std::size_t j = i; j < t.size() && j < i + 16; ++j) {
          std::int64_t allowed = _config.limits.rate_burst +
                                 (t[j] - t[i]) * _config.limits.rate_messages /
                                     _config.limits.rate_period_ms;
          ASSERT_LE(static_cast<std::int64_t>(j - i + 1), allowed) << where() << " " << name;
        }
      }
    }
  }

  // Deliver everything left: no recipient may be missing at the end.
  void finish() {
    if (::testing::Test::HasFailure()) return;
    for (auto& [name, d] : _destinations)
      if (d.suspended) _queue->resume(name, _now);
    _queue->flush_all(_now);
    for (int round = 0; round < 10'000 && _queue->stats().jobs > 0; ++round) {
      _now += 100;
      std::vector<connect_request> requests;
      _queue->poll(_now, requests);
      for (auto& c : _connections) requests.push_back(connect_request{c.id});
      _connections.clear();
      for (const connect_request& request : requests) {
        for (;;) {
          take_result taken = _queue->take_for_connection(request.connection, _now);
          if (taken.status != take_status::job) break;
          _recipients_out += taken.job.recipient_count();
          _jobs.erase({taken.job.message, taken.job.first_recipient});
          _queue->delivered(taken.job.id, _now);
        }
        _queue->connection_closed(request.connection, _now);
      }
      for (auto& [k, job] : _jobs) {
        if (job.where != model_job::in_flight) continue;
        _queue->delivered(job.id, _now);
        _recipients_out += __builtin_popcountll(job.mask);
        job.mask = 0;
        job.where = model_job::ready;  // erased below
      }
      std::erase_if(_jobs, [](const auto& entry) { return entry.second.mask == 0; });
    }
    ASSERT_EQ(_queue->stats().jobs, 0u);
    ASSERT_EQ(_recipients_in, _recipients_out);
  }

  static constexpr std::int64_t base_ms = 1'700'000'000'000;
  std::mt19937_64 _random;
  bool _rate;
  scheduler_config _config;
  std::unique_ptr<scheduler> _queue;
  std::int64_t _now = base_ms;
  int _step = 0;
  int _op = 0;
  spool::message_id _message = 0;
  std::map<key, model_job> _jobs;
  std::map<std::string, model_destination> _destinations;
  std::vector<model_connection> _connections;
  std::multiset<std::pair<key, event_kind>> _expected_events;
  std::uint64_t _recipients_in = 0;
  std::uint64_t _recipients_out = 0;
};

// QUEUE_MODEL_SEEDS=N runs N seeds instead of 30 (for a longer soak by hand).
std::uint64_t seed_count(std::uint64_t fallback) {
  const char* text = std::getenv("QUEUE_MODEL_SEEDS");
  return text != nullptr ? std::strtoull(text, nullptr, 10) : fallback;
}

TEST(scheduler_model, random_operations_match_the_model) {
  coverage total;
  for (std::uint64_t seed = 1; seed <= seed_count(30) && !HasFailure(); ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    model_run run(seed, false);
    run.run(3000);
    total.takes += run.seen.takes;
    total.deferrals += run.seen.deferrals;
    total.expired += run.seen.expired;
    total.bounced += run.seen.bounced;
    total.backoffs += run.seen.backoffs;
    total.forgotten += run.seen.forgotten;
    total.warnings += run.seen.warnings;
    total.deferred += run.seen.deferred;
  }
  std::printf("model: %llu takes, %llu deferrals, %llu expired, %llu bounced, %llu backoffs, "
              "%llu forgotten, %llu delay warnings, %llu destination-wide deferrals\n",
              static_cast<unsigned long long>(total.takes),
              static_cast<unsigned long long>(total.deferrals),
              static_cast<unsigned long long>(total.expired),
              static_cast<unsigned long long>(total.bounced),
              static_cast<unsigned long long>(total.backoffs),
              static_cast<unsigned long long>(total.forgotten),
              static_cast<unsigned long long>(total.warnings),
              static_cast<unsigned long long>(total.deferred));
  EXPECT_GT(total.takes, 1000u);
  EXPECT_GT(total.deferred, 0u);
  EXPECT_GT(total.deferrals, 100u);
  EXPECT_GT(total.expired, 0u);
  EXPECT_GT(total.bounced, 0u);
  EXPECT_GT(total.backoffs, 10u);
  EXPECT_GT(total.forgotten, 0u);
  EXPECT_GT(total.warnings, 0u);
}

TEST(scheduler_model, random_operations_respect_the_rate_limit) {
  coverage total;
  for (std::uint64_t seed = 100; seed < 100 + seed_count(16) && !HasFailure(); ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    model_run run(seed, true);
    run.run(3000);
    total.takes += run.seen.takes;
    total.throttled += run.seen.throttled;
  }
  EXPECT_GT(total.takes, 500u);
  EXPECT_GT(total.throttled, 50u);
}

}  // namespace
}  // namespace ringmta::queue
