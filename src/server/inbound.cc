// server::inbound: listeners, accept, the connection table, commit tickets, shutdown.
// One SMTP session over the ring is in inbound_connection.cc.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <xxhash.h>

#include "inbound_internal.h"
#include "ringmta/net/idna.h"
#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"

namespace ringmta::server {

// ---- client_counters

// Hashes the address bytes alone (no port); a v4-mapped v6 address counts as its v4 address.
std::size_t client_counters::slot_of(const core::endpoint& client) noexcept {
  const void* bytes = nullptr;
  std::size_t length = 0;
  if (client.family() == AF_INET) {
    bytes = &reinterpret_cast<const sockaddr_in*>(client.sockaddr_pointer())->sin_addr;
    length = 4;
  } else if (client.family() == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6*>(client.sockaddr_pointer())->sin6_addr;
    const bool v4_mapped = IN6_IS_ADDR_V4MAPPED(&v6);
    bytes = v4_mapped ? static_cast<const void*>(v6.s6_addr + 12) : &v6;
    length = v4_mapped ? 4 : 16;
  }
  return XXH3_64bits(bytes, length) & (slot_count - 1);
}

bool client_counters::try_add(const core::endpoint& client, std::uint32_t limit) noexcept {
  auto& count = _counts[slot_of(client)];
  std::uint32_t seen = count.load(std::memory_order_relaxed);
  do {
    if (seen >= limit) return false;
  } while (!count.compare_exchange_weak(seen, seen + 1, std::memory_order_relaxed));
  return true;
}

void client_counters::remove(const core::endpoint& client) noexcept {
  const auto before = _counts[slot_of(client)].fetch_sub(1, std::memory_order_relaxed);
  RINGMTA_ASSERT(before > 0);
}

// ---- relay_policy

bool relay_policy::client_may_relay(const core::endpoint& client) const noexcept {
  return std::any_of(mynetworks.begin(), mynetworks.end(),
                     [&](const core::cidr& range) {
                       return range.contains(client.sockaddr_pointer());
                     });
}

namespace {
bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}
}  // namespace

// relay_domains are A-labels (settings); a U-label domain from an SMTPUTF8 client is compared
// in its A-label form (RFC 5890 §2.3.2.1), so a look-alike never matches by accident.
bool relay_policy::accepts_domain(std::string_view domain) const noexcept {
  if (!net::is_ascii(domain)) {
    const auto ascii = net::domain_to_ascii(domain);
    return ascii && accepts_domain(*ascii);
  }
  for (const auto& listed : relay_domains) {
    if (!listed.empty() && listed.front() == '.') {  // ".example.com": any subdomain
      if (domain.size() > listed.size() &&
          equal_ignoring_case(domain.substr(domain.size() - listed.size()), listed))
        return true;
    } else if (equal_ignoring_case(domain, listed)) {
      return true;
    }
  }
  return false;
}

// ---- listeners

namespace {

core::result<int> open_listener(const core::endpoint& at) noexcept {
  const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return core::fail(errno);
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  // Accepted sockets inherit TCP_NODELAY: replies are small and already batched per feed.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0 ||
      ::bind(fd, at.sockaddr_pointer(), at.length) < 0 || ::listen(fd, 4096) < 0) {
    const int error = errno;
    ::close(fd);
    return core::fail(error);
  }
  return fd;
}

core::endpoint local_address(int fd) noexcept {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length);
}

}  // namespace

core::result<std::vector<std::vector<int>>> open_listeners(
    const std::vector<core::endpoint>& listen, unsigned shards,
    std::vector<core::endpoint>& bound) noexcept {
  std::vector<std::vector<int>> fds(shards);
  bound.clear();
  for (const auto& configured : listen) {
    core::endpoint at = configured;
    for (unsigned shard = 0; shard < shards; ++shard) {
      auto fd = open_listener(at);
      if (!fd) {
        for (auto& per_shard : fds)
          for (int open_fd : per_shard) ::close(open_fd);
        return core::fail(fd.error());
      }
      if (shard == 0) at = local_address(fd.value());  // port 0: every shard shares the port
      fds[shard].push_back(fd.value());
    }
    bound.push_back(at);
  }
  return fds;
}

// ---- ticket_table

ticket_table::ticket_table(std::uint32_t sessions_max) {
  std::size_t size = 16;
  while (size < 2 * std::size_t{sessions_max}) size <<= 1;
  _entries.resize(size);
  _mask = size - 1;
}

