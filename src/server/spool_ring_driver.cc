#include "ringmta/server/spool_ring_driver.h"

#include <cerrno>
#include <chrono>
#include <system_error>

#include "ringmta/core/assert.h"
#include "ringmta/spool/sync_driver.h"

namespace ringmta::server {

spool_ring_driver::spool_ring_driver(shard::host& host, spool::store& store,
                                     spool_file_worker& files, bool unsafe_no_fsync) noexcept
    : _host(host), _store(store), _files(files), _unsafe_no_fsync(unsafe_no_fsync) {}

core::result<void> spool_ring_driver::start() noexcept {
  _tokens.reserve(1024);
  _free_slots.reserve(1024);
  _chain.reserve(64);
  auto kind = _host.add_handler(*this);
  if (!kind) return core::fail(kind.error());
  _kind = kind.value();
  return {};
}

void spool_ring_driver::file_done(std::uint64_t token, std::int64_t result) noexcept {
  RINGMTA_ASSERT(_in_flight > 0);
  --_in_flight;
  _store.complete(token, result);
}

void spool_ring_driver::submit(const spool::operation& op) noexcept {
  switch (op.kind) {  // what completes here, without the ring
    case spool::operation_kind::create_file:
    case spool::operation_kind::remove_file:
      ++_in_flight;
      _files.submit(op);
      return;
    case spool::operation_kind::datasync:
      if (_unsafe_no_fsync) return _store.complete(op.token, 0);
      break;
    case spool::operation_kind::write:
      break;
  }
  const std::uint32_t slot = remember(op.token);
  const std::uint64_t user_data = io::pack_user_data(_kind, 0, slot);
  // IOSQE_IO_LINK: the kernel starts the next op of the chain once this one succeeded. Without
  // syncs (unsafe_no_fsync) there is no next SQE to link to.
  const io::sqe_flags link = op.link_next && !_unsafe_no_fsync ? io::sqe::link : io::sqe::none;
  io::operations& ring = _host.io();
  const auto queued =
      op.kind == spool::operation_kind::write
          ? ring.prep_writev(op.fd, op.iovecs, op.iovec_count, op.offset, user_data, link)
          : ring.prep_fdatasync(op.fd, user_data, link);
  if (!queued) {  // the kernel refused the submission: the store sees an I/O error
    forget(slot);
    _store.complete(op.token, -queued.error());
    return;
  }
  ++_in_flight;
}

// Store tokens use all 64 bits, so in-flight ops carry a slot of this table instead; it grows
// to the largest batch seen and is then reused (no allocation in steady state).
std::uint32_t spool_ring_driver::remember(std::uint64_t token) {
  if (_free_slots.empty()) {
    _tokens.push_back(token);
    _free_slots.reserve(_tokens.capacity());  // forget() then never allocates
    return static_cast<std::uint32_t>(_tokens.size() - 1);
  }
  const std::uint32_t slot = _free_slots.back();
  _free_slots.pop_back();
  _tokens[slot] = token;
  return slot;
}

std::uint64_t spool_ring_driver::forget(std::uint32_t slot) noexcept {
  RINGMTA_ASSERT(slot < _tokens.size());
  _free_slots.push_back(slot);  // capacity reserved when the slot was created
  return _tokens[slot];
}

void spool_ring_driver::pump() noexcept {
  if (_pumping) return;
  _pumping = true;
  for (bool progress = true; progress;) {
    progress = false;
    spool::operation op;
    while (_store.next_operation(op)) {
      // A linked chain must reach the kernel in one submission: room for all of it first.
      _chain.push_back(op);
      if (op.link_next) continue;
      (void)_host.io().reserve(static_cast<unsigned>(_chain.size()));
      for (const auto& chained : _chain) submit(chained);
      _chain.clear();
      progress = true;
    }
    spool::event event;
    while (_store.next_event(event)) {
      if (_listener) _listener(event);
      progress = true;
    }
  }
  _pumping = false;
}

void spool_ring_driver::on_completion(const io::completion& done) noexcept {
  RINGMTA_ASSERT(_in_flight > 0);
  --_in_flight;
  _store.complete(forget(done.tag().slot), done.res);
  pump();
}

// ---- the daemon's file worker

spool_file_thread::~spool_file_thread() {
  {
    std::lock_guard lock(_mutex);
    _stop = true;
  }
  _wake.notify_one();
  if (_thread.joinable()) _thread.join();
}

core::result<void> spool_file_thread::start(spool_ring_driver& driver) noexcept {
  _driver = &driver;
  try {
    _thread = std::thread([this] { main(); });
  } catch (const std::system_error& e) {
    return core::fail(e.code().value());
  }
  return {};
}

void spool_file_thread::submit(const spool::operation& op) noexcept {
  {
    std::lock_guard lock(_mutex);
    _ops.push_back(op);
  }
  _wake.notify_one();
}

// One blocking file operation at a time, in order; each result wakes the shard.
void spool_file_thread::main() noexcept {
  std::unique_lock lock(_mutex);
  for (;;) {
    _wake.wait(lock, [this] { return _stop || !_ops.empty(); });
    if (_stop) return;  // the daemon waits for operations_in_flight() == 0 before this
    const spool::operation op = _ops.front();
    _ops.pop_front();
    lock.unlock();
    const std::int64_t result = op.kind == spool::operation_kind::create_file
                                    ? spool::perform_create_file(op)
                                    : spool::perform_remove_file(op);
    // The store retries a failed creation at its next flush, and the result wakes the shard
    // for one: out of descriptors, that was a loop of failed opens using a whole core (issue
    // 10). Descriptors come back when connections close, so a short pause here costs nothing.
    if (result == -EMFILE || result == -ENFILE)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    lock.lock();
    const bool first = _results.empty();
    _results.emplace_back(op.token, result);
    if (!first) continue;  // a message is on its way already and will take this one too
    const shard::home_ptr<spool_file_thread> self(this, _owner.id());
    lock.unlock();
    // Full only under a flood of admin requests; the shard drains it every iteration.
    while (!shard::post_value<&spool_file_thread::on_results>(_owner.owner(), _owner.id(),
                                                              self)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::lock_guard stopping(_mutex);
      if (_stop) return;
    }
    lock.lock();
  }
}

void spool_file_thread::on_results(shard::shard&,
                                   shard::home_ptr<spool_file_thread> thread) noexcept {
  spool_file_thread& self = *thread;  // asserts this is the thread's shard
  {
    std::lock_guard lock(self._mutex);
    self._batch.swap(self._results);
  }
  for (const auto& [token, result] : self._batch) self._driver->file_done(token, result);
  self._batch.clear();
  self._driver->pump();
}

}  // namespace ringmta::server
