#include "ringmta/shard/runtime.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>

#include "ringmta/core/assert.h"
#include "shard/kinds.h"

namespace ringmta::shard {

namespace {

thread_local shard* current_shard = nullptr;

}  // namespace

// ---- runtime

runtime::runtime(const runtime_options& options) : _options(options) {
  RINGMTA_ASSERT(options.shard_count > 0 && options.shard_count < (1u << 24));
  const unsigned n = options.shard_count;
  _queues.reserve(std::size_t{n} * n);
  for (unsigned i = 0; i < n * n; ++i) {
    _queues.push_back(std::make_unique<spsc_queue<message>>(options.queue_capacity));
  }
  for (unsigned i = 0; i < n; ++i) _shards.push_back(std::unique_ptr<shard>(new shard(*this, i)));
}

runtime::~runtime() {
  if (_started && !_joined) {
    request_stop();
    join();
  }
}

shard& runtime::at(unsigned id) noexcept {
  RINGMTA_ASSERT(id < _shards.size());
  return *_shards[id];
}

core::result<void> runtime::start(start_fn on_start, stop_fn on_stop) {
  RINGMTA_ASSERT(!_started);
  io::ring_options control;
  control.sq_entries = 64;
  control.single_issuer = false;  // any thread may post or stop, one at a time under the mutex
  control.defer_taskrun = false;
  control.register_ring_fd = false;
  if (auto ok = _control_ring.init(control); !ok) return ok;
  _on_start = std::move(on_start);
  _on_stop = std::move(on_stop);
  _started = true;
  for (auto& s : _shards) {
    shard* raw = s.get();
    raw->_thread = std::thread([this, raw] { raw->thread_main(&_on_start, &_on_stop); });
  }
  std::unique_lock lock(_start_mutex);
  _start_cv.wait(lock, [&] { return _ready_count == _shards.size(); });
  if (_start_error != 0) {
    _abort = true;
    _start_cv.notify_all();
    lock.unlock();
    join();
    return core::fail(_start_error);
  }
  _go = true;
  _start_cv.notify_all();
  return {};
}

void runtime::request_stop() noexcept {
  for (auto& s : _shards) s->_stop_requested.store(true, std::memory_order_seq_cst);
  for (unsigned i = 0; i < _shards.size(); ++i) wake(i);
}

void runtime::join() {
  for (auto& s : _shards) {
    if (s->_thread.joinable()) s->_thread.join();
  }
  _joined = true;
}

bool runtime::post(unsigned to, const message& m) {
  RINGMTA_ASSERT(to < _shards.size());
  shard& target = *_shards[to];
  {
    std::lock_guard lock(target._external_mutex);
    if (target._external.size() >= _options.queue_capacity) return false;
    target._external.push_back(m);
    target._external.back().from_shard = ~0u;  // not a shard
    target._external_waiting.store(true, std::memory_order_seq_cst);
  }
  wake(to);
  return true;
}

// Wakes shard `to` from the control ring if it sleeps (or is about to).
void runtime::wake(unsigned to) noexcept {
  shard& target = *_shards[to];
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!target.wake_if_sleeping()) return;
  std::lock_guard lock(_control_mutex);
  if (!_control_ring.initialised() || target._ring_fd < 0) return;
  (void)_control_ring.prep_msg_ring(target._ring_fd, 0, io::pack_user_data(kinds::wake, 0, 0),
                                    io::pack_user_data(kinds::internal, 0, 0),
                                    io::sqe::skip_success);
  (void)_control_ring.submit();
  io::completion ignored[16];
  while (_control_ring.reap(ignored) > 0) {
  }
}

// ---- shard

shard::shard(runtime& owner, unsigned id)
    : _owner(owner), _id(id), _owes_wakeup(owner.shard_count(), 0) {
  _owed_targets.reserve(owner.shard_count());
  _external.reserve(owner.options().queue_capacity);
  _external_batch.reserve(owner.options().queue_capacity);
}

shard::~shard() = default;

shard* shard::current() noexcept { return current_shard; }

unsigned shard::count() const noexcept { return _owner.shard_count(); }

core::result<io::op_kind> shard::next_free_kind() noexcept {
  if (_next_kind > 255) return core::fail(ENOSPC);
  return static_cast<io::op_kind>(_next_kind++);
}

core::result<io::op_kind> shard::add_handler(completion_handler& handler) noexcept {
  auto kind = next_free_kind();
  if (kind) _handlers[kind.value()] = &handler;
  return kind;
}

core::result<io::op_kind> shard::add_handler(host_handler& handler) noexcept {
  auto kind = next_free_kind();
  if (kind) _host_handlers[kind.value()] = &handler;
  return kind;
}

void shard::add_buffer_ring(io::buffer_ring& buffers) noexcept {
  _buffer_rings.push_back(&buffers);
}

core::result<void> shard::register_buffer_ring(io::buffer_ring& buffers,
                                               const io::buffer_ring_options& options) noexcept {
  if (auto ready = buffers.init(_ring, options); !ready) return ready;
  add_buffer_ring(buffers);
  return {};
}

void shard::request_stop() noexcept { _owner.request_stop(); }

void shard::pin() noexcept {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  const int allowed_count = CPU_COUNT(&allowed);
  if (allowed_count <= 0) return;
  int nth = static_cast<int>(_id % static_cast<unsigned>(allowed_count));
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || nth-- > 0) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0) _counters.cpu = cpu;
    return;
  }
}

void shard::thread_main(std::function<core::result<void>(shard&)>* on_start,
                        std::function<void(shard&)>* on_stop) noexcept {
  current_shard = this;
  runtime& owner = _owner;
  if (owner.options().pin_threads) pin();
  int error = 0;
  const char* failed_stage = "";
  // The ring is created here: with SINGLE_ISSUER its creator is its only submitter.
  if (auto ok = _ring.init(owner.options().ring); !ok) {
    error = ok.error();
    failed_stage = "io_uring setup";
  }
  read_clock();
  _timers.advance(_now_ms);
  bool started = false;
  if (error == 0 && *on_start) {
    auto ok = (*on_start)(*this);
    if (!ok) {
      error = ok.error();
      failed_stage = "start";
    }
  }
  started = error == 0;
  _ring_fd = _ring.initialised() ? _ring.fd() : -1;
  {
    std::unique_lock lock(owner._start_mutex);
    if (error != 0 && owner._start_error == 0) {
      owner._start_error = error;
      owner._start_failure = "shard " + std::to_string(_id) + ": " + failed_stage;
    }
    ++owner._ready_count;
    owner._start_cv.notify_all();
    owner._start_cv.wait(lock, [&] { return owner._go || owner._abort; });
  }
  if (!owner._abort) run();
  if (started && *on_stop) (*on_stop)(*this);
  if (_ring.initialised()) drain_after_stop();
  current_shard = nullptr;
}

}  // namespace ringmta::shard
