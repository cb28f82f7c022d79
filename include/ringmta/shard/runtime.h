// shard runtime: N shards, each one thread pinned to a core with its own io::ring, timer wheel
// and completion handlers, talking to each other through bounded SPSC queues plus MSG_RING
// wake-ups (DESIGN principle 1: shards share nothing on the hot path).
//
// Threads: every shard runs on a thread of its own; the thread that calls runtime::start() is
// not a shard. It stays free to handle signals, the admin plane and shutdown (request_stop(),
// join()). Shard i is pinned to the i-th allowed CPU modulo their number (N may exceed cores).
//
// One loop iteration of a shard: advance its timers, drain its inbound queues (calling each
// message's handler), run the iteration hooks, send the batched wake-ups it owes other shards,
// publish buffer-ring recycles, then submit and wait (at most until the next timer) and dispatch
// every completion to the handler that owns its op kind. The timer wheel needs no timeout SQE: the
// wait itself carries the next deadline (io_uring_enter's EXT_ARG timeout), one per shard whatever
// the number of timers, and an idle shard with no timer sleeps up to idle_wait_ms_max.
//
// Modules plug in through on_start (run on each shard's thread before any loop starts): they
// register a completion_handler per op kind (add_handler returns the kind to pack into their
// user_data, see io/user_data.h and io/slot_table.h), arm their ops, register buffer rings, and
// keep their per-shard state. on_stop runs on the same thread when the runtime stops; after it,
// completions are dispatched for a bounded time so cancelled ops can finish, then the thread
// exits. A handler must stay valid until its shard's thread has exited (join()).
//
// Messages: try_send(to, message) pushes into the (this -> to) queue and returns false when it
// is full: back-pressure. Nothing is dropped; the sender keeps the work and retries later (a
// message to itself runs on its next loop iteration; a timer works too), or sheds load with an
// SMTP 4xx. A wake-up (a MSG_RING CQE in the target's ring) is sent at most once per target per
// iteration and only when the target has said it is about to sleep; a busy target is never
// interrupted. try_send works from on_start (delivered once loops run); send_fd only from the
// loop (other shards' ring fds are known once every shard has started).
//
// Never: blocks in a handler, takes a lock on the hot path, or touches another shard's ring.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ringmta/core/clock.h"
#include "ringmta/core/result.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/io/buffer_ring.h"
#include "ringmta/io/ring.h"
#include "ringmta/io/user_data.h"
#include "ringmta/shard/host.h"
#include "ringmta/shard/mesh.h"
#include "ringmta/shard/spsc_queue.h"

namespace ringmta::shard {

class shard;
class runtime;

// A cross-shard message: 32 bytes, copied through the queue. The handler runs on the target
// shard's thread; words/tag carry the payload (often a pointer to an object whose ownership
// moves with the message).
struct message {
  using handler_fn = void (*)(shard& target, const message& received) noexcept;
  handler_fn handler = nullptr;
  std::uint32_t from_shard = 0;  // set by the runtime
  std::uint32_t tag = 0;         // free for the sender: a sub-kind
  std::uint64_t words[2] = {};
};
static_assert(sizeof(message) == 32);

// Owns one op kind on one shard: every completion whose user_data carries that kind. Glue that
// needs only the loop's services implements shard::host_handler instead (shard/host.h).
class completion_handler {
 public:
  virtual void on_completion(shard& owner, const io::completion& done) noexcept = 0;

 protected:
  ~completion_handler() = default;
};

// Work that batches per loop iteration (the spool's group-commit flush, log writes, retrying
// work that waited for room). Runs after timers and inbound messages, before the shard submits
// and sleeps, so what it queues goes to the kernel in the same submit.
class iteration_hook {
 public:
  virtual void before_wait(shard& owner) noexcept = 0;

 protected:
  ~iteration_hook() = default;
};

// Receives connections (fixed files) handed over by other shards (shard::send_fd).
class fd_handoff_handler {
 public:
  // fixed_index: the file's index in this shard's fixed table (the handler owns it now).
  virtual void on_fd_received(shard& owner, unsigned from_shard, std::uint32_t fixed_index,
                              std::uint32_t cookie) noexcept = 0;
  // On the sending shard: the hand-off failed; the file is still at source_fixed_index here.
  virtual void on_fd_send_failed(shard& owner, unsigned to_shard, std::uint32_t cookie,
                                 int error) noexcept = 0;

 protected:
  ~fd_handoff_handler() = default;
};

struct runtime_options {
  unsigned shard_count = 1;
  bool pin_threads = true;
  io::ring_options ring = default_ring_options();
  std::uint32_t queue_capacity = 1024;  // messages per ordered shard pair (power of two)
  std::uint32_t idle_wait_ms_max = 1000;  // longest sleep with no timer armed
  std::uint32_t stop_drain_ms = 200;      // after on_stop: time for cancelled ops to complete

