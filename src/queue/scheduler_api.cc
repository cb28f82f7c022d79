// queue::scheduler: the embedder's data path (add, poll, take, outcomes, events).
#include <algorithm>

#include "ringmta/core/assert.h"
#include "ringmta/queue/scheduler.h"
#include "scheduler_state.h"

namespace ringmta::queue {

namespace {

// Jobs needed for sorted, unique recipient indices: a job covers at most
// `per_transaction` recipients within one window of job_recipients_max indices.
std::uint32_t count_jobs(const std::vector<std::uint16_t>& recipients,
                         std::uint32_t per_transaction) noexcept {
  std::uint32_t jobs = 0;
  for (std::size_t i = 0; i < recipients.size(); ++jobs) {
    std::uint16_t base = recipients[i];
    for (std::uint32_t taken = 0; i < recipients.size() && taken < per_transaction &&
                                  recipients[i] - base < static_cast<int>(job_recipients_max);
         ++taken)
      ++i;
  }
  return jobs;
}

}  // namespace

add_status scheduler::can_add(std::string_view name, std::uint32_t job_count) const noexcept {
  const state& s = *_state;
  if (name.empty() || name.size() > destination_name_bytes_max || job_count == 0)
    return add_status::invalid;
  if (std::uint64_t{s.live_jobs} + job_count > s.config.jobs_max) return add_status::jobs_full;
  const destination_record* d = s.find(name);
  std::uint64_t queued = d != nullptr ? d->job_count() : 0;
  if (queued + job_count > s.config.jobs_per_destination_max) return add_status::destination_full;
  if (d == nullptr && s.live_destinations >= s.config.destinations_max &&
      s.idle_head == nil_slot)
    return add_status::destinations_full;
  return add_status::added;
}

add_result scheduler::add(std::string_view name, const job_spec& spec, std::int64_t now_ms,
                          admission mode) noexcept {
  state& s = *_state;
  add_result result;
  if (name.empty() || name.size() > destination_name_bytes_max || spec.recipients.empty())
    return result;
  s.recipients.assign(spec.recipients.begin(), spec.recipients.end());
  std::sort(s.recipients.begin(), s.recipients.end());
  s.recipients.erase(std::unique(s.recipients.begin(), s.recipients.end()), s.recipients.end());

  destination_record* found = s.find(name);
  const destination_limits* limits = &s.config.limits;
  if (found != nullptr) limits = &found->limits;
  else if (auto o = s.overrides.find(name); o != s.overrides.end()) limits = &o->second;
  std::uint32_t count = count_jobs(s.recipients, limits->recipients_per_transaction_max);
  if (mode == admission::checked) {
    std::uint64_t queued = found != nullptr ? found->job_count() : 0;
    if (std::uint64_t{s.live_jobs} + count > s.config.jobs_max) {
      result.status = add_status::jobs_full;
      return result;
    }
    if (queued + count > s.config.jobs_per_destination_max) {
      result.status = add_status::destination_full;
      return result;
    }
  }
  std::uint32_t slot;
  if (found != nullptr) {
    slot = found->slot;
  } else {
    if (s.live_destinations >= s.config.destinations_max && !s.forget_one_idle(now_ms) &&
        (mode == admission::checked || s.live_destinations >= destination_slots_max)) {
      result.status = add_status::destinations_full;
      return result;
    }
    slot = s.create(name, now_ms);
  }
  // Recovery: jobs that already failed carry their attempts; a destination nobody has
  // reached since (no connection yet) resumes its failure streak from them, so the backoff
  // after a restart continues the retry schedule instead of starting it over.
  if (destination_record& d = s.destinations[slot];
      spec.attempts > d.connection_failures && d.connections == 0 && d.in_flight.count == 0)
    d.connection_failures = spec.attempts;
  std::uint32_t per_transaction = s.destinations[slot].limits.recipients_per_transaction_max;
  for (std::size_t i = 0; i < s.recipients.size();) {
    std::uint32_t job_slot = s.allocate_job();
    job_record& job = s.jobs[job_slot];
    std::uint16_t base = s.recipients[i];
    for (std::uint32_t taken = 0; i < s.recipients.size() && taken < per_transaction &&
                                  s.recipients[i] - base < static_cast<int>(job_recipients_max);
         ++taken, ++i)
      job.mask |= std::uint64_t{1} << (s.recipients[i] - base);
    job.message = spec.message;
    job.first_recipient = base;
    job.received_seconds = static_cast<std::uint32_t>(
        std::clamp<std::int64_t>(spec.received_seconds, 0, 0xffffffffLL));
    job.attempts = spec.attempts;
    job.destination = slot;
    destination_record& d = s.destinations[slot];
    if (spec.held) {
      job.state = job_state::held;
      job.set_next_attempt_ms(spec.not_before_ms);
      s.push_back(d.held, job_slot);
    } else if (spec.not_before_ms > now_ms) {
      s.schedule(d, job_slot, spec.not_before_ms);
    } else {
      job.state = job_state::ready;
      job.set_next_attempt_ms(now_ms);
      s.push_back(d.ready, job_slot);
    }
    ++result.jobs_added;
    ++s.counters.added;
  }
  s.reschedule(slot, now_ms);
  result.status = add_status::added;
  result.destination = destination_id{slot, s.destinations[slot].generation};
  return result;
}

std::int64_t scheduler::next_wakeup_ms() noexcept {
  state& s = *_state;
  std::int64_t starved_at = no_wakeup_ms;
  if (!s.starved.empty() && s.live_connections < s.config.connections_max)
    starved_at = s.starved_wake_ms;
  while (!s.wake.empty()) {
    const heap_entry& top = s.wake.front();
    const destination_record& d = s.destinations[top.slot];
    if (d.live && d.generation == top.generation && d.wake_ms == top.time_ms)
      return std::min(top.time_ms, starved_at);
    std::pop_heap(s.wake.begin(), s.wake.end(), heap_later{});
    s.wake.pop_back();
  }
  return starved_at;
}

std::size_t scheduler::poll(std::int64_t now_ms, std::vector<connect_request>& out) noexcept {
  state& s = *_state;
  const std::size_t before = out.size();
  s.sweep_idle(now_ms);
  // Destinations that waited for a shard-wide connection slot go first, one connection each
  // while others wait, in the order they started waiting (round robin: one that had a turn
  // and wants more waits at the back), and
  // before the wake heap (whose order is by time and slot, not by waiting); those that find
  // no slot starve again (compute_wake), at the back.
  if (s.live_connections < s.config.connections_max) {
    s.starved_wake_ms = no_wakeup_ms;
    for (std::size_t count = s.starved.size();
         count > 0 && s.live_connections < s.config.connections_max; --count) {
      std::uint32_t slot = s.starved.front();
      s.starved.pop_front();
      destination_record& d = s.destinations[slot];
      if (!d.live || !d.starved) continue;
      d.starved = false;
      d.wake_ms = no_wakeup_ms;  // force a fresh heap entry
      s.service(slot, now_ms, out, s.starved.empty() ? 0xffffffffu : 1);  // one each per turn
      s.reschedule(slot, now_ms);
    }
  }
  s.due.clear();
  while (!s.wake.empty() && s.wake.front().time_ms <= now_ms) {
    std::pop_heap(s.wake.begin(), s.wake.end(), heap_later{});
    heap_entry entry = s.wake.back();
    s.wake.pop_back();
    destination_record& d = s.destinations[entry.slot];
    if (!d.live || d.generation != entry.generation || d.wake_ms != entry.time_ms) continue;
    d.wake_ms = no_wakeup_ms;
    s.due.push_back(entry.slot);
  }
  for (std::uint32_t slot : s.due) {
    s.service(slot, now_ms, out);
    s.reschedule(slot, now_ms);
  }
  // Stale entries pile up when wake times move later; rebuild from the live ones.
  if (s.wake.size() > 4 * std::size_t{s.live_destinations} + 1024) {
    s.wake.clear();
    for (std::uint32_t slot = 0; slot < s.destinations.size(); ++slot) {
      const destination_record& d = s.destinations[slot];
      if (d.live && d.wake_ms != no_wakeup_ms)
        s.wake.push_back(heap_entry{d.wake_ms, slot, d.generation});
    }
    std::make_heap(s.wake.begin(), s.wake.end(), heap_later{});
  }
  return out.size() - before;
}

take_result scheduler::take_for_connection(connection_id id, std::int64_t now_ms) noexcept {
  state& s = *_state;
  RINGMTA_ASSERT(id.slot < s.connections.size());
  connection_record& c = s.connections[id.slot];
  RINGMTA_ASSERT(c.live && c.generation == id.generation);
  std::uint32_t slot = c.destination;
  destination_record& d = s.destinations[slot];
  take_result result;
  const bool reused = c.started;
  if (!c.started) {  // the connection works: the destination is reachable again
    c.started = true;
    --d.connections_starting;
    s.site_connection_started(d, now_ms);
    d.connection_failures = 0;
    d.probing = false;
    if (d.paused_until_ms <= now_ms) d.backoff_until_ms = 0;
  }
  const bool paused = d.paused_until_ms > now_ms;
  if (!d.suspended && !paused) s.move_due(d, now_ms);
  std::uint32_t per_connection = d.limits.messages_per_connection_max;
  if (d.suspended || paused || (per_connection != 0 && c.taken >= per_connection) ||
      s.turn_over(d, c)) {
    result.status = take_status::close;
  } else if (d.ready.head == nil_slot || (reused && d.ready.count <= d.connections_starting)) {
    // poll() opened a connection for each ready job beyond those starting; a connection that
    // finished its delivery first must not take a job a starting one was opened for, or the
    // new connection finds nothing and does only EHLO/QUIT (issue 17 item 8). The reused one
    // idles instead; if the starting one fails, the job is still ready for it.
    result.status = take_status::none;
  } else {
    d.bucket.refill(d.limits, now_ms);
    const std::int64_t at =
        std::max(d.bucket.time_for(d.limits, 1), s.site_rate_time(d, now_ms, false));
    if (at > now_ms) {
      result.status = take_status::throttled;
      result.retry_at_ms = at;
    } else {
      std::uint32_t job_slot = d.ready.head;
      s.unlink(d.ready, job_slot);
      s.jobs[job_slot].state = job_state::in_flight;
      s.push_back(d.in_flight, job_slot);
      d.bucket.take(d.limits);
      s.site_take(d);
      ++c.taken;
      result.status = take_status::job;
      result.job = s.view(job_slot);
    }
  }
  s.reschedule(slot, now_ms);
  return result;
}

void scheduler::connection_closed(connection_id id, std::int64_t now_ms) noexcept {
  _state->release_connection(id, now_ms);
}

void scheduler::connection_failed(connection_id id, std::int64_t now_ms,
                                  const failure& reason) noexcept {
  state& s = *_state;
  RINGMTA_ASSERT(id.slot < s.connections.size());
  std::uint32_t slot = s.connections[id.slot].destination;
  s.release_connection(id, now_ms);
  s.backoff(slot, now_ms, reason);
}

void scheduler::defer_destination(destination_id id, std::int64_t now_ms,
                                  const failure& reason) noexcept {
  state& s = *_state;
  s.at(id);
  s.backoff(id.slot, now_ms, reason);
}

void scheduler::pause(destination_id id, std::int64_t now_ms, std::int64_t until_ms,
                      const failure& reason) noexcept {
  state& s = *_state;
  destination_record& d = s.at(id);
  if (until_ms <= now_ms) return;
  d.paused_until_ms = std::max(d.paused_until_ms, until_ms);
  s.backoff(id.slot, now_ms, reason, d.paused_until_ms);
}

void scheduler::delivered(job_id id, std::int64_t now_ms) noexcept {
  state& s = *_state;
  job_record& job = s.job_at(id);
  RINGMTA_ASSERT(job.state == job_state::in_flight);
  std::uint32_t slot = job.destination;
  s.unlink(s.destinations[slot].in_flight, id.slot);
  s.free_job(id.slot);
  ++s.counters.delivered;
  s.reschedule(slot, now_ms);
}

void scheduler::failed(job_id id, std::int64_t now_ms, const failure& reason) noexcept {
  state& s = *_state;
  job_record& job = s.job_at(id);
  RINGMTA_ASSERT(job.state == job_state::in_flight);
  std::uint32_t slot = job.destination;
  destination_record& d = s.destinations[slot];
  s.unlink(d.in_flight, id.slot);
  s.free_job(id.slot);
  std::uint32_t error = s.intern(reason);
  s.release(d.error);
  d.error = error;
  d.last_error_ms = now_ms;
  ++s.counters.failed;
  s.reschedule(slot, now_ms);
}

defer_result scheduler::deferred(job_id id, std::int64_t now_ms, const failure& reason,
                                 std::uint64_t keep_mask) noexcept {
  state& s = *_state;
  job_record& job = s.job_at(id);
  RINGMTA_ASSERT(job.state == job_state::in_flight);
  RINGMTA_ASSERT((job.mask & keep_mask) != 0);
  std::uint32_t slot = job.destination;
  destination_record& d = s.destinations[slot];
  s.unlink(d.in_flight, id.slot);
  job.mask &= keep_mask;
  defer_result result;
  // Operator actions that found the job in flight (scheduler_message.cc): its transaction
  // is over, the action applies now. Removal wins over a bounce, a bounce over a hold.
  if ((job.flags & (job_flag_bounce | job_flag_remove)) != 0) {
    const bool removed = (job.flags & job_flag_remove) != 0;
    result.status = removed ? defer_status::removed_by_operator : defer_status::bounced_by_operator;
    result.attempts = job.attempts;
    ++(removed ? s.counters.removed_by_operator : s.counters.bounced_by_operator);
    s.free_job(id.slot);
    s.reschedule(slot, now_ms);
    return result;
  }
  std::uint32_t error = s.intern(reason);
  s.note_attempt(job, now_ms, error);
  s.release(d.error);
  d.error = error;  // the destination keeps the caller's reference
  d.last_error_ms = now_ms;
  ++s.counters.deferred;
  result.attempts = job.attempts;
  std::int64_t expiry = s.expiry_ms(job);
  if (now_ms >= expiry) {  // RFC 5321 §4.5.4.1: give up after the maximum queue lifetime
    result.status = defer_status::expired;
    ++s.counters.expired;
    s.free_job(id.slot);
    s.reschedule(slot, now_ms);
    return result;
  }
  // The last retry happens at the expiry time at the latest, so a message is bounced close
  // to its lifetime rather than one long delay after it.
  std::int64_t next = std::min(now_ms + s.retry_delay(d, job.attempts), expiry);
  result.delay_warning = s.warn_delay(job, now_ms);
  if ((job.flags & job_flag_hold) != 0) {  // held while in flight: held now, no retry
    job.flags &= static_cast<std::uint8_t>(~job_flag_hold);
    job.state = job_state::held;
    job.set_next_attempt_ms(next);
    s.push_back(d.held, id.slot);
    result.status = defer_status::held;
    result.next_attempt_ms = next;
    s.reschedule(slot, now_ms);
    return result;
  }
  s.schedule(d, id.slot, next);
  result.next_attempt_ms = next;
  s.reschedule(slot, now_ms);
  return result;
}

bool scheduler::next_event(job_event& out) noexcept {
  state& s = *_state;
  s.release(s.event_error_held);
  s.event_error_held = 0;
  if (s.events.empty()) return false;
  out = s.events.front().event;
  s.event_error_held = s.events.front().error;
  s.events.pop_front();
  return true;
}

}  // namespace ringmta::queue
