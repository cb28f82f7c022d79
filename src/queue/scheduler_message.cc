// queue::scheduler: per-message operator actions (hold, release, retry, bounce, remove) on one
// message's jobs at one destination. Not on the hot path: walks the destination's lists.
// A job in flight is never taken back; it carries a flag that deferred() applies
// (scheduler_api.cc), so the transaction's own outcome always stands.
#include <algorithm>

#include "ringmta/core/assert.h"
#include "ringmta/queue/scheduler.h"
#include "scheduler_state.h"

namespace ringmta::queue {

namespace {

constexpr std::string_view operator_bounce_text = "bounced by the operator";
constexpr std::string_view operator_remove_text = "deleted by the operator";

// The jobs of `message` in `list`, in list order.
void collect(const job_slab& jobs, const job_list& list, message_key message,
             std::vector<std::uint32_t>& out) {
  for (std::uint32_t slot = list.head; slot != nil_slot; slot = jobs[slot].next)
    if (jobs[slot].message == message) out.push_back(slot);
}

bool in_list(const job_slab& jobs, const job_list& list, message_key message) noexcept {
  for (std::uint32_t slot = list.head; slot != nil_slot; slot = jobs[slot].next)
    if (jobs[slot].message == message) return true;
  return false;
}

}  // namespace

void scheduler::state::take_queued(destination_record& d, message_key message,
                                   std::vector<std::uint32_t>& out) noexcept {
  std::vector<std::uint32_t> ready;
  collect(jobs, d.ready, message, ready);
  for (const std::uint32_t slot : ready) unlink(d.ready, slot);
  out.insert(out.end(), ready.begin(), ready.end());
  const auto first = std::stable_partition(
      d.scheduled.begin(), d.scheduled.end(),
      [&](const job_entry& e) { return jobs[e.slot].message != message; });
  for (auto it = first; it != d.scheduled.end(); ++it) out.push_back(it->slot);
  if (first != d.scheduled.end()) {
    d.scheduled.erase(first, d.scheduled.end());
    std::make_heap(d.scheduled.begin(), d.scheduled.end(), heap_later{});
  }
}

bool scheduler::has_job(job_id job) const noexcept {
  const state& s = *_state;
  if (job.slot >= s.jobs.size()) return false;
  const job_record& record = s.jobs[job.slot];
  return record.state != job_state::free && record.generation == job.generation;
}

bool scheduler::has_message(std::string_view name, message_key message) const noexcept {
  const state& s = *_state;
  const destination_record* d = s.find(name);
  if (d == nullptr) return false;
  return in_list(s.jobs, d->ready, message) || in_list(s.jobs, d->in_flight, message) ||
         in_list(s.jobs, d->held, message) ||
         std::any_of(d->scheduled.begin(), d->scheduled.end(),
                     [&](const job_entry& e) { return s.jobs[e.slot].message == message; });
}

scheduler::message_action_result scheduler::hold_message(std::string_view name,
                                                         message_key message,
                                                         std::int64_t now_ms) noexcept {
  state& s = *_state;
  message_action_result result;
  destination_record* d = s.find(name);
  if (d == nullptr) return result;
  std::vector<std::uint32_t> slots;
  s.take_queued(*d, message, slots);
  for (const std::uint32_t slot : slots) {
    s.jobs[slot].state = job_state::held;
    s.push_back(d->held, slot);
  }
  std::vector<std::uint32_t> already;
  collect(s.jobs, d->held, message, already);
  std::vector<std::uint32_t> flying;
  collect(s.jobs, d->in_flight, message, flying);
  for (const std::uint32_t slot : flying) s.jobs[slot].flags |= job_flag_hold;
  result.jobs = static_cast<std::uint32_t>(already.size());
  result.in_flight = static_cast<std::uint32_t>(flying.size());
  result.found = result.jobs + result.in_flight > 0;
  s.reschedule(d->slot, now_ms);
  return result;
}

scheduler::message_action_result scheduler::release_message(std::string_view name,
                                                            message_key message,
                                                            std::int64_t now_ms) noexcept {
  state& s = *_state;
  message_action_result result;
  destination_record* d = s.find(name);
  if (d == nullptr) return result;
  std::vector<std::uint32_t> held;
  collect(s.jobs, d->held, message, held);
  for (const std::uint32_t slot : held) {
    s.unlink(d->held, slot);
    s.jobs[slot].state = job_state::ready;
    s.jobs[slot].set_next_attempt_ms(now_ms);
    s.push_back(d->ready, slot);
  }
  std::vector<std::uint32_t> flying;
  collect(s.jobs, d->in_flight, message, flying);
  for (const std::uint32_t slot : flying)
    s.jobs[slot].flags &= static_cast<std::uint8_t>(~job_flag_hold);
  std::vector<std::uint32_t> queued;
  collect(s.jobs, d->ready, message, queued);
  for (const job_entry& e : d->scheduled)
    if (s.jobs[e.slot].message == message) queued.push_back(e.slot);
  result.jobs = static_cast<std::uint32_t>(held.size());
  result.in_flight = static_cast<std::uint32_t>(flying.size());
  result.found = !queued.empty() || !flying.empty();
  s.reschedule(d->slot, now_ms);
  return result;
}

scheduler::message_action_result scheduler::retry_message(std::string_view name,
                                                          message_key message,
                                                          std::int64_t now_ms) noexcept {
  state& s = *_state;
  message_action_result result;
  destination_record* d = s.find(name);
  if (d == nullptr) return result;
  std::vector<std::uint32_t> slots;
  s.take_queued(*d, message, slots);
  for (const std::uint32_t slot : slots) {
    s.jobs[slot].state = job_state::ready;
    s.jobs[slot].set_next_attempt_ms(now_ms);
    s.push_back(d->ready, slot);
  }
  std::vector<std::uint32_t> others;
  collect(s.jobs, d->held, message, others);
  collect(s.jobs, d->in_flight, message, others);
  result.jobs = static_cast<std::uint32_t>(slots.size());
  result.found = !slots.empty() || !others.empty();
  if (!slots.empty()) d->backoff_until_ms = 0;  // the operator asked for an attempt now
  s.reschedule(d->slot, now_ms);
  return result;
}

// bounce_message / remove_message: queued and held jobs leave as `kind` events now; jobs in
// flight get `flag` and leave when their delivery defers.
scheduler::message_action_result scheduler::state::end_jobs(std::string_view name,
                                                            message_key message,
                                                            event_kind kind, job_flag flag,
                                                            std::string_view text,
                                                            std::uint64_t& counter,
                                                            std::int64_t now_ms) noexcept {
  state& s = *this;
  scheduler::message_action_result result;
  destination_record* found = s.find(name);
  if (found == nullptr) return result;
  destination_record& d = *found;
  std::vector<std::uint32_t> slots;
  s.take_queued(d, message, slots);
  std::vector<std::uint32_t> held;
  collect(s.jobs, d.held, message, held);
  for (const std::uint32_t slot : held) s.unlink(d.held, slot);
  slots.insert(slots.end(), held.begin(), held.end());
  const std::uint32_t error = s.intern(failure{550, status_code{5, 0, 0}, text});
  for (const std::uint32_t slot : slots) {
    job_record& job = s.jobs[slot];
    s.retain(error);
    s.release(job.error);
    job.error = error;
    s.push_event(kind, slot, 0);
  }
  s.release(error);
  std::vector<std::uint32_t> flying;
  collect(s.jobs, d.in_flight, message, flying);
  for (const std::uint32_t slot : flying) s.jobs[slot].flags |= flag;
  result.jobs = static_cast<std::uint32_t>(slots.size());
  result.in_flight = static_cast<std::uint32_t>(flying.size());
  result.found = result.jobs + result.in_flight > 0;
  counter += result.jobs;
  s.reschedule(d.slot, now_ms);
  return result;
}

scheduler::message_action_result scheduler::bounce_message(std::string_view name,
                                                           message_key message,
                                                           std::int64_t now_ms) noexcept {
  return _state->end_jobs(name, message, event_kind::bounced_by_operator, job_flag_bounce,
                          operator_bounce_text, _state->counters.bounced_by_operator, now_ms);
}

scheduler::message_action_result scheduler::remove_message(std::string_view name,
                                                           message_key message,
                                                           std::int64_t now_ms) noexcept {
  return _state->end_jobs(name, message, event_kind::removed_by_operator, job_flag_remove,
                          operator_remove_text, _state->counters.removed_by_operator, now_ms);
}

}  // namespace ringmta::queue
