// The shard loop, cross-shard messages and wake-ups.
//
// Sleep/wake protocol (Dekker-style, no lock): before sleeping the shard stores _sleeping = true,
// issues a full fence, then looks at its inbound queues once more; a sender pushes, issues a
// full fence, then reads _sleeping. At least one of them sees the other's write, so a message is
// never left waiting behind a sleeping shard. _wake_pending makes sure only one wake-up is sent
// per sleep, however many senders push.
#include <algorithm>
#include <cerrno>

#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"
#include "shard/kinds.h"
#include "ringmta/shard/runtime.h"

namespace ringmta::shard {

namespace {

std::uint64_t monotonic_ms() noexcept { return core::monotonic_ns() / 1'000'000; }

}  // namespace

bool shard::try_send(unsigned to, const message& m) noexcept {
  RINGMTA_ASSERT(to < count());
  message copy = m;
  copy.from_shard = _id;
  if (!_owner.queue(_id, to).try_push(copy)) {
    ++_counters.send_queue_full;
    return false;
  }
  ++_counters.messages_sent;
  if (to != _id && !_owes_wakeup[to]) {  // the wake-up, if needed, goes at the end of the batch
    _owes_wakeup[to] = 1;
    _owed_targets.push_back(to);
  }
  return true;
}

bool shard::try_send(unsigned to, const parcel& p) noexcept {
  message m{};
  m.handler = p.on_shard;
  m.words[0] = p.words[0];
  m.words[1] = p.words[1];
  return try_send(to, m);
}

// Called by a sender after its push (and a full fence): true when it must send the wake-up.
bool shard::wake_if_sleeping() noexcept {
  if (!_sleeping.load(std::memory_order_seq_cst)) return false;
  return !_wake_pending.exchange(true, std::memory_order_seq_cst);
}

void shard::flush_wakeups() noexcept {
  if (_owed_targets.empty()) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);  // our pushes before their _sleeping
  for (const unsigned to : _owed_targets) {
    _owes_wakeup[to] = 0;
    shard& target = _owner.at(to);
    if (!target.wake_if_sleeping()) continue;
    // The target's CQE carries our id; our own CQE is skipped unless the send fails.
    auto sent = _ring.prep_msg_ring(target._ring_fd, 0, io::pack_user_data(kinds::wake, 0, _id),
                                    io::pack_user_data(kinds::internal, 0, to),
                                    io::sqe::skip_success);
    if (sent) ++_counters.wakeups_sent;
  }
  _owed_targets.clear();
}

core::result<void> shard::send_fd(unsigned to, std::uint32_t source_fixed_index,
                                  std::uint32_t cookie) noexcept {
  RINGMTA_ASSERT(to < count() && to != _id);
  if (auto ok = _ring.reserve(2); !ok) return ok;
  // Linked: our slot is closed only once the target has the file; on failure the close is
  // cancelled and the sender keeps it.
  auto sent = _ring.prep_msg_ring_fd(_owner.at(to)._ring_fd, source_fixed_index,
                                     io::fixed_index_alloc,
                                     io::pack_user_data(kinds::fd_received, _id, cookie),
                                     io::pack_user_data(kinds::fd_sent, to, cookie),
                                     io::sqe::link | io::sqe::skip_success);
  if (!sent) return sent;
  return _ring.prep_close_fixed(source_fixed_index, io::pack_user_data(kinds::internal, 0, 0),
                                io::sqe::skip_success);
}

void shard::handle_message(const message& m) noexcept {
  ++_counters.messages_received;
  RINGMTA_ASSERT(m.handler != nullptr);
  m.handler(*this, m);
}

unsigned shard::drain_inbound() noexcept {
  unsigned handled = 0;
  const std::uint32_t limit = _owner.options().queue_capacity;
  for (unsigned from = 0; from < count(); ++from) {
    handled += static_cast<unsigned>(_owner.queue(from, _id).drain(
        [this](const message& m) { handle_message(m); }, limit));
  }
  if (_external_waiting.load(std::memory_order_acquire)) handled += drain_external();
  return handled;
}

unsigned shard::drain_external() noexcept {
  {
    std::lock_guard lock(_external_mutex);
    _external_batch.swap(_external);
    _external_waiting.store(false, std::memory_order_relaxed);
  }
  for (const message& m : _external_batch) handle_message(m);
  const auto handled = static_cast<unsigned>(_external_batch.size());
  _external_batch.clear();
  return handled;
}

bool shard::inbound_waiting() const noexcept {
  if (_external_waiting.load(std::memory_order_seq_cst)) return true;
  for (unsigned from = 0; from < count(); ++from) {
    if (!_owner.queue(from, _id).empty_for_consumer()) return true;
  }
  return false;
}

