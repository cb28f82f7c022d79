// shard::host: the loop services glue needs from whatever runs it (issue 16 item 1, step 1).
// shard::shard implements it over the kernel's ring; tests/sim implements it over the
// simulator's clock and network, so the same glue (src/outbound first) runs in both with no
// #ifdef SIM.
//
// The services: op-kind registration (add_handler), the iteration hook, the timer wheel, the
// provided-buffer rings the loop flushes, the asynchronous operations (io()), the synchronous
// descriptor calls beside them (descriptors()) and the loop's clock (now_ms(), wall_ms()).
// Cross-shard messages and fd hand-over stay on shard::shard: glue that needs them is not
// host-only yet.
//
// Handlers here get no owner argument (unlike shard::completion_handler, whose
// on_completion(shard&, ...) src/server, src/spool and tools/ keep): the host-only glue keeps
// its host from construction, and the shard dispatches both kinds (docs/simulation.md says why
// the handler signature was not changed across the tree).
//
// Cost: the clock and timers are virtual calls for code holding a host&; shard::shard is final,
// so code holding a shard& calls them directly as before.
// Never: called from another thread than the host's loop.
#pragma once

#include <cstdint>

#include "ringmta/core/result.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/io/buffer_ring.h"
#include "ringmta/io/descriptors.h"
#include "ringmta/io/operations.h"
#include "ringmta/io/user_data.h"

namespace ringmta::shard {

// Owns one op kind on a host: every completion whose user_data carries that kind.
class host_handler {
 public:
  virtual void on_completion(const io::completion& done) noexcept = 0;

 protected:
  ~host_handler() = default;
};

// Work batched per loop iteration, run before the host submits and waits (see
// shard::iteration_hook: same place in the loop, same order as added).
class host_hook {
 public:
  virtual void before_wait() noexcept = 0;

 protected:
  ~host_hook() = default;
};

class host {
 public:
  // Routes completions of a fresh op kind to `handler`; ENOSPC when all kinds are taken.
  virtual core::result<io::op_kind> add_handler(host_handler& handler) noexcept = 0;
  // Runs hook.before_wait() once per loop iteration, in the order added.
  virtual void add_iteration_hook(host_hook& hook) noexcept = 0;
  // Sets up `buffers` as provided-buffer group options.group_id on this host's ring and flushes
  // its recycles once per loop iteration. `buffers` must outlive the host's ring.
  virtual core::result<void> register_buffer_ring(
      io::buffer_ring& buffers, const io::buffer_ring_options& options) noexcept = 0;
  // Ticks are milliseconds of now_ms()'s clock.
  virtual core::timer_wheel& timers() noexcept = 0;
  virtual io::operations& io() noexcept = 0;
  virtual io::descriptors& descriptors() noexcept = 0;
  // The loop's clock, stamped per iteration: monotonic milliseconds (durations, timeouts) and
  // milliseconds since the epoch (certificate validity, records).
  virtual std::uint64_t now_ms() const noexcept = 0;
  virtual std::int64_t wall_ms() const noexcept = 0;
  // A fresh monotonic reading in nanoseconds, for latency metrics finer than the loop's
  // millisecond (a commit's fdatasync is often well under one); never for deadlines.
  virtual std::uint64_t precise_ns() const noexcept = 0;

 protected:
  ~host() = default;
};

}  // namespace ringmta::shard