void ticket_table::insert(std::uint64_t ticket, std::uint32_t slot,
                          std::uint32_t generation) noexcept {
  RINGMTA_ASSERT(ticket != 0);
  for (std::size_t i = ticket & _mask;; i = (i + 1) & _mask) {
    if (_entries[i].ticket == 0) {
      _entries[i] = {ticket, slot, generation};
      return;
    }
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
  return found;
}

// ---- inbound_server

inbound_server::inbound_server(std::shared_ptr<const inbound_config> config,
                               shard::shard& owner, spool::store& store,
                               spool_ring_driver& driver, inbound_metrics& metrics,
                               admin::log_buffer& log)
    : _first(std::move(config)),
      _config(*_first),
      _current(_first),
      _owner(owner),
      _store(store),
      _driver(driver),
      _metrics(metrics),
      _log(log),
      _tickets(_config.sessions_per_shard_max),
      _deadlines{_config.timeout_command_ms, _config.timeout_data_block_ms,
                 _config.min_data_rate_bytes, _config.timeout_under_load_ms},
      _tls(_config.tls) {
  _next_session = admin::session_id_base(owner.id(), false);
  const std::uint32_t sessions_max = _config.sessions_per_shard_max;
  _connections.resize(sessions_max);
  _free_slots.reserve(sessions_max);
  for (std::uint32_t slot = sessions_max; slot-- > 0;) _free_slots.push_back(slot);
  _waiting.reserve(sessions_max);
  _retrying.reserve(sessions_max);
}

inbound_server::~inbound_server() {
  if (_grace_timer.armed()) _owner.timers().cancel(_grace_timer);
  if (_accept_timer.armed()) _owner.timers().cancel(_accept_timer);
  if (_ticket_timer.armed()) _owner.timers().cancel(_ticket_timer);
  for (auto& c : _connections) {
    if (c && c->timer.armed()) _owner.timers().cancel(c->timer);
    if (c && c->fd >= 0 && c->phase() != inbound_phase::closed) ::close(c->fd);
  }
  for (int fd : _listeners) ::close(fd);
}

core::result<void> inbound_server::start() noexcept {
  for (io::op_kind* kind : {&_accept_kind, &_recv_kind, &_send_kind, &_close_kind}) {
    auto registered = _owner.add_handler(*this);
    if (!registered) return core::fail(registered.error());
    *kind = registered.value();
  }
  io::buffer_ring_options options;
  options.group_id = 1;
  options.buffer_count = _config.receive_buffer_count;
  options.buffer_bytes = _config.receive_buffer_bytes;
  if (auto ready = _buffers.init(_owner.ring(), options); !ready) return ready;
  _owner.add_buffer_ring(_buffers);
  RINGMTA_ASSERT(_owner.id() < _config.listener_fds.size());
  _listeners = _config.listener_fds[_owner.id()];
  _accept_armed.assign(_listeners.size(), false);
  _accept_paused.assign(_listeners.size(), false);
  for (std::size_t i = 0; i < _listeners.size(); ++i) arm_accept(i);
  if (_tls) on_ticket_timer();
  return {};
}

void inbound_server::arm_accept(std::size_t listener) noexcept {
  if (_shutting_down || _accept_armed[listener] || _accept_paused[listener]) return;
  const auto tag = io::pack_user_data(_accept_kind, 0, static_cast<std::uint32_t>(listener));
  const auto queued = _owner.ring().prep_accept(_listeners[listener], tag, /*multishot=*/true);
  _accept_armed[listener] = queued.ok();
}

void inbound_server::on_completion(shard::shard&, const io::completion& done) noexcept {
  const io::op_kind kind = done.kind();
  if (kind == _accept_kind) return on_accepted(done.tag().slot, done);
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

void inbound_server::on_accepted(std::size_t listener, const io::completion& done) noexcept {
  if (!done.more()) _accept_armed[listener] = false;
  if (done.failed()) {
    const int error = -done.res;
    if (error == EMFILE || error == ENFILE || error == ENOMEM || error == ENOBUFS)
      return pause_accepting(listener, error);
    if (!done.more()) arm_accept(listener);  // ECONNABORTED and the like: the next one is fine
    return;
  }
  const int fd = done.res;
  if (!done.more()) arm_accept(listener);
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (_shutting_down || ::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0) {
    ::close(fd);
    return;
  }
  connection* c = acquire();
  if (c == nullptr) {
    // At the session limit: a best-effort 421 straight from this thread (non-blocking send on a
    // fresh socket always fits the buffer) instead of leaving the client to time out.
    static constexpr char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
    [[maybe_unused]] const auto sent =
        ::send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    ::close(fd);
    _metrics.connections_refused_shard_limit.add();
    char client[64];
    const auto peer = core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length);
    _log.set_time(core::wall_milliseconds());
    _log.record("rejected")
        .field("client", peer.to_chars(client, sizeof client))
        .field("reply", std::string_view(busy, sizeof busy - 3))
        .field("detail", "max_sessions_per_shard reached");
    return;
  }
  _metrics.connections_accepted.add();
  c->implicit_tls = listener < _config.implicit_tls.size() && _config.implicit_tls[listener];
  c->submission = listener < _config.submission.size() && _config.submission[listener];
  c->open(fd, core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length),
          false);
  c->check_invariants();
}

