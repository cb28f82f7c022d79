// server::inbound_sessions (inbound_sessions.h): the connection table, commit tickets, receive
// buffers, load and the shutdown of sessions, over a shard::host. One SMTP session is in
// inbound_connection.cc; listeners and accept in inbound.cc.
#include "ringmta/server/inbound_sessions.h"

#include <algorithm>
#include <cerrno>

#include "inbound_internal.h"
#include "ringmta/core/assert.h"

namespace ringmta::server {

// ---- ticket_table

ticket_table::ticket_table(std::uint32_t sessions_max) {
  std::size_t size = 16;
  while (size < 2 * std::size_t{sessions_max}) size <<= 1;
  _entries.resize(size);
  _mask = size - 1;
}

// Sized for one ticket per session, but a closed session's ticket stays until the spool
// reports it (the orphan path) while its slot commits again: the tickets in flight are bounded
// by the store's open messages, not by sessions. So the table doubles at half full instead of
// trusting the first size (a full table would make insert probe for ever).
void ticket_table::insert(std::uint64_t ticket, std::uint32_t slot,
                          std::uint32_t generation) noexcept {
  RINGMTA_ASSERT(ticket != 0);
  if ((_count + 1) * 2 > _entries.size()) grow();
  for (std::size_t i = ticket & _mask;; i = (i + 1) & _mask) {
    if (_entries[i].ticket == 0) {
      _entries[i] = {ticket, slot, generation};
      ++_count;
      return;
    }
  }
}

void ticket_table::grow() {
  std::vector<entry> old(_entries.size() * 2);
  old.swap(_entries);
  _mask = _entries.size() - 1;
  _count = 0;
  for (const entry& e : old) {
    if (e.ticket != 0) insert(e.ticket, e.slot, e.generation);
  }
}

std::optional<std::pair<std::uint32_t, std::uint32_t>> ticket_table::take(
    std::uint64_t ticket) noexcept {
  std::size_t i = ticket & _mask;
  for (; _entries[i].ticket != 0; i = (i + 1) & _mask) {
    if (_entries[i].ticket == ticket) break;
  }
  if (_entries[i].ticket == 0) return std::nullopt;
  const auto found = std::make_pair(_entries[i].slot, _entries[i].generation);
  // Backward-shift deletion keeps every probe chain intact without tombstones: an entry after
  // the hole moves into it unless its home slot lies cyclically in (hole, its position].
  for (std::size_t j = (i + 1) & _mask; _entries[j].ticket != 0; j = (j + 1) & _mask) {
    const std::size_t home = _entries[j].ticket & _mask;
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    _entries[i] = _entries[j];
    i = j;
  }
  _entries[i] = {};
  --_count;
  return found;
}

// ---- inbound_server

inbound_server::inbound_server(std::shared_ptr<const inbound_config> config,
                               shard::host& host, unsigned shard_id, spool::store& store,
                               spool_pump& spool, inbound_metrics& metrics,
                               admin::log_buffer& log)
    : _first(std::move(config)),
      _config(*_first),
      _current(_first),
      _host(host),
      _shard_id(shard_id),
      _store(store),
      _spool(spool),
      _metrics(metrics),
      _log(log),
      _tickets(_config.sessions_per_shard_max),
      _deadlines{_config.timeout_command_ms, _config.timeout_data_block_ms,
                 _config.min_data_rate_bytes, _config.timeout_under_load_ms},
      _tls(_config.tls) {
  _next_session = admin::session_id_base(shard_id, false);
  const std::uint32_t sessions_max = _config.sessions_per_shard_max;
  _connections.resize(sessions_max);
  _free_slots.reserve(sessions_max);
  for (std::uint32_t slot = sessions_max; slot-- > 0;) _free_slots.push_back(slot);
  _waiting.reserve(sessions_max);
  _retrying.reserve(sessions_max);
  _buffer_waiters.reserve(sessions_max);
}

inbound_server::~inbound_server() {
  auto& timers = _host.timers();
  if (_grace_timer.armed()) timers.cancel(_grace_timer);
  if (_ticket_timer.armed()) timers.cancel(_ticket_timer);
  for (auto& c : _connections) {
    if (c && c->timer.armed()) timers.cancel(c->timer);
    if (c && c->fd >= 0 && c->phase() != inbound_phase::closed) _host.descriptors().close(c->fd);
  }
}

core::result<void> inbound_server::start() noexcept {
  for (io::op_kind* kind : {&_recv_kind, &_send_kind, &_close_kind}) {
    auto registered = _host.add_handler(*this);
    if (!registered) return core::fail(registered.error());
    *kind = registered.value();
  }
  io::buffer_ring_options options;
  options.group_id = 1;
  options.buffer_count = _config.receive_buffer_count;
  options.buffer_bytes = _config.receive_buffer_bytes;
  if (auto ready = _host.register_buffer_ring(_buffers, options); !ready) return ready;
  if (_tls) on_ticket_timer();
  return {};
}

// An accepted socket becomes a session (the listener's flags decide TLS and submission).
void received_fields(admin::log_record& record, const spool::envelope& envelope,
                     std::uint64_t session_id, std::uint64_t message_bytes,
                     std::string_view protocol, std::string_view login, std::string_view pool) {
  const auto id_text = spool::format_message_id(envelope.id);
  record.field("id", std::string_view(id_text.data(), 16))
      .hex_field("session", session_id)
      .field("from", envelope.reverse_path)
      .field("recipients", static_cast<std::uint64_t>(envelope.recipients.size()))
      .field("size", message_bytes)
      .field("client", envelope.client_address)
      .field("helo", envelope.helo)
      .field("protocol", protocol);
  if (!login.empty()) record.field("login", login);
  if (!pool.empty()) record.field("pool", pool);
}

bool inbound_server::open(int fd, const core::endpoint& peer, session_origin origin) noexcept {
  connection* c = acquire();
  if (c == nullptr) return false;
  _metrics.connections_accepted.add();
  c->implicit_tls = origin.implicit_tls;
  c->submission = origin.submission;
  c->open(fd, peer, false);
  c->check_invariants();
  return true;
}

void inbound_server::on_completion(const io::completion& done) noexcept {
  const io::op_kind kind = done.kind();
  connection* c = find(done);
  if (c == nullptr) {  // stale: the connection is gone; give back what the CQE carries
    if (done.has_buffer()) {
      _buffers.consume(done);
      _buffers.recycle(done.buffer_id());
    }
    return;
  }
  const connection::step_guard checked(*c);
  if (kind == _recv_kind) c->on_received(done);
  else if (kind == _send_kind) c->on_sent(done);
  else if (kind == _close_kind) c->on_closed();
}

connection* inbound_server::find(const io::completion& done) noexcept {
  const io::op_tag tag = done.tag();
  if (tag.slot >= _connections.size() || !_connections[tag.slot]) return nullptr;
  connection& c = *_connections[tag.slot];
  if (!c.live() || c.generation != tag.generation) return nullptr;
  return &c;
}


// Above load_threshold_percent of the session limit every deadline is capped at the
// under-load timeout (session_deadline.h); the sessions already open are shortened at once.
// Leaves load 10 points lower, so a shard at the threshold does not flap.
void inbound_server::update_load() noexcept {
  const std::uint64_t used = std::uint64_t{_live} * 100;
  const std::uint64_t limit = _config.sessions_per_shard_max;
  const std::uint64_t enter = limit * _config.load_threshold_percent;
  const std::uint64_t leave =
      _config.load_threshold_percent > 10 ? limit * (_config.load_threshold_percent - 10) : 0;
  if (!_loaded && used >= enter) {
    _loaded = true;
    _metrics.load_episodes.add();
    for (auto& c : _connections) {
      if (c && c->live()) {
        const connection::step_guard checked(*c);
        c->apply_load();
      }
    }
  } else if (_loaded && used < leave) {
    _loaded = false;
  }
}

connection* inbound_server::acquire() noexcept {
  if (_free_slots.empty()) return nullptr;
  const std::uint32_t slot = _free_slots.back();
  _free_slots.pop_back();
  auto& c = _connections[slot];
  if (!c) c = std::make_unique<connection>(*this, slot);  // first use of this slot only
  c->enter(inbound_phase::accepted);
  ++_live;
  _metrics.sessions.set(_live);
  update_load();
  return c.get();
}

void inbound_server::release(connection& c) noexcept {
  RINGMTA_ASSERT(c.ops_in_flight == 0);
  if (c.counted_client) _config.clients->remove(c.counted_peer);
  c.counted_client = false;
  c.enter(inbound_phase::free);
  c.generation = (c.generation + 1) & io::generation_mask;
  c.session.reset();
  c.sasl.reset();
  c.auth_held.reset();
  c.auth_line_storage.reset();  // 12 KiB: an idle slot keeps none
  c.tls.reset();       // the SSL and its buffers: an idle slot holds no TLS memory
  c.settings.reset();  // an idle slot does not keep an old configuration alive
  _free_slots.push_back(c.slot);
  --_live;
  _metrics.sessions.set(_live);
  update_load();
  if (release_listener) release_listener();  // a descriptor is free again: accept may resume
}

bool inbound_server::spool_has_room() const noexcept {
  // A feed hands the spool at most one receive buffer of body (dot-stuffed: up to twice as
  // much) plus a Received: header.
  return _store.can_append(2 * std::uint64_t{_config.receive_buffer_bytes});
}

void inbound_server::wait_for_spool(connection& c) noexcept {
  if (c.waiting_for_spool) return;
  c.waiting_for_spool = true;
  _waiting.push_back(c.slot);
}

// Re-arming a receive at once after -ENOBUFS, while every buffer is held, only gets -ENOBUFS
// again: the shard spun until the spool gave some back, and the simulator, whose -ENOBUFS comes
// at the same simulated instant, never reached the disk completion that ends it (seed 5041).
void inbound_server::wait_for_buffer(connection& c) noexcept {
  if (c.waiting_for_spool) return;
  c.waiting_for_spool = true;
  _buffer_waiters.push_back(c.slot);
}

void inbound_server::retry_waiting() noexcept {
  if (!_buffer_waiters.empty() && _buffers.buffers_out() < _buffers.buffer_count()) {
    _waiting.insert(_waiting.end(), _buffer_waiters.begin(), _buffer_waiters.end());
    _buffer_waiters.clear();
  }
  if (_waiting.empty()) return;
  _retrying.swap(_waiting);  // a connection still blocked re-adds itself to _waiting
  for (const std::uint32_t slot : _retrying) {
    connection& c = *_connections[slot];
    c.waiting_for_spool = false;
    if (!c.live()) continue;
    const connection::step_guard checked(c);
    c.pump();
  }
  _retrying.clear();
}

void inbound_server::on_committed(std::uint64_t ticket, int error) noexcept {
  const auto waiter = _tickets.take(ticket);
  if (!waiter) return;
  if (take_orphan(ticket, error)) return;
  connection& c = *_connections[waiter->first];
  if (!c.live() || c.generation != waiter->second) return;  // (closing orphans its commit)
  const connection::step_guard checked(c);
  c.on_commit_result(error);
}

void inbound_server::orphan(const connection& c) noexcept {
  _orphans.push_back(orphan_message{c.ticket, c.session_id, c.envelope, c.body, c.pool,
                                    c.message_bytes, c.message_protocol, c.login});
}

// A client that left between its end of data and the durable commit (no 250 reached it) may
// send the message again: a duplicate, as after a lost 250 (RFC 1047). Not routing it lost
// nothing either, but left it queued and undelivered until a restart's recovery: the
// simulator found that once it ran these sessions (docs/notes.md).
bool inbound_server::take_orphan(std::uint64_t ticket, int error) noexcept {
  const auto found = std::find_if(_orphans.begin(), _orphans.end(),
                                  [&](const orphan_message& o) { return o.ticket == ticket; });
  if (found == _orphans.end()) return false;
  orphan_message gone = std::move(*found);
  _orphans.erase(found);
  if (error != 0) {  // not queued, and nobody to answer 452 to
    _metrics.unanswered_failed.add();
    return true;
  }
  _metrics.unanswered_durable.add();
  _metrics.message_bytes.add(gone.message_bytes);
  _log.set_time(_host.wall_ms());
  admin::log_record record = _log.record("received");
  received_fields(record, gone.envelope, gone.session_id, gone.message_bytes, gone.protocol,
                  gone.login, gone.pool);
  record.field("answered", false);  // the client had gone: it may send the message again
  record.end();
  if (accepted_listener) accepted_listener(gone.envelope, gone.body, gone.pool);
  return true;
}

void inbound_server::on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept {
  const auto& to = result->reply_to;
  if (to.slot >= _connections.size() || !_connections[to.slot]) return;
  connection& c = *_connections[to.slot];
  if (!c.live() || c.generation != to.generation) return;  // the client left meanwhile
  const connection::step_guard checked(c);
  c.on_auth_result(std::move(result));
}

void inbound_server::set_tls_context(std::shared_ptr<const tls::server_context> context) noexcept {
  _tls = std::move(context);
  if (_tls && !_ticket_timer.armed()) on_ticket_timer();
}

// Ticket keys rotate on time even without handshakes, so an expired key is erased from memory
// within a minute (tls::ticket_key_ring; any shard may rotate, one at a time).
void inbound_server::on_ticket_timer() noexcept {
  if (!_tls) return;
  _tls->ticket_keys_mutable().rotate_if_due(_host.wall_ms() / 1000);
  _host.timers().schedule_after(_ticket_timer, 60'000);
}

void inbound_server::begin_shutdown(std::uint32_t grace_ms) noexcept {
  if (_shutting_down) return;
  _shutting_down = true;
  _host.timers().schedule_after(_grace_timer, grace_ms);
  // Idle sessions have nothing to finish: 421 now, so one idle client does not hold the
  // whole grace period. The others get it once their transaction is over (connection::pump).
  for (auto& c : _connections) {
    if (c && c->live() && c->idle()) {
      const connection::step_guard checked(*c);
      c->shutdown_now();
    }
  }
}

void inbound_server::on_grace_expired() noexcept {
  for (auto& c : _connections) {
    if (c && c->live()) {
      const connection::step_guard checked(*c);
      c->shutdown_now();
    }
  }
}

// ---- inbound_sessions (the public face)

inbound_sessions::inbound_sessions(std::shared_ptr<const inbound_config> config,
                                   shard::host& host, unsigned shard_id, spool::store& store,
                                   spool_pump& spool, inbound_metrics& metrics,
                                   admin::log_buffer& log)
    : _server(std::make_unique<inbound_server>(std::move(config), host, shard_id, store, spool,
                                               metrics, log)) {}
inbound_sessions::~inbound_sessions() = default;
core::result<void> inbound_sessions::start() noexcept { return _server->start(); }
bool inbound_sessions::open(int fd, const core::endpoint& peer, session_origin origin) noexcept {
  return _server->open(fd, peer, origin);
}
void inbound_sessions::begin_shutdown(std::uint32_t grace_ms) noexcept {
  _server->begin_shutdown(grace_ms);
}
bool inbound_sessions::shutting_down() const noexcept { return _server->shutting_down(); }
bool inbound_sessions::drained() const noexcept { return _server->drained(); }
std::uint32_t inbound_sessions::sessions() const noexcept { return _server->sessions(); }
void inbound_sessions::retry_waiting() noexcept { _server->retry_waiting(); }
void inbound_sessions::update(std::shared_ptr<const inbound_config> next) noexcept {
  _server->update(std::move(next));
}
void inbound_sessions::on_committed(std::uint64_t ticket, int error) noexcept {
  _server->on_committed(ticket, error);
}
void inbound_sessions::on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept {
  _server->on_auth_result(std::move(result));
}
void inbound_sessions::set_accepted_listener(accepted_fn listener) {
  _server->accepted_listener = std::move(listener);
}
void inbound_sessions::set_release_listener(std::function<void()> listener) {
  _server->release_listener = std::move(listener);
}
void inbound_sessions::set_commit_observer(commit_issued_fn observer) {
  _server->commit_observer = std::move(observer);
}

}  // namespace ringmta::server
