// queue::scheduler: jobs, timing, connections and outcomes (operator actions and inspection
// are in scheduler_admin.cc). See scheduler.h for the contract.
#include "ringmta/queue/scheduler.h"

#include <algorithm>
#include <cstring>

#include "ringmta/core/assert.h"
#include "scheduler_state.h"

namespace ringmta::queue {

namespace {

std::uint32_t clamp_seconds(std::int64_t seconds) noexcept {
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(seconds, 0, 0xffffffffLL));
}

std::uint32_t seconds_of(std::int64_t ms) noexcept { return clamp_seconds(ms / 1000); }

bool limits_valid(const destination_limits& limits) noexcept {
  return limits.connections_max >= 1 && limits.rate_period_ms >= 1 && limits.rate_burst >= 1 &&
         limits.recipients_per_transaction_max >= 1 &&
         limits.recipients_per_transaction_max <= job_recipients_max;
}

}  // namespace

// ---------------------------------------------------------------- interned error texts

std::uint32_t scheduler::state::intern(const failure& reason) noexcept {
  std::string key(7, '\0');
  key[0] = static_cast<char>(reason.reply_code >> 8);
  key[1] = static_cast<char>(reason.reply_code & 0xff);
  key[2] = static_cast<char>(reason.status.klass);
  std::memcpy(&key[3], &reason.status.subject, 2);
  std::memcpy(&key[5], &reason.status.detail, 2);
  key.append(reason.text.substr(0, error_text_bytes_max));
  if (auto found = error_index.find(std::string_view(key)); found != error_index.end()) {
    ++errors[found->second].refs;
    return found->second;
  }
  if (errors.empty()) errors.emplace_back();  // index 0 means "no text"
  std::uint32_t index;
  if (!free_errors.empty()) {
    index = free_errors.back();
    free_errors.pop_back();
  } else if (errors.size() <= config.error_texts_max) {
    index = static_cast<std::uint32_t>(errors.size());
    errors.emplace_back();
  } else {
    return 0;  // table full: the job keeps no text (the destination's last error remains)
  }
  error_entry& entry = errors[index];
  entry.key = std::move(key);
  entry.refs = 1;
  entry.reply_code = reason.reply_code;
  entry.status = reason.status;
  error_index.emplace(std::string_view(entry.key), index);
  return index;
}

void scheduler::state::retain(std::uint32_t error) noexcept {
  if (error != 0) ++errors[error].refs;
}

void scheduler::state::release(std::uint32_t error) noexcept {
  if (error == 0) return;
  error_entry& entry = errors[error];
  RINGMTA_ASSERT(entry.refs > 0);
  if (--entry.refs != 0) return;
  error_index.erase(std::string_view(entry.key));
  entry.key.clear();
  entry.key.shrink_to_fit();
  free_errors.push_back(error);
}

// ---------------------------------------------------------------- destinations

destination_record* scheduler::state::find(std::string_view name) noexcept {
  auto found = by_name.find(name);
  return found == by_name.end() ? nullptr : &destinations[found->second];
}

const destination_record* scheduler::state::find(std::string_view name) const noexcept {
  auto found = by_name.find(name);
  return found == by_name.end() ? nullptr : &destinations[found->second];
}

destination_record& scheduler::state::at(destination_id id) noexcept {
  RINGMTA_ASSERT(id.slot < destinations.size());
  destination_record& d = destinations[id.slot];
  RINGMTA_ASSERT(d.live && d.generation == id.generation);
  return d;
}

void scheduler::state::apply_limits(destination_record& d,
                                    const destination_limits& limits) noexcept {
  d.limits = limits;
  d.bucket.clamp(limits);
}

std::uint32_t scheduler::state::create(std::string_view name, std::int64_t now_ms) noexcept {
  std::uint32_t slot;
  if (!free_destinations.empty()) {
    slot = free_destinations.back();
    free_destinations.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(destinations.size());
    destinations.grow();
  }
  destination_record& d = destinations[slot];
  std::uint32_t generation = d.generation;
  d = destination_record{};
  d.generation = generation;
  d.slot = slot;
  d.live = true;
  d.name.assign(name);
  auto override_found = overrides.find(name);
  d.limits = override_found != overrides.end() ? override_found->second
             : config.limits_for                ? config.limits_for(name)
                                                : config.limits;
  RINGMTA_ASSERT(limits_valid(d.limits));
  d.bucket.fill(d.limits, now_ms);
  by_name.emplace(d.name, slot);
  ++live_destinations;
  return slot;
}

