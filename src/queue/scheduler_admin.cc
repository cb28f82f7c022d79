// queue::scheduler: operator actions (suspend, resume, flush, bounce-all, limits) and
// inspection. Not on the hot path: may walk a destination's containers.
#include <algorithm>

#include "ringmta/core/assert.h"
#include "ringmta/queue/scheduler.h"
#include "scheduler_state.h"

namespace ringmta::queue {

namespace {

constexpr std::string_view operator_bounce_text = "bounced by operator";

}  // namespace

bool scheduler::suspend(std::string_view name, std::int64_t now_ms) noexcept {
  state& s = *_state;
  if (name.empty() || name.size() > destination_name_bytes_max) return false;
  destination_record* d = s.find(name);
  if (d == nullptr) {
    if (s.live_destinations >= s.config.destinations_max && !s.forget_one_idle(now_ms))
      return false;
    d = &s.destinations[s.create(name, now_ms)];
  }
  d->suspended = true;
  s.reschedule(d->slot, now_ms);
  return true;
}

bool scheduler::resume(std::string_view name, std::int64_t now_ms) noexcept {
  state& s = *_state;
  destination_record* d = s.find(name);
  if (d == nullptr) return false;
  d->suspended = false;
  s.reschedule(d->slot, now_ms);
  return true;
}

// A backoff beyond the pause (connection failures after it began) stays; jobs with a retry
// time of their own after the pause's end keep it.
bool scheduler::lift_pause(std::string_view name, std::int64_t now_ms) noexcept {
  state& s = *_state;
  destination_record* d = s.find(name);
  if (d == nullptr || d->paused_until_ms <= now_ms) return false;
  const std::int64_t until = d->paused_until_ms;
  d->paused_until_ms = 0;
  s.move_due(*d, until, false);
  if (d->backoff_until_ms <= until) d->backoff_until_ms = 0;
  s.reschedule(d->slot, now_ms);
  return true;
}

// Everything scheduled becomes ready now (in next-attempt order); attempts stay as they are.
// A destination-wide backoff is lifted too: the operator asked for an attempt now.
std::size_t scheduler::flush(std::string_view name, std::int64_t now_ms) noexcept {
  state& s = *_state;
  destination_record* d = s.find(name);
  if (d == nullptr) return 0;
  std::size_t moved = d->scheduled.size();
  s.move_due(*d, std::numeric_limits<std::int64_t>::max(), false);
  d->backoff_until_ms = 0;
  s.reschedule(d->slot, now_ms);
  return moved;
}

std::size_t scheduler::flush_all(std::int64_t now_ms) noexcept {
  state& s = *_state;
  std::size_t moved = 0;
  for (std::uint32_t slot = 0; slot < s.destinations.size(); ++slot) {
    destination_record& d = s.destinations[slot];
    if (!d.live) continue;
    moved += d.scheduled.size();
    s.move_due(d, std::numeric_limits<std::int64_t>::max(), false);
    d.backoff_until_ms = 0;
    s.reschedule(slot, now_ms);
  }
  return moved;
}

std::size_t scheduler::bounce_all(std::string_view name, std::int64_t now_ms) noexcept {
  state& s = *_state;
  destination_record* found = s.find(name);
  if (found == nullptr) return 0;
  std::uint32_t slot = found->slot;
  std::uint32_t error = s.intern(failure{0, status_code{5, 0, 0}, operator_bounce_text});
  std::size_t bounced = 0;
  auto bounce = [&](std::uint32_t job_slot) {
    job_record& job = s.jobs[job_slot];
    s.retain(error);
    s.release(job.error);
    job.error = error;
    s.push_event(event_kind::bounced_by_operator, job_slot, 0);
    ++bounced;
  };
  destination_record& d = s.destinations[slot];
  while (d.ready.head != nil_slot) {
    std::uint32_t job_slot = d.ready.head;
    s.unlink(d.ready, job_slot);
    bounce(job_slot);
  }
  for (const job_entry& entry : d.scheduled) bounce(entry.slot);
  d.scheduled.clear();
  for (std::uint32_t job_slot = d.in_flight.head; job_slot != nil_slot;
       job_slot = s.jobs[job_slot].next)
    s.jobs[job_slot].flags |= job_flag_bounce;  // bounced when its connection defers it
  s.release(error);
  s.counters.bounced_by_operator += bounced;
  s.reschedule(slot, now_ms);
  return bounced;
}

void scheduler::set_limits(std::string_view name, const destination_limits& limits) {
  state& s = *_state;
  RINGMTA_ASSERT(limits.connections_max >= 1 && limits.rate_period_ms >= 1 &&
                 limits.rate_burst >= 1 && limits.recipients_per_transaction_max >= 1 &&
                 limits.recipients_per_transaction_max <= job_recipients_max);
  s.overrides.insert_or_assign(std::string(name), limits);
  if (destination_record* d = s.find(name); d != nullptr) {
    s.apply_limits(*d, limits);
    s.reschedule(d->slot, d->bucket.time_ms);
  }
}

bool scheduler::reshape(std::string_view name, const destination_limits& limits) {
  state& s = *_state;
  RINGMTA_ASSERT(limits.connections_max >= 1 && limits.rate_period_ms >= 1 &&
                 limits.rate_burst >= 1 && limits.recipients_per_transaction_max >= 1 &&
                 limits.recipients_per_transaction_max <= job_recipients_max);
  destination_record* d = s.find(name);
  if (d == nullptr) return false;
  if (s.overrides.count(name) != 0 || d->limits == limits) return true;  // an operator's wins
  s.apply_limits(*d, limits);
  s.reschedule(d->slot, d->bucket.time_ms);
  return true;
}

void scheduler::set_policy(const scheduler_config& next) noexcept {
  state& s = *_state;
  RINGMTA_ASSERT(!next.retry_delays_ms.empty() && next.lifetime_max_ms > 0);
  for (const std::int64_t delay : next.retry_delays_ms) RINGMTA_ASSERT(delay > 0);
  RINGMTA_ASSERT(next.limits.connections_max >= 1 && next.limits.rate_period_ms >= 1 &&
                 next.limits.rate_burst >= 1 && next.limits.recipients_per_transaction_max >= 1 &&
                 next.limits.recipients_per_transaction_max <= job_recipients_max);
  s.config.retry_delays_ms = next.retry_delays_ms;  // the vector keeps its capacity mostly
  s.config.lifetime_max_ms = next.lifetime_max_ms;
  s.config.delay_warning_ms = next.delay_warning_ms;
  s.config.probe_backoff_max_ms = next.probe_backoff_max_ms;
  if (s.config.limits == next.limits && !s.config.limits_for) return;
  s.config.limits = next.limits;
  for (std::uint32_t slot = 0; slot < s.destinations.size(); ++slot) {
    destination_record& d = s.destinations[slot];
    if (!d.live || s.overrides.find(d.name) != s.overrides.end()) continue;
    s.apply_limits(d, s.config.limits_for ? s.config.limits_for(d.name) : next.limits);
    s.reschedule(slot, d.bucket.time_ms);
  }
}

void scheduler::clear_limits(std::string_view name) {
  state& s = *_state;
  if (auto found = s.overrides.find(name); found != s.overrides.end()) s.overrides.erase(found);
  if (destination_record* d = s.find(name); d != nullptr) {
    s.apply_limits(*d, s.config.limits);
    s.reschedule(d->slot, d->bucket.time_ms);
  }
}

void scheduler::state::fill_info(std::uint32_t slot, destination_info& out) const noexcept {
  const destination_record& d = destinations[slot];
  out.id = destination_id{slot, d.generation};
  out.name = d.name;
  out.suspended = d.suspended;
  out.probing = d.probing;
  out.ready = d.ready.count;
  out.scheduled = static_cast<std::uint32_t>(d.scheduled.size());
  out.in_flight = d.in_flight.count;
  out.held = d.held.count;
  out.connections = d.connections;
  out.connection_failures = d.connection_failures;
  out.backoff_until_ms = d.backoff_until_ms;
  out.paused_until_ms = d.paused_until_ms;
  out.next_attempt_ms = d.scheduled.empty() ? 0 : d.scheduled.front().time_ms;
  out.last_error_ms = d.last_error_ms;
  out.last_error = d.error != 0 ? errors[d.error].text() : std::string_view();
  out.limits = d.limits;
}

bool scheduler::inspect(std::string_view name, destination_info& out) const noexcept {
  const state& s = *_state;
  const destination_record* d = s.find(name);
  if (d == nullptr) return false;
  s.fill_info(d->slot, out);
  return true;
}

bool scheduler::inspect(destination_id id, destination_info& out) const noexcept {
  const state& s = *_state;
  if (id.slot >= s.destinations.size()) return false;
  const destination_record& d = s.destinations[id.slot];
  if (!d.live || d.generation != id.generation) return false;
  s.fill_info(id.slot, out);
  return true;
}

bool scheduler::info_at(std::uint32_t slot, destination_info& out) const noexcept {
  const state& s = *_state;
  if (!s.destinations[slot].live) return false;
  s.fill_info(slot, out);
  return true;
}

std::size_t scheduler::list_jobs(std::string_view name, std::size_t count_max,
                                 std::vector<job_view>& out) const {
  const state& s = *_state;
  const destination_record* d = s.find(name);
  if (d == nullptr) return 0;
  std::size_t before = out.size();
  for (const job_list* list : {&d->in_flight, &d->ready}) {
    for (std::uint32_t slot = list->head; slot != nil_slot && out.size() - before < count_max;
         slot = s.jobs[slot].next)
      out.push_back(s.view(slot));
  }
  std::size_t room = count_max - (out.size() - before);
  if (room > 0 && !d->scheduled.empty()) {
    std::vector<job_entry> order(d->scheduled);
    std::size_t take = std::min(room, order.size());
    auto earlier = [](const job_entry& a, const job_entry& b) { return heap_later{}(b, a); };
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(take),
                      order.end(), earlier);
    for (std::size_t i = 0; i < take; ++i) out.push_back(s.view(order[i].slot));
  }
  for (std::uint32_t slot = d->held.head; slot != nil_slot && out.size() - before < count_max;
       slot = s.jobs[slot].next)
    out.push_back(s.view(slot));
  return out.size() - before;
}