// Out of descriptors (or memory): an accept re-armed now would fail at once, over and over,
// with the CPU spinning and no client served. The listener waits, connections queue in the
// kernel's backlog, and accepting resumes when a connection closes (a descriptor is free) or
// after accept_retry_ms (another part of the process may have freed one). Logged at most once
// a minute, with the count.
void inbound_server::pause_accepting(std::size_t listener, int error) noexcept {
  constexpr std::uint32_t accept_retry_ms = 250;
  _accept_paused[listener] = true;
  ++_accept_pauses;
  _metrics.accept_pauses.add();
  if (!_accept_timer.armed()) _owner.timers().schedule_after(_accept_timer, accept_retry_ms);
  const std::uint64_t now = _owner.now_ms();
  if (_pause_logged_ms != 0 && now - _pause_logged_ms < 60'000) return;
  _pause_logged_ms = now;
  _log.set_time(core::wall_milliseconds());
  _log.record("accept_paused")
      .field("shard", static_cast<std::uint64_t>(_owner.id()))
      .field("error", std::string_view(std::strerror(error)))
      .field("pauses", _accept_pauses)
      .field("sessions", static_cast<std::uint64_t>(_live));
}

void inbound_server::resume_accepting() noexcept {
  if (_accept_timer.armed()) _owner.timers().cancel(_accept_timer);
  for (std::size_t i = 0; i < _accept_paused.size(); ++i) {
    if (!_accept_paused[i]) continue;
    _accept_paused[i] = false;
    arm_accept(i);
  }
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
  if (_accept_timer.armed()) resume_accepting();  // a descriptor is free again
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

void inbound_server::retry_waiting() noexcept {
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
  connection& c = *_connections[waiter->first];
  if (!c.live() || c.generation != waiter->second) return;  // client left before the 250
  const connection::step_guard checked(c);
  c.on_commit_result(error);
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
  _tls->ticket_keys_mutable().rotate_if_due(core::wall_seconds());
  _owner.timers().schedule_after(_ticket_timer, 60'000);
}

void inbound_server::begin_shutdown(std::uint32_t grace_ms) noexcept {
  if (_shutting_down) return;
  _shutting_down = true;
  // Closing the listening sockets ends the multishot accepts (their final CQE arrives later).
  for (int fd : _listeners) ::shutdown(fd, SHUT_RDWR);
  _owner.timers().schedule_after(_grace_timer, grace_ms);
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

// ---- inbound (the public face)

inbound::inbound(std::shared_ptr<const inbound_config> config, shard::shard& owner,
                 spool::store& store, spool_ring_driver& driver, inbound_metrics& metrics,
                 admin::log_buffer& log)
    : _server(std::make_unique<inbound_server>(std::move(config), owner, store, driver, metrics,
                                               log)) {}
inbound::~inbound() = default;
core::result<void> inbound::start() noexcept { return _server->start(); }
void inbound::begin_shutdown(std::uint32_t grace_ms) noexcept { _server->begin_shutdown(grace_ms); }
bool inbound::drained() const noexcept { return _server->drained(); }
std::uint32_t inbound::sessions() const noexcept { return _server->sessions(); }
void inbound::retry_waiting() noexcept { _server->retry_waiting(); }
void inbound::update(std::shared_ptr<const inbound_config> next) noexcept {
  _server->update(std::move(next));
}

std::shared_ptr<const inbound_config> freeze(inbound_config config) {
  auto frozen = std::make_shared<inbound_config>(std::move(config));
  frozen->engine.hostname = frozen->hostname;  // views into the snapshot's own strings
  frozen->engine.greeting_text = frozen->greeting_text;
  frozen->engine_implicit_tls.hostname = frozen->hostname;
  frozen->engine_implicit_tls.greeting_text = frozen->greeting_text;
  frozen->engine_plain_auth.hostname = frozen->hostname;
  frozen->engine_plain_auth.greeting_text = frozen->greeting_text;
  frozen->greeting = "220 " + frozen->hostname + " " + frozen->greeting_text + "\r\n";
  return frozen;
}
void inbound::on_committed(std::uint64_t ticket, int error) noexcept {
  _server->on_committed(ticket, error);
}
void inbound::on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept {
  _server->on_auth_result(std::move(result));
}
void inbound::set_accepted_listener(accepted_fn listener) {
  _server->accepted_listener = std::move(listener);
}

}  // namespace ringmta::server