void scheduler::state::forget(std::uint32_t slot) noexcept {
  destination_record& d = destinations[slot];
  RINGMTA_ASSERT(d.live && d.job_count() == 0 && d.connections == 0);
  unlink_idle(slot);
  leave_site(d);
  by_name.erase(d.name);
  release(d.error);
  d.error = 0;
  d.live = false;
  ++d.generation;
  d.name.clear();
  d.name.shrink_to_fit();
  std::vector<job_entry>().swap(d.scheduled);
  free_destinations.push_back(slot);
  --live_destinations;
  ++counters.destinations_forgotten;
}

void scheduler::state::unlink_idle(std::uint32_t slot) noexcept {
  destination_record& d = destinations[slot];
  if (!d.idle) return;
  if (d.idle_prev != nil_slot) destinations[d.idle_prev].idle_next = d.idle_next;
  else idle_head = d.idle_next;
  if (d.idle_next != nil_slot) destinations[d.idle_next].idle_prev = d.idle_prev;
  else idle_tail = d.idle_prev;
  d.idle_prev = d.idle_next = nil_slot;
  d.idle = false;
}

// Puts the destination on (or takes it off) the idle list to match its state.
void scheduler::state::update_idle(std::uint32_t slot, std::int64_t now_ms) noexcept {
  destination_record& d = destinations[slot];
  bool idle_now = d.job_count() == 0 && d.connections == 0 && !d.suspended;
  if (idle_now == d.idle) return;
  if (!idle_now) {
    unlink_idle(slot);
    return;
  }
  d.idle = true;
  d.idle_since_ms = now_ms;
  d.idle_prev = idle_tail;
  d.idle_next = nil_slot;
  if (idle_tail != nil_slot) destinations[idle_tail].idle_next = slot;
  else idle_head = slot;
  idle_tail = slot;
}

// Forgets idle destinations whose time is up. A destination still backing off is kept (its
// backoff is what protects a dead host) and goes to the back of the list; so is one whose rate
// bucket is not full again: forgotten, its next job would find a new, full bucket and go early
// (ringmta-sim seed 31004703039256 --no-crashes --shards-max 3: two DSNs 9 s apart under 1 per
// 10 s, sender.example forgotten 4 s after the first).
void scheduler::state::sweep_idle(std::int64_t now_ms) noexcept {
  for (unsigned budget = 64; budget > 0 && idle_head != nil_slot; --budget) {
    std::uint32_t slot = idle_head;
    destination_record& d = destinations[slot];
    if (d.idle_since_ms + config.idle_forget_ms > now_ms) return;
    const bool refilling = d.bucket.time_for(d.limits, d.limits.rate_burst) > now_ms;
    if (d.backoff_until_ms > now_ms || refilling) {
      unlink_idle(slot);
      update_idle(slot, now_ms);  // back of the list, idle from now
      continue;
    }
    forget(slot);
  }
}

// Makes room for one destination by forgetting the longest idle one not backing off.
bool scheduler::state::forget_one_idle(std::int64_t now_ms) noexcept {
  unsigned budget = 64;
  for (std::uint32_t slot = idle_head; slot != nil_slot && budget > 0; --budget) {
    std::uint32_t next = destinations[slot].idle_next;
    if (destinations[slot].backoff_until_ms <= now_ms) {
      forget(slot);
      return true;
    }
    slot = next;
  }
  return false;
}

// ---------------------------------------------------------------- token bucket

void token_bucket::fill(const destination_limits& limits, std::int64_t now_ms) noexcept {
  units = std::int64_t{limits.rate_burst} * limits.rate_period_ms;
  time_ms = now_ms;
}

void token_bucket::clamp(const destination_limits& limits) noexcept {
  units = std::min(units, std::int64_t{limits.rate_burst} * limits.rate_period_ms);
}