scheduler_stats scheduler::stats() const noexcept {
  const state& s = *_state;
  scheduler_stats out = s.counters;
  out.destinations = s.live_destinations;
  out.jobs = s.live_jobs;
  out.connections = s.live_connections;
  out.ready = out.scheduled = out.in_flight = out.held = 0;
  std::uint64_t bytes = s.jobs.capacity_bytes() +
                        s.destinations.bytes() + s.sites.bytes() +
                        s.connections.capacity() * sizeof(connection_record) +
                        s.wake.capacity() * sizeof(heap_entry) +
                        s.by_name.size() * (sizeof(std::string) + 32);
  for (std::uint32_t slot = 0; slot < s.destinations.size(); ++slot) {
    const destination_record& d = s.destinations[slot];
    bytes += d.scheduled.capacity() * sizeof(job_entry) + d.name.capacity();
    if (!d.live) continue;
    out.ready += d.ready.count;
    out.scheduled += d.scheduled.size();
    out.in_flight += d.in_flight.count;
    out.held += d.held.count;
  }
  for (const error_entry& entry : s.errors) bytes += sizeof(error_entry) + entry.key.capacity();
  out.memory_bytes = bytes;
  out.error_texts = s.errors.empty() ? 0 : s.errors.size() - 1 - s.free_errors.size();
  return out;
}

}  // namespace ringmta::queue