  static io::ring_options default_ring_options() {
    io::ring_options options;
    options.fixed_file_count = 256;  // room for connections handed over between shards
    return options;
  }
};

struct shard_counters {
  std::uint64_t loop_iterations = 0;
  std::uint64_t completions = 0;
  std::uint64_t stale_completions = 0;  // a kind with no handler
  std::uint64_t messages_sent = 0;
  std::uint64_t messages_received = 0;
  std::uint64_t send_queue_full = 0;  // try_send refused: back-pressure
  std::uint64_t wakeups_sent = 0;
  std::uint64_t wakeups_received = 0;
  std::uint64_t timers_fired = 0;
  std::uint64_t sleeps = 0;
  int cpu = -1;  // pinned CPU, -1 when not pinned
};

// Implements shard::host (shard/host.h) over its own ring, timers and clock, and shard::mesh
// (shard/mesh.h) over the runtime's queues; final, so calls through a shard& stay direct.
class shard final : public host, public mesh {
 public:
  shard(const shard&) = delete;
  shard& operator=(const shard&) = delete;
  ~shard();

  // The shard running on the calling thread, nullptr elsewhere.
  static shard* current() noexcept;

  unsigned id() const noexcept override { return _id; }
  unsigned count() const noexcept override;
  // The runtime this shard belongs to (for runtime::post from helper threads).
  runtime& owner() noexcept { return _owner; }
  io::ring& ring() noexcept { return _ring; }
  // The same ring as the interface the glue submits through (io/operations.h, issue 16): glue
  // that names only this runs unchanged over a simulated implementation.
  io::operations& io() noexcept override { return _ring; }
  // The kernel's socket, pipe and close calls (io/descriptors.h).
  io::descriptors& descriptors() noexcept override { return _descriptors; }
  // Ticks are milliseconds of the monotonic clock; now_ms() is read once per loop iteration.
  core::timer_wheel& timers() noexcept override { return _timers; }
  // The loop's clock, read at the start of each iteration and again after its wait, so the
  // glue never reads one (issue 16: the clock is passed in). now_ms: monotonic (durations,
  // timeouts); wall_ms: milliseconds since the epoch (certificate validity, records).
  std::uint64_t now_ms() const noexcept override { return _now_ms; }
  std::int64_t wall_ms() const noexcept override { return _wall_ms; }
  std::uint64_t precise_ns() const noexcept override { return core::monotonic_ns(); }
  const shard_counters& counters() const noexcept { return _counters; }
  // Heartbeat: the monotonic millisecond at which this shard's loop last began an iteration
  // (0 before it runs). Any thread may read it; an idle shard still turns every
  // idle_wait_ms_max, so an age well past that means the loop is stuck (health, watchdog).
  std::uint64_t last_turn_ms() const noexcept {
    return _last_turn_ms.load(std::memory_order_relaxed);
  }

  // Routes completions of a fresh op kind to `handler`; ENOSPC when all 240 kinds are taken.
  core::result<io::op_kind> add_handler(completion_handler& handler) noexcept;
  core::result<io::op_kind> add_handler(host_handler& handler) noexcept override;
  // The loop flushes this buffer ring's recycles once per iteration.
  void add_buffer_ring(io::buffer_ring& buffers) noexcept;
  // init() on this shard's ring, then add_buffer_ring.
  core::result<void> register_buffer_ring(io::buffer_ring& buffers,
                                          const io::buffer_ring_options& options) noexcept override;
  // Runs hook.before_wait() once per loop iteration; both kinds in the order added.
  void add_iteration_hook(iteration_hook& hook) noexcept { _hooks.push_back({&hook, nullptr}); }
  void add_iteration_hook(host_hook& hook) noexcept override { _hooks.push_back({nullptr, &hook}); }
  void set_fd_handoff_handler(fd_handoff_handler& handler) noexcept { _fd_handler = &handler; }

  // Queues `m` for shard `to` (may be this shard). False when that queue is full.
  bool try_send(unsigned to, const message& m) noexcept;
  // A parcel travels as the message its on_shard entry makes (shard/mesh.h).
  bool try_send(unsigned to, const parcel& p) noexcept override;
  // Sends wake-ups owed now instead of at the end of this iteration (for latency-critical
  // senders; the loop does it anyway).
  void flush_wakeups() noexcept;
  // Hands fixed file source_fixed_index to shard `to` (installed in its fixed table; its
  // fd_handoff_handler gets on_fd_received with `cookie`). On success our slot is closed; on
  // failure our handler gets on_fd_send_failed and the slot is still ours.
  core::result<void> send_fd(unsigned to, std::uint32_t source_fixed_index,
                             std::uint32_t cookie) noexcept;

  // Asks the whole runtime to stop (any shard may).
  void request_stop() noexcept;
  bool stopping() const noexcept { return _stop_requested.load(std::memory_order_relaxed); }

 private:
  friend class runtime;
  shard(runtime& owner, unsigned id);