void token_bucket::refill(const destination_limits& limits, std::int64_t now_ms) noexcept {
  if (limits.rate_messages == 0) return;
  std::int64_t elapsed = now_ms - time_ms;
  if (elapsed <= 0) return;  // a clock that stepped back adds nothing
  std::int64_t capacity = std::int64_t{limits.rate_burst} * limits.rate_period_ms;
  std::int64_t missing = capacity - units;
  std::int64_t needed_ms = (missing + limits.rate_messages - 1) / limits.rate_messages;
  units = elapsed >= needed_ms ? capacity : units + elapsed * std::int64_t{limits.rate_messages};
  time_ms = now_ms;
}

std::int64_t token_bucket::time_for(const destination_limits& limits,
                                    std::uint32_t messages) const noexcept {
  if (limits.rate_messages == 0) return 0;
  if (messages > limits.rate_burst) return no_wakeup_ms;
  std::int64_t needed = std::int64_t{messages} * limits.rate_period_ms - units;
  if (needed <= 0) return time_ms;
  return time_ms + (needed + limits.rate_messages - 1) / limits.rate_messages;
}

void token_bucket::take(const destination_limits& limits) noexcept {
  if (limits.rate_messages != 0) units -= limits.rate_period_ms;
}

std::int64_t scheduler::state::rate_time_for(destination_record& d, std::uint32_t messages,
                                             std::int64_t now_ms) noexcept {
  d.bucket.refill(d.limits, now_ms);
  return std::max(d.bucket.time_for(d.limits, messages), site_rate_time(d, now_ms, true));
}

// ---------------------------------------------------------------- jobs

std::uint32_t job_slab::allocate() noexcept {
  const std::uint32_t slot = _records.allocate();
  job_record& job = _records[slot];
  const std::uint32_t generation = job.generation;
  job = job_record{};
  job.generation = generation;
  return slot;
}

void job_slab::release(std::uint32_t slot) noexcept {
  job_record& job = _records[slot];
  job.state = job_state::free;
  job.generation = (job.generation + 1) & job_generation_mask;
  job.prev = nil_slot;
  _records.release(slot);  // job.next: the free stack's link
}

std::uint32_t scheduler::state::allocate_job() noexcept {
  ++live_jobs;
  return jobs.allocate();
}

void scheduler::state::free_job(std::uint32_t slot) noexcept {
  job_record& job = jobs[slot];
  RINGMTA_ASSERT(job.state != job_state::free);
  release(job.error);
  job.error = 0;
  jobs.release(slot);
  --live_jobs;
}

job_record& scheduler::state::job_at(job_id id) noexcept {
  RINGMTA_ASSERT(id.slot < jobs.size());
  job_record& job = jobs[id.slot];
  RINGMTA_ASSERT(job.state != job_state::free && job.generation == id.generation);
  return job;
}

void scheduler::state::push_back(job_list& list, std::uint32_t slot) noexcept {
  job_record& job = jobs[slot];
  job.prev = list.tail;
  job.next = nil_slot;
  if (list.tail != nil_slot) jobs[list.tail].next = slot;
  else list.head = slot;
  list.tail = slot;
  ++list.count;
}

void scheduler::state::unlink(job_list& list, std::uint32_t slot) noexcept {
  job_record& job = jobs[slot];
  if (job.prev != nil_slot) jobs[job.prev].next = job.next;
  else list.head = job.next;
  if (job.next != nil_slot) jobs[job.next].prev = job.prev;
  else list.tail = job.prev;
  job.prev = job.next = nil_slot;
  RINGMTA_ASSERT(list.count > 0);
  --list.count;
}

void scheduler::state::schedule(destination_record& d, std::uint32_t slot,
                                std::int64_t at_ms) noexcept {
  job_record& job = jobs[slot];
  job.state = job_state::scheduled;
  job.set_next_attempt_ms(at_ms);
  // Grown by a quarter, not doubled: a heap holds every deferred job of its destination, and
  // doubling reserved ~44% more entries than used on average (a quarter: ~12%); copying
  // 12-byte entries ~4 times each over the growth is cheap beside the heap's own moves.
  if (d.scheduled.size() == d.scheduled.capacity())
    d.scheduled.reserve(d.scheduled.size() + d.scheduled.size() / 4 + 4);
  d.scheduled.push_back(job_entry{at_ms, slot});
  std::push_heap(d.scheduled.begin(), d.scheduled.end(), heap_later{});
}