void shard::dispatch(const io::completion& done) noexcept {
  ++_counters.completions;
  const io::op_kind kind = done.kind();
  if (kind >= io::op_kind_first_free) {
    if (completion_handler* handler = _handlers[kind]) {
      handler->on_completion(*this, done);
    } else if (host_handler* host_only = _host_handlers[kind]) {
      host_only->on_completion(done);
    } else {
      ++_counters.stale_completions;
    }
    return;
  }
  const io::op_tag tag = done.tag();
  switch (kind) {
    case kinds::wake: ++_counters.wakeups_received; break;
    case kinds::fd_received:
      if (_fd_handler != nullptr && done.res >= 0) {
        _fd_handler->on_fd_received(*this, tag.generation, static_cast<std::uint32_t>(done.res),
                                    tag.slot);
      }
      break;
    case kinds::fd_sent:
      if (_fd_handler != nullptr && done.res < 0) {
        _fd_handler->on_fd_send_failed(*this, tag.generation, tag.slot, -done.res);
      }
      break;
    default: ++_counters.stale_completions; break;  // kinds::internal, or corrupt
  }
}

void shard::dispatch_all() noexcept {
  _ring.for_each_completion([this](const io::completion& done) { dispatch(done); });
}

void shard::flush_buffer_rings() noexcept {
  for (io::buffer_ring* buffers : _buffer_rings) buffers->flush();
}

void shard::run_iteration_hooks() noexcept {
  for (const hook_entry& hook : _hooks) {
    if (hook.shard_hook != nullptr) {
      hook.shard_hook->before_wait(*this);
    } else {
      hook.host_only->before_wait();
    }
  }
}

void shard::read_clock() noexcept {
  _now_ms = monotonic_ms();
  if (_now_ms >= _wall_reread_at_ms) {
    _wall_minus_monotonic_ms = core::wall_milliseconds() - static_cast<std::int64_t>(_now_ms);
    _wall_reread_at_ms = _now_ms + 1000;
  }
  _wall_ms = static_cast<std::int64_t>(_now_ms) + _wall_minus_monotonic_ms;
}

void shard::run() noexcept {
  const runtime_options& options = _owner.options();
  while (!_stop_requested.load(std::memory_order_relaxed)) {
    ++_counters.loop_iterations;
    read_clock();
    _last_turn_ms.store(_now_ms, std::memory_order_relaxed);  // heartbeat: one plain store
    _counters.timers_fired += _timers.advance(_now_ms);
    drain_inbound();
    run_iteration_hooks();
    flush_wakeups();
    flush_buffer_rings();
    // Sleep only when nothing is waiting: announce it, fence, and look once more.
    bool may_sleep = _ring.ready_completions() == 0;
    if (may_sleep) {
      _sleeping.store(true, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (inbound_waiting() || _stop_requested.load(std::memory_order_seq_cst)) may_sleep = false;
    }
    std::int64_t wait_ns = 0;
    if (may_sleep) {
      const std::uint64_t next = _timers.next_tick();
      std::uint64_t wait_ms = options.idle_wait_ms_max;
      if (next != core::timer_wheel::no_timer) {
        wait_ms = std::min<std::uint64_t>(wait_ms, next > _now_ms ? next - _now_ms : 0);
      }
      wait_ns = static_cast<std::int64_t>(wait_ms * 1'000'000);
      ++_counters.sleeps;
    }
    (void)_ring.submit_and_wait(may_sleep && wait_ns > 0 ? 1 : 0, wait_ns);
    _sleeping.store(false, std::memory_order_relaxed);
    _wake_pending.store(false, std::memory_order_seq_cst);
    // The wait may have lasted long: handlers must see the time after it, or a timeout they
    // schedule "after N ms" would be measured from before the sleep and fire early.
    read_clock();
    _counters.timers_fired += _timers.advance(_now_ms);
    dispatch_all();
  }
}

// After on_stop: give cancelled and closing ops a bounded time to complete so their handlers
// see their final CQEs, then leave (the ring's destruction cancels anything left).
void shard::drain_after_stop() noexcept {
  const std::uint64_t deadline_ms = monotonic_ms() + _owner.options().stop_drain_ms;
  unsigned quiet_rounds = 0;
  while (monotonic_ms() < deadline_ms && quiet_rounds < 2) {
    flush_buffer_rings();
    (void)_ring.submit_and_wait(1, 5'000'000);
    const std::uint64_t before = _counters.completions;
    dispatch_all();
    drain_inbound();
    quiet_rounds = _counters.completions == before ? quiet_rounds + 1 : 0;
  }
}

}  // namespace ringmta::shard