  void thread_main(std::function<core::result<void>(shard&)>* on_start,
                   std::function<void(shard&)>* on_stop) noexcept;
  void run() noexcept;
  void drain_after_stop() noexcept;
  unsigned drain_inbound() noexcept;
  unsigned drain_external() noexcept;
  void handle_message(const message& m) noexcept;
  bool wake_if_sleeping() noexcept;  // by a sender: true when this shard needs a wake-up
  bool inbound_waiting() const noexcept;
  void dispatch(const io::completion& done) noexcept;
  void dispatch_all() noexcept;
  void flush_buffer_rings() noexcept;
  void pin() noexcept;
  void read_clock() noexcept;  // sets _now_ms and _wall_ms
  core::result<io::op_kind> next_free_kind() noexcept;
  void run_iteration_hooks() noexcept;

  // One entry per add_iteration_hook call: exactly one of the two is set.
  struct hook_entry {
    iteration_hook* shard_hook = nullptr;
    host_hook* host_only = nullptr;
  };

  runtime& _owner;
  const unsigned _id;
  io::ring _ring;
  io::system_descriptors _descriptors;
  core::timer_wheel _timers;
  std::uint64_t _now_ms = 0;
  std::int64_t _wall_ms = 0;
  // The loop turns several times per message and a clock read is a vDSO call, so the wall
  // clock is derived from the monotonic stamp and read for real once a second (a clock step
  // shows within a second).
  std::int64_t _wall_minus_monotonic_ms = 0;
  std::uint64_t _wall_reread_at_ms = 0;
  shard_counters _counters;
  // By op kind: at most one of the two is set (host-only glue registers the second kind).
  completion_handler* _handlers[256] = {};
  host_handler* _host_handlers[256] = {};
  unsigned _next_kind = io::op_kind_first_free;
  fd_handoff_handler* _fd_handler = nullptr;
  std::vector<io::buffer_ring*> _buffer_rings;
  std::vector<hook_entry> _hooks;
  std::vector<std::uint8_t> _owes_wakeup;  // per target: pushed since the last flush
  std::vector<unsigned> _owed_targets;
  int _ring_fd = -1;  // published before any loop starts; read by other shards
  std::thread _thread;

  // Messages from threads that are not shards (runtime::post), bounded by queue_capacity.
  std::mutex _external_mutex;
  std::vector<message> _external;
  std::vector<message> _external_batch;  // swapped out under the mutex, handled outside it

  // Written by other threads.
  alignas(cache_line_bytes) std::atomic<bool> _sleeping{false};
  std::atomic<bool> _wake_pending{false};
  std::atomic<bool> _stop_requested{false};
  std::atomic<bool> _external_waiting{false};

  // Written by this shard once per iteration, read by the admin and watchdog threads: its own
  // cache line, so the shard's store never contends with the wake-up flags above.
  alignas(cache_line_bytes) std::atomic<std::uint64_t> _last_turn_ms{0};
};

class runtime {
 public:
  explicit runtime(const runtime_options& options);
  ~runtime();  // stops and joins if still running
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  using start_fn = std::function<core::result<void>(shard&)>;
  using stop_fn = std::function<void(shard&)>;

  // Starts every shard and returns once each has run on_start (or the first failure, in which
  // case every shard is stopped and joined before returning the error).
  core::result<void> start(start_fn on_start = {}, stop_fn on_stop = {});
  // After a failed start: which shard failed and where ("shard 1: io_uring setup").
  const std::string& start_failure() const noexcept { return _start_failure; }
  // From any thread; idempotent. Shards finish their current iteration, run on_stop, exit.
  void request_stop() noexcept;
  void join();
  bool running() const noexcept { return _started && !_joined; }

  // Control plane (not the hot path): a message from a thread that is not a shard, through a
  // mutex-guarded queue per shard and a wake-up from the runtime's own ring. False when full.
  bool post(unsigned to, const message& m);

  unsigned shard_count() const noexcept { return _options.shard_count; }
  const runtime_options& options() const noexcept { return _options; }
  // For inspection after join(), or by the shard's own thread.
  shard& at(unsigned id) noexcept;

 private:
  friend class shard;
  spsc_queue<message>& queue(unsigned from, unsigned to) noexcept {
    return *_queues[from * _options.shard_count + to];
  }
  void wake(unsigned to) noexcept;  // control plane wake-up through _control_ring

  runtime_options _options;
  std::vector<std::unique_ptr<shard>> _shards;
  std::vector<std::unique_ptr<spsc_queue<message>>> _queues;  // [from * N + to]
  start_fn _on_start;
  stop_fn _on_stop;
  bool _started = false;
  bool _joined = false;

  // Start-up handshake: every shard reports ready (or an error), then all get `go` (or abort).
  std::mutex _start_mutex;
  std::condition_variable _start_cv;
  unsigned _ready_count = 0;
  int _start_error = 0;
  std::string _start_failure;
  bool _go = false;
  bool _abort = false;

  // Control plane: a ring any thread may use under the mutex (no SINGLE_ISSUER).
  std::mutex _control_mutex;
  io::ring _control_ring;
};

}  // namespace ringmta::shard