// While a destination probes (a connection failed), due jobs wait on the destination, not on
// their own timers: only the probe's job is made ready, so a dead destination costs one
// attempt (one deferral, one log record, one spool mark) per retry, not one per queued job.
// The probe's first take clears `probing` and the rest follow. flush() moves them all.
void scheduler::state::move_due(destination_record& d, std::int64_t now_ms,
                                bool probe_limit) noexcept {
  const std::uint32_t ready_max = probe_limit && d.probing ? 1 : 0xffffffffu;
  while (!d.scheduled.empty() && d.scheduled.front().time_ms <= now_ms &&
         d.ready.count < ready_max) {
    std::pop_heap(d.scheduled.begin(), d.scheduled.end(), heap_later{});
    std::uint32_t slot = d.scheduled.back().slot;
    d.scheduled.pop_back();
    jobs[slot].state = job_state::ready;
    push_back(d.ready, slot);
  }
}

job_view scheduler::state::view(std::uint32_t slot) const noexcept {
  const job_record& job = jobs[slot];
  job_view out;
  out.id = job_id{slot, job.generation};
  out.destination = destination_id{job.destination, destinations[job.destination].generation};
  out.message = job.message;
  out.recipient_mask = job.mask;
  out.first_recipient = job.first_recipient;
  out.attempts = job.attempts;
  out.received_seconds = job.received_seconds;
  out.last_attempt_ms = std::int64_t{job.last_attempt_seconds} * 1000;
  out.next_attempt_ms = job.next_attempt_ms();
  out.held = job.state == job_state::held;
  if (job.error != 0) {
    const error_entry& entry = errors[job.error];
    out.last_reply_code = entry.reply_code;
    out.last_status = entry.status;
    out.last_error = entry.text();
  }
  return out;
}

std::int64_t scheduler::state::jittered(std::int64_t delay_ms) noexcept {
  std::int64_t span = delay_ms / 1000 * config.jitter_permille +
                      delay_ms % 1000 * config.jitter_permille / 1000;
  if (span <= 0) return std::max<std::int64_t>(delay_ms, 1);
  // splitmix64: a small, seeded, reproducible generator.
  random += 0x9e3779b97f4a7c15ULL;
  std::uint64_t z = random;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  std::int64_t offset = static_cast<std::int64_t>(z % static_cast<std::uint64_t>(2 * span + 1));
  return std::max<std::int64_t>(delay_ms - span + offset, 1);
}

std::int64_t scheduler::state::retry_delay(const destination_record& d,
                                           std::uint32_t attempts) noexcept {
  const auto& own = d.limits.retry_delays_ms;
  const auto& delays = own && !own->empty() ? *own : config.retry_delays_ms;
  std::size_t index = std::min<std::size_t>(std::max<std::uint32_t>(attempts, 1), delays.size());
  return jittered(delays[index - 1]);
}

// The destination-wide backoff after its connection_failures-th consecutive failure: the
// retry schedule's delay, or longer with probe_backoff_max_ms (scheduler_config), but then
// not past the first expiry or delay warning among its jobs, so a longer wait never delays
// a bounce or a "delayed" DSN (they are issued at the failure of the probe then).
std::int64_t scheduler::state::probe_delay(const destination_record& d,
                                           std::int64_t now_ms) noexcept {
  const std::int64_t scheduled = retry_delay(d, d.connection_failures);
  const std::int64_t grown_max = config.probe_backoff_max_ms;
  if (grown_max <= 0 || d.connection_failures <= 1) return scheduled;
  const auto& own = d.limits.retry_delays_ms;
  std::int64_t grown = own && !own->empty() ? own->front() : config.retry_delays_ms.front();
  for (std::uint32_t n = 1; n < d.connection_failures && grown < grown_max; ++n) grown *= 2;
  grown = jittered(std::min(grown, grown_max));
  if (grown <= scheduled) return scheduled;
  std::int64_t deadline = no_wakeup_ms;
  const auto consider = [&](const job_record& job) {
    const std::int64_t warn = std::int64_t{job.received_seconds} * 1000 + config.delay_warning_ms;
    if (config.delay_warning_ms > 0 && (job.flags & job_flag_delay_warned) == 0 && warn > now_ms)
      deadline = std::min(deadline, warn);
    if (const std::int64_t expiry = expiry_ms(job); expiry > now_ms)
      deadline = std::min(deadline, expiry);
  };
  for (const job_entry& entry : d.scheduled) consider(jobs[entry.slot]);
  for (std::uint32_t slot = d.ready.head; slot != nil_slot; slot = jobs[slot].next)
    consider(jobs[slot]);
  return std::max(scheduled, std::min(grown, deadline - now_ms));
}

