// outbound::outbound: the connection table, the API, DNS results, deferred work and the pool of
// body transfers. One SMTP session over the ring is in connection.cc, the body in body.cc.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "outbound_internal.h"
#include "ringmta/core/assert.h"

namespace ringmta::outbound {

// ---- transfer_pool

transfer_pool::transfer_pool(io::descriptors& descriptors, std::uint32_t count,
                             std::uint32_t pipe_bytes, std::uint32_t buffer_bytes)
    : _descriptors(descriptors), _slots(count), _pipe_bytes(pipe_bytes),
      _buffer_bytes(buffer_bytes) {}

transfer_pool::~transfer_pool() {
  for (slot& s : _slots) {
    if (s.pipe_read >= 0) _descriptors.close(s.pipe_read);
    if (s.pipe_write >= 0) _descriptors.close(s.pipe_write);
  }
}

std::optional<std::uint32_t> transfer_pool::acquire(bool want_pipe, int& error) noexcept {
  error = 0;
  for (std::uint32_t i = 0; i < _slots.size(); ++i) {
    slot& s = _slots[i];
    if (s.busy) continue;
    if (want_pipe && s.pipe_read < 0) {
      // A blocking pipe: the pipe -> socket splice then waits for the socket in an io-wq
      // worker instead of failing with EAGAIN (an O_NONBLOCK pipe makes the splice
      // non-blocking on both ends).
      auto made = _descriptors.open_pipe(_pipe_bytes);
      if (!made) {
        error = made.error();
        return std::nullopt;
      }
      s.pipe_read = made.value().read_end;
      s.pipe_write = made.value().write_end;
      s.pipe_capacity = made.value().capacity;
    }
    if (!want_pipe && !s.buffer) s.buffer = std::make_unique<char[]>(_buffer_bytes);
    s.busy = true;
    return i;
  }
  return std::nullopt;
}

void transfer_pool::release(std::uint32_t index, bool clean) noexcept {
  RINGMTA_ASSERT(index < _slots.size() && _slots[index].busy);
  slot& s = _slots[index];
  s.busy = false;
  if (!clean && s.pipe_read >= 0) {  // bytes may be left inside: never hand it out again
    _descriptors.close(s.pipe_read);
    _descriptors.close(s.pipe_write);
    s.pipe_read = s.pipe_write = -1;
  }
}

// ---- outbound_server

outbound_server::outbound_server(shard::host& owner, dns_client& dns, delivery_handler& handler,
                                 const outbound_config& config)
    : _owner(owner),
      _io(owner.io()),
      _dns(dns),
      _handler(handler),
      _config(config),
      // Commands (engine output, <= 4 KiB), then a small body plus ".CRLF" or a BDAT chunk
      // (at chunk_offset, behind the room for the commands).
      _staging_bytes(static_cast<std::uint32_t>(
          std::max<std::size_t>(2 * smtp::client_output_bytes_max,
                                chunk_offset + std::size_t{config.copy_body_bytes_max} + 16))),
      _transfers(owner.descriptors(), std::max<std::uint32_t>(1, config.transfers_max),
                 config.pipe_bytes,
                 std::max<std::uint32_t>(4096, config.copy_chunk_bytes) + 16),
      _tls_cache(std::max<std::uint32_t>(1, config.tls_cache_entries)) {
  RINGMTA_ASSERT(config.connections_max > 0);
  _engine.helo_name = _config.helo_name;
  _engine.pipelining = _config.pipelining;
  _engine.chunking = _config.chunking;
  _engine.tls = smtp::client_tls_policy::none;  // per connection: choose_tls() (tls.cc)
  _connections.resize(config.connections_max);
  _free_slots.reserve(config.connections_max);
  for (std::uint32_t slot = config.connections_max; slot-- > 0;) _free_slots.push_back(slot);
  _deferred.reserve(config.connections_max);
  _deferred_batch.reserve(config.connections_max);
  _transfer_waiters.reserve(config.connections_max);
}

outbound_server::~outbound_server() {
  RINGMTA_ASSERT(!_kick.armed());  // stop() on the shard's thread first
  for (auto& c : _connections) {
    if (!c) continue;
    RINGMTA_ASSERT(!c->timer.armed());  // stop() on the shard's thread first
    if (c->fd >= 0 && !c->close_queued) descriptors().close(c->fd);
  }
}

core::result<void> outbound_server::start() noexcept {
  for (io::op_kind* kind : {&connect_kind, &receive_kind, &send_kind, &close_kind,
                            &body_read_kind, &body_send_kind, &splice_in_kind, &splice_out_kind,
                            &misc_kind}) {
    auto added = _owner.add_handler(*this);
    if (!added) return core::fail(added.error());
    *kind = added.value();
  }
  io::buffer_ring_options options;
  options.group_id = _config.buffer_group;
  options.buffer_count = _config.receive_buffer_count;
  options.buffer_bytes = _config.receive_buffer_bytes;
  if (auto ready = _owner.register_buffer_ring(_buffers, options); !ready) return ready;
  _owner.add_iteration_hook(*this);
  return {};
}

connection* outbound_server::find(connection_handle handle) noexcept {
  if (handle.slot >= _connections.size() || !_connections[handle.slot]) return nullptr;
  connection& c = *_connections[handle.slot];
  if (!active(c.phase()) || c.generation != handle.generation) return nullptr;
  return &c;
}

connection* outbound_server::find(const io::op_tag& tag) noexcept {
  if (tag.slot >= _connections.size() || !_connections[tag.slot]) return nullptr;
  connection& c = *_connections[tag.slot];
  if (!c.live() || c.generation != (tag.generation & io::generation_mask)) return nullptr;
  return &c;
}

core::result<connection_handle> outbound_server::open_connection(std::uint64_t destination,
                                                                 const route& where) noexcept {
  if (_stopped || _shutting_down) return core::fail(ESHUTDOWN);
  if (where.name.empty() || where.port == 0) return core::fail(EINVAL);
  if (_free_slots.empty()) return core::fail(EAGAIN);
  const std::uint32_t slot = _free_slots.back();
  _free_slots.pop_back();
  auto& c = _connections[slot];
  if (!c) c = std::make_unique<connection>(*this, slot);  // first use of this slot only
  if (c->session) --_buffered_free;
  ++_live;
  ++_counters.connections_opened;
  c->open(destination, where);
  return c->handle();
}

std::span<const candidate> outbound_server::route_candidates(connection_handle handle) noexcept {
  const connection* c = find(handle);
  if (c == nullptr || c->phase() == connection_phase::resolving) return {};
  return c->candidates;
}

bool outbound_server::can_deliver(connection_handle handle) noexcept {
  const connection* c = find(handle);
  return c != nullptr && c->takes_delivery();
}

bool outbound_server::offers_8bitmime(connection_handle handle) noexcept {
  const connection* c = find(handle);
  return c != nullptr && c->session && c->session->extensions().eight_bit_mime;
}

core::result<void> outbound_server::deliver(connection_handle handle,
                                            const delivery& job) noexcept {
  connection* c = find(handle);
  if (c == nullptr) return core::fail(EINVAL);
  if (!c->takes_delivery()) return core::fail(EBUSY);
  const connection::step_guard checked(*c);
  for (const spool::body_slice& piece : job.body) {
    if (piece.fd < 0) return core::fail(EINVAL);
  }
  c->start_delivery(job);
  defer(*c);
  return {};
}

void outbound_server::release(connection_handle handle) noexcept {
  connection* c = find(handle);
  if (c == nullptr) return;
  const connection::step_guard checked(*c);
  if (!c->ever_ready) return c->abandon(close_reason::released);
  c->request_quit(close_reason::released);
}

void outbound_server::begin_shutdown() noexcept {
  if (_shutting_down) return;
  _shutting_down = true;
  for (auto& c : _connections) {
    if (!c || !active(c->phase())) continue;
    if (!c->ever_ready) c->abandon(close_reason::shutdown);
    else c->request_quit(close_reason::shutdown);
  }
}

void outbound_server::stop() noexcept {
  _stopped = true;
  _owner.timers().cancel(_kick);
  for (auto& c : _connections) {
    if (!c || !c->live()) continue;
    _owner.timers().cancel(c->timer);
    if (c->phase() == connection_phase::resolving) {
      _dns.cancel(c->lookup);
      c->enter(connection_phase::unconnected);  // a late result finds nothing to resume
    }
    // Pending ops end; the destructor closes.
    if (c->fd >= 0) descriptors().shutdown(c->fd, SHUT_RDWR);
  }
}

// Work for the end of the iteration. The hook may have run already (an API call from a later
// hook or from our own deferred work): the kick timer, due at the next tick, keeps the shard
// from sleeping on it.
// Work deferred from inside one of our completions needs no kick: the host runs its hooks,
// ours included, after the completions of a batch (shard::run, sim_host::reap); a delivery
// handed over from on_delivery_done or on_ready, once per message, then costs no timer.
void outbound_server::defer(connection& c) noexcept {
  if (c.deferred) return;  // once per round: the list stays within connections_max
  c.deferred = true;
  if (_deferred.empty() && !_stopped && !_hook_due) _owner.timers().schedule_after(_kick, 0);
  _deferred.push_back(c.handle());
}

void outbound_server::before_wait() noexcept {
  _hook_due = false;  // from here on, work deferred waits for the kick (or the next round)
  run_deferred();
}

// Runs what API calls left for later (events the engine produced synchronously, output to
// send, receives that found no buffer). Work deferred meanwhile waits for the next round.
void outbound_server::run_deferred() noexcept {
  if (_deferred.empty() || _stopped) return;
  _owner.timers().cancel(_kick);
  _deferred_batch.swap(_deferred);
  for (const connection_handle handle : _deferred_batch) {
    connection* c = find(handle);
    if (c == nullptr) continue;
    const connection::step_guard checked(*c);
    c->deferred = false;
    if (c->retry_receive) {
      c->retry_receive = false;
      c->arm_receive();
    }
    const connection_phase now = c->phase();
    if (c->session && (connected(now) || now == connection_phase::closing)) c->process_events();
    if (c->live() && c->generation == handle.generation) c->pump();
  }
  _deferred_batch.clear();
}

void outbound_server::on_lookup_done(std::uint64_t cookie, dns::mx_result& result) noexcept {
  const connection_handle handle{static_cast<std::uint32_t>(cookie),
                                 static_cast<std::uint32_t>(cookie >> 32)};
  connection* c = find(handle);
  if (c == nullptr || c->phase() != connection_phase::resolving) return;
  const connection::step_guard checked(*c);
  c->enter(connection_phase::unconnected);
  c->on_lookup_done(result);
}

void outbound_server::on_completion(const io::completion& done) noexcept {
  _hook_due = true;  // before_wait() follows this batch of completions
  const io::op_kind kind = done.kind();
  connection* c = find(done.tag());
  if (c == nullptr || _stopped) {  // stale: give back what the CQE carries
    if (done.has_buffer()) {
      (void)_buffers.consume(done);
      _buffers.recycle(done.buffer_id());
    }
    return;
  }
  if (kind == misc_kind) return;
  const connection::step_guard checked(*c);
  if (c->ops > 0 && !done.more()) --c->ops;  // a multishot op stays in flight while more()
  if (kind == close_kind) return c->on_fd_closed();
  if (kind == receive_kind) c->on_received(done);
  else if (kind == send_kind) c->on_sent(done);
  else if (kind == connect_kind) c->on_connected(done);
  else c->on_body_completion(kind, done);
  // A socket being shut down is closed once its last op has completed.
  if (c->phase() == connection_phase::closing && c->ops == 0 && !c->close_queued)
    c->end_socket();
}

void outbound_server::wait_for_transfer(connection& c) noexcept {
  ++_counters.transfer_waits;
  _transfer_waiters.push_back(c.handle());
}

void outbound_server::transfer_released() noexcept {
  // Wake the oldest waiter still alive; it takes the slot (or re-queues itself).
  while (!_transfer_waiters.empty()) {
    const connection_handle handle = _transfer_waiters.front();
    _transfer_waiters.erase(_transfer_waiters.begin());
    connection* c = find(handle);
    if (c == nullptr || c->body.phase() != body_phase::waiting) continue;  // given up meanwhile
    c->resume_body();
    return;
  }
}

void outbound_server::release_slot(connection& c) noexcept {
  RINGMTA_ASSERT(c.ops == 0 && !c.timer.armed());
  c.enter(connection_phase::free);
  c.generation = (c.generation + 1) & io::generation_mask;
  // A free slot keeps its session and staging buffer (~80 KB) only while few free slots do: a
  // burst of connections (10,000 destinations each tried at once) must not leave every slot of
  // the table holding them for the daemon's life (docs/notes.md "Backlog at scale").
  if (c.session && _buffered_free < free_slots_buffered_max) {
    ++_buffered_free;
  } else {
    c.session.reset();
    c.staging.reset();
  }
  _free_slots.push_back(c.slot);
  --_live;
  ++_counters.connections_closed;
}

// ---- outbound (the public face)

outbound::outbound(shard::host& owner, dns_client& dns, delivery_handler& handler,
                   const outbound_config& config)
    : _server(std::make_unique<outbound_server>(owner, dns, handler, config)) {}
outbound::~outbound() = default;
core::result<void> outbound::start() noexcept { return _server->start(); }
bool outbound::can_deliver(connection_handle connection) noexcept {
  return _server->can_deliver(connection);
}
bool outbound::offers_8bitmime(connection_handle connection) noexcept {
  return _server->offers_8bitmime(connection);
}
std::span<const candidate> outbound::route_candidates(connection_handle connection) noexcept {
  return _server->route_candidates(connection);
}
core::result<connection_handle> outbound::open_connection(std::uint64_t destination,
                                                          const route& where) noexcept {
  return _server->open_connection(destination, where);
}
core::result<void> outbound::deliver(connection_handle connection, const delivery& job) noexcept {
  return _server->deliver(connection, job);
}
void outbound::release(connection_handle connection) noexcept { _server->release(connection); }
void outbound::begin_shutdown() noexcept { _server->begin_shutdown(); }
bool outbound::drained() const noexcept { return _server->drained(); }
void outbound::stop() noexcept { _server->stop(); }
std::uint32_t outbound::connections() const noexcept { return _server->live(); }
const outbound_counters& outbound::counters() const noexcept { return _server->counters(); }
void outbound::set_timeout_connect_ms(std::uint32_t ms) noexcept {
  _server->set_timeout_connect_ms(ms);
}

void outbound::set_tls_context(std::shared_ptr<const tls::client_context> context) noexcept {
  _server->set_tls_context(std::move(context));
}

}  // namespace ringmta::outbound