std::int64_t scheduler::state::expiry_ms(const job_record& job) const noexcept {
  const std::int64_t own = destinations[job.destination].limits.lifetime_max_ms;
  return std::int64_t{job.received_seconds} * 1000 + (own > 0 ? own : config.lifetime_max_ms);
}

void scheduler::state::note_attempt(job_record& job, std::int64_t now_ms,
                                    std::uint32_t error) noexcept {
  if (job.attempts < 0xffff) ++job.attempts;
  job.last_attempt_seconds = seconds_of(now_ms);
  retain(error);
  release(job.error);
  job.error = error;
}

// RFC 3461 §6.2 "delayed" DSN: once per job, when it has waited delay_warning_ms.
bool scheduler::state::warn_delay(job_record& job, std::int64_t now_ms) const noexcept {
  if (config.delay_warning_ms <= 0 || (job.flags & job_flag_delay_warned) != 0) return false;
  if (now_ms < std::int64_t{job.received_seconds} * 1000 + config.delay_warning_ms) return false;
  job.flags |= job_flag_delay_warned;
  return true;
}

// Queues an event about a job. Expired and bounced jobs are freed here; the event keeps a
// reference to the error text.
void scheduler::state::push_event(event_kind kind, std::uint32_t slot,
                                  std::int64_t next_ms) noexcept {
  pending_event pending;
  pending.event.kind = kind;
  pending.event.job = view(slot);  // its last_error stays valid: the event holds a reference
  pending.event.next_attempt_ms = next_ms;
  pending.error = jobs[slot].error;
  retain(pending.error);
  events.push_back(pending);
  if (kind == event_kind::expired || kind == event_kind::bounced_by_operator ||
      kind == event_kind::removed_by_operator)
    free_job(slot);
}

// ---------------------------------------------------------------- wake-ups

bool scheduler::state::can_open(destination_record& d, std::int64_t now_ms) noexcept {
  std::uint32_t limit = d.probing ? 1 : d.limits.connections_max;
  if (d.suspended || d.connections >= limit) return false;
  if (d.ready.count <= d.connections_starting) return false;  // the starting ones take them
  if (site_full(d)) return false;
  // A reply rule's pause is not a backoff: flush() lifts the backoff, not the pause (else each
  // poll opens a connection take_for_connection closes at once: ringmta-sim seed 7059).
  if (std::max(d.backoff_until_ms, d.paused_until_ms) > now_ms) return false;
  return rate_time_for(d, d.connections_starting + 1, now_ms) <= now_ms;
}

// Postfix's queue manager serves destinations round robin; here a connection slot is the
// unit, so a connection that carried its turn's messages closes while another destination
// waits for a slot, which poll() gives to the longest waiting one. Without waiters a
// connection goes on to messages_per_connection_max as before.
bool scheduler::state::turn_over(const destination_record& d,
                                 const connection_record& c) const noexcept {
  if (config.turn_messages == 0 || c.taken < config.turn_messages) return false;
  return starved.size() > (d.starved ? 1u : 0u);
}

// Earliest time poll() has something to do for this destination.
std::int64_t scheduler::state::compute_wake(destination_record& d, std::int64_t now_ms) noexcept {
  if (d.suspended) return no_wakeup_ms;
  std::int64_t wake = d.scheduled.empty() ? no_wakeup_ms : d.scheduled.front().time_ms;
  if (d.probing && d.ready.count > 0) wake = no_wakeup_ms;  // due jobs wait for the probe
  std::uint32_t limit = d.probing ? 1 : d.limits.connections_max;
  if (d.ready.count > d.connections_starting && d.connections < limit) {
    std::int64_t at = std::max({now_ms, d.backoff_until_ms, d.paused_until_ms,
                                rate_time_for(d, d.connections_starting + 1, now_ms)});
    if (d.site != nil_slot && (at == no_wakeup_ms || site_full(d))) {
      site_wait(d);  // woken when one of the site's connections ends or starts
      at = no_wakeup_ms;
    }
    if (at != no_wakeup_ms && live_connections >= config.connections_max) {
      if (!d.starved) {  // woken when a connection slot frees up anywhere in the shard
        d.starved = true;
        starved.push_back(d.slot);
      }
      at = no_wakeup_ms;
    }
    wake = std::min(wake, at);
  }
  return wake;
}

void scheduler::state::reschedule(std::uint32_t slot, std::int64_t now_ms) noexcept {
  destination_record& d = destinations[slot];
  std::int64_t wake_at = compute_wake(d, now_ms);
  update_idle(slot, now_ms);
  if (wake_at == d.wake_ms) return;
  d.wake_ms = wake_at;  // an older heap entry no longer matches and is skipped
  if (wake_at == no_wakeup_ms) return;
  wake.push_back(heap_entry{wake_at, slot, d.generation});
  std::push_heap(wake.begin(), wake.end(), heap_later{});
}

void scheduler::state::service(std::uint32_t slot, std::int64_t now_ms,
                               std::vector<connect_request>& out, std::uint32_t open_max) {
  destination_record& d = destinations[slot];
  if (d.suspended) return;
  move_due(d, now_ms);
  for (; open_max > 0 && live_connections < config.connections_max && can_open(d, now_ms);
       --open_max) {
    std::uint32_t c;
    if (!free_connections.empty()) {
      c = free_connections.back();
      free_connections.pop_back();
    } else {
      c = static_cast<std::uint32_t>(connections.size());
      connections.emplace_back();
    }
    connection_record& record = connections[c];
    record.destination = slot;
    record.taken = 0;
    record.live = true;
    record.started = false;
    ++live_connections;
    ++d.connections;
    ++d.connections_starting;
    site_connection_opened(d);
    out.push_back(connect_request{connection_id{c, record.generation},
                                  destination_id{slot, d.generation}, d.name, d.probing});
  }
}

void scheduler::state::release_connection(connection_id id, std::int64_t now_ms) noexcept {
  RINGMTA_ASSERT(id.slot < connections.size());
  connection_record& record = connections[id.slot];
  RINGMTA_ASSERT(record.live && record.generation == id.generation);
  destination_record& d = destinations[record.destination];
  RINGMTA_ASSERT(d.connections > 0);
  --d.connections;
  if (!record.started) {
    --d.connections_starting;
    site_connection_started(d, now_ms);
  }
  record.live = false;
  ++record.generation;
  free_connections.push_back(id.slot);
  --live_connections;
  std::uint32_t slot = record.destination;
  site_connection_released(d, now_ms);
  if (d.leaving_site && d.connections == 0) leave_site(d);
  // A starved destination may go now: poll() wakes them all (next_wakeup_ms says when).
  if (!starved.empty()) starved_wake_ms = std::min(starved_wake_ms, now_ms);
  reschedule(slot, now_ms);
}

// ---------------------------------------------------------------- destination backoff

// RFC 5321 §4.5.4.1: a destination that cannot be reached is retried later as a whole; every
// ready job shares one next attempt, so a dead host sees one probe, not one per message.
// A connection failure (DNS, every address refused) tried no job: it counts one attempt for
// one job only, the probe's (the oldest ready), and only when it starts a backoff; the other
// ready jobs wait on the destination unattempted, as move_due holds them back while probing.
// A failed destination so costs one deferral (one log record, one spool mark) per failure,
// not one per queued job (issue 15: 1.97 M deferrals at a restart's DNS storm). A pause
// (until_ms > 0, a reply rule that saw the reply) defers every ready job as before.
void scheduler::state::backoff(std::uint32_t slot, std::int64_t now_ms, const failure& reason,
                               std::int64_t until_ms) noexcept {
  destination_record& d = destinations[slot];
  std::uint32_t attempted_max = 0xffffffffu;
  if (until_ms > 0) {
    d.backoff_until_ms = std::max(d.backoff_until_ms, until_ms);
  } else if (++counters.connection_failures; d.backoff_until_ms <= now_ms) {
    // Connections that were opened together and fail together are one failure: only a
    // failure outside a backoff raises the count (and so the delay).
    if (d.connection_failures < 0xffffffffu) ++d.connection_failures;
    d.backoff_until_ms = now_ms + probe_delay(d, now_ms);
    attempted_max = 1;
  } else {
    attempted_max = 0;  // one of the connections opened with it failed first: counted there
  }
  std::int64_t until = d.backoff_until_ms;
  d.probing = true;
  std::uint32_t error = intern(reason);
  release(d.error);
  d.error = error;
  d.last_error_ms = now_ms;
  for (std::uint32_t attempted = 0; d.ready.head != nil_slot;) {
    std::uint32_t job_slot = d.ready.head;
    unlink(d.ready, job_slot);
    job_record& job = jobs[job_slot];
    const bool attempt = attempted < attempted_max;
    if (attempt) {
      ++attempted;
      note_attempt(job, now_ms, error);
      ++counters.deferred;
    }
    if (now_ms >= expiry_ms(job)) {
      if (!attempt) note_attempt(job, now_ms, error);  // as wait_for_destination does
      ++counters.expired;
      push_event(event_kind::expired, job_slot, 0);
      continue;
    }
    schedule(d, job_slot, until);
    if (attempt) push_event(event_kind::deferred, job_slot, until);
    if (warn_delay(job, now_ms)) push_event(event_kind::delay_warning, job_slot, until);
  }
  wait_for_destination(d, now_ms, until, error);
  reschedule(slot, now_ms);
}

// Scheduled jobs due before the destination is back wait for it too (one shared time). They
// were not attempted (move_due held them back for the probe), so they get no deferral; the
// lifetime and the delay warning are still checked here, at every destination failure, as
// they would be for a job that went out and was deferred. One pass over integers, no I/O.
void scheduler::state::wait_for_destination(destination_record& d, std::int64_t now_ms,
                                            std::int64_t until, std::uint32_t error) noexcept {
  bool moved = false;
  for (std::size_t i = 0; i < d.scheduled.size();) {
    job_entry& entry = d.scheduled[i];
    if (entry.time_ms >= until) {
      ++i;
      continue;
    }
    const std::uint32_t job_slot = entry.slot;
    job_record& job = jobs[job_slot];
    moved = true;
    if (now_ms >= expiry_ms(job)) {
      entry = d.scheduled.back();  // the heap is rebuilt below
      d.scheduled.pop_back();
      note_attempt(job, now_ms, error);
      ++counters.expired;
      push_event(event_kind::expired, job_slot, 0);
      continue;
    }
    entry.time_ms = until;
    job.set_next_attempt_ms(until);
    if (warn_delay(job, now_ms)) push_event(event_kind::delay_warning, job_slot, until);
    ++i;
  }
  if (moved) std::make_heap(d.scheduled.begin(), d.scheduled.end(), heap_later{});
}

// ---------------------------------------------------------------- public: construction

scheduler::scheduler(scheduler_config config) : _state(std::make_unique<state>()) {
  RINGMTA_ASSERT(!config.retry_delays_ms.empty());
  for (std::int64_t delay : config.retry_delays_ms) RINGMTA_ASSERT(delay > 0);
  RINGMTA_ASSERT(limits_valid(config.limits));
  RINGMTA_ASSERT(config.jitter_permille < 1000);
  RINGMTA_ASSERT(config.lifetime_max_ms > 0 && config.idle_forget_ms >= 0);
  RINGMTA_ASSERT(config.destinations_max >= 1 && config.connections_max >= 1);
  RINGMTA_ASSERT(config.destinations_max <= destination_slots_max);  // job_record::destination
  RINGMTA_ASSERT(config.error_texts_max < job_error_limit);  // job_record::error's bits
  _state->random = config.random_seed;
  _state->config = std::move(config);
}

scheduler::~scheduler() = default;

const scheduler_config& scheduler::config() const noexcept { return _state->config; }

std::uint32_t scheduler::slot_count() const noexcept {
  return static_cast<std::uint32_t>(_state->destinations.size());
}

}  // namespace ringmta::queue
