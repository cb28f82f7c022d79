// outbound::dns_client: dns::resolver over the shard's ring (see outbound/dns_client.h).
#include "ringmta/outbound/dns_client.h"

#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "ringmta/core/assert.h"
#include "ringmta/outbound/attempt_plan.h"

namespace ringmta::outbound {

namespace {

// A query is at most 12 header + 255 name + 4 question + 11 OPT bytes; TCP adds 2 of length.
constexpr std::size_t query_bytes_max = 512;
constexpr std::size_t tcp_query_bytes_max = query_bytes_max + 2;
constexpr std::size_t recent_exchanges = 16;  // per server, failed at once on ECONNREFUSED
// What one queued answer costs a socket's receive buffer: the datagram (up to the 1,232 bytes
// EDNS offers) plus the kernel's buffer overhead, rounded up.
constexpr std::uint64_t udp_answer_truesize_bytes = 4096;

// Query ids and MX shuffles from the kernel's CSPRNG (RFC 5452 §9.2: the id is the secret),
// fetched 64 values at a time.
dns::random_source kernel_random() {
  struct pool {
    std::uint64_t values[64];
    std::size_t next = 64;
  };
  auto state = std::make_shared<pool>();
  return [state]() -> std::uint64_t {
    if (state->next == std::size(state->values)) {
      std::size_t filled = 0;
      auto* bytes = reinterpret_cast<char*>(state->values);
      while (filled < sizeof state->values) {
        const ssize_t got = ::getrandom(bytes + filled, sizeof state->values - filled, 0);
        RINGMTA_ASSERT(got > 0 || errno == EINTR);
        if (got > 0) filled += static_cast<std::size_t>(got);
      }
      state->next = 0;
    }
    return state->values[state->next++];
  };
}

}  // namespace

struct dns_client::udp_socket {
  int fd = -1;
  bool receive_armed = false;
  std::unique_ptr<std::uint8_t[]> buffer;
  std::uint64_t recent[recent_exchanges] = {};  // exchanges sent lately (0: none)
  std::size_t recent_next = 0;
};

struct dns_client::udp_send {
  std::uint64_t exchange = 0;
  std::uint32_t server = 0;
};

struct dns_client::tcp_exchange {
  std::uint64_t exchange = 0;
  std::uint32_t server = 0;
  int fd = -1;
  core::endpoint peer;  // the connect's sockaddr: valid until the connect completes
  std::uint8_t ops = 0;
  bool connecting = false;
  bool ending = false;      // no new ops; close the fd once ops drain
  bool close_queued = false;
};

namespace {
// A question has at most one datagram in flight (a retry follows a timeout, long after the
// first send completed), so one slot per question the resolver may have on the wire means a
// send never fails for want of a slot. Fewer made a burst of lookups (a restart's recovered
// destinations, 256 questions asked in one loop turn) fail "server failure" past the 64th
// datagram: 960 deferrals after a restart with 200,000 queued (docs/notes.md).
std::uint32_t send_slots(const dns_client_config& config) {
  return std::max(1u, config.resolver.queries_in_flight_max);
}
}  // namespace

dns_client::dns_client(shard::host& owner, dns_client_config config)
    : _owner(owner),
      _io(owner.io()),
      _config(std::move(config)),
      _resolver(_config.resolver, _config.random ? _config.random : kernel_random()),
      _sends(send_slots(_config)),
      _tcp(std::max<std::uint32_t>(1, _config.tcp_exchanges_max)) {
  RINGMTA_ASSERT(_config.receive_buffer_bytes >= 512);
  _udp.resize(_config.resolver.servers.size());
  for (auto& socket : _udp) {
    socket.buffer = std::make_unique<std::uint8_t[]>(_config.receive_buffer_bytes);
  }
  _send_bytes = std::make_unique_for_overwrite<std::uint8_t[]>(std::size_t{_sends.capacity()} *
                                                               query_bytes_max);
  _tcp_bytes = std::make_unique_for_overwrite<std::uint8_t[]>(
      std::size_t{_tcp.capacity()} * (tcp_query_bytes_max + _config.receive_buffer_bytes));
  // _waiters grows with the lookups (as the cache's index does, dns/cache.cc): not reserved
  // for lookups_max + lookups_waiting_max at each start (issue 16: a simulated restart's).
}

dns_client::~dns_client() {
  RINGMTA_ASSERT(!_timer.armed());  // stop() on the shard's thread first
  for (auto& socket : _udp) {
    if (socket.fd >= 0) _owner.descriptors().close(socket.fd);
  }
  for (std::uint32_t slot = 0; slot < _tcp.capacity(); ++slot) {
    tcp_exchange* exchange = _tcp.get(slot, _tcp.generation(slot));
    if (exchange != nullptr && exchange->fd >= 0 && !exchange->close_queued) {
      _owner.descriptors().close(exchange->fd);
    }
  }
}

std::uint8_t* dns_client::tcp_query_bytes(std::uint32_t slot) noexcept {
  return _tcp_bytes.get() +
         std::size_t{slot} * (tcp_query_bytes_max + _config.receive_buffer_bytes);
}

std::uint8_t* dns_client::tcp_receive_bytes(std::uint32_t slot) noexcept {
  return tcp_query_bytes(slot) + tcp_query_bytes_max;
}

core::result<void> dns_client::start() noexcept {
  for (io::op_kind* kind : {&_udp_recv_kind, &_udp_send_kind, &_tcp_connect_kind, &_tcp_send_kind,
                            &_tcp_recv_kind, &_tcp_close_kind, &_misc_kind}) {
    auto added = _owner.add_handler(*this);
    if (!added) return core::fail(added.error());
    *kind = added.value();
  }
  _owner.add_iteration_hook(*this);
  // A server we cannot talk to (e.g. an IPv6 address on a host without IPv6) is skipped: its
  // sends fail at once and the resolver moves on. Only no usable server at all is an error.
  const auto& servers = _config.resolver.servers;
  int last_error = 0;
  std::size_t usable = 0;
  for (std::uint32_t i = 0; i < servers.size(); ++i) {
    const core::endpoint at = to_endpoint(servers[i].ip, servers[i].port);
    io::descriptors& descriptors = _owner.descriptors();
    const auto opened = descriptors.open_socket(at.family(), SOCK_DGRAM | SOCK_NONBLOCK);
    if (!opened) {
      last_error = opened.error();
      continue;
    }
    // A connected socket: the kernel drops datagrams from anyone but this server.
    const int fd = opened.value();
    if (auto connected = descriptors.connect_datagram(fd, at.sockaddr_pointer(), at.length);
        !connected) {
      last_error = connected.error();
      descriptors.close(fd);
      continue;
    }
    // Answers arrive in bursts (a restart asks for thousands of MX sites) while the shard is
    // busy: the default buffer (~200 KB, ~90 loopback datagrams at their true size) drops the
    // rest and each drop costs a timeout. Room for every question on the wire; the kernel caps
    // it at net.core.rmem_max (best effort: no error).
    (void)descriptors.set_option(fd, SOL_SOCKET, SO_RCVBUF,
                                 static_cast<int>(std::min<std::uint64_t>(
                                     std::uint64_t{_config.resolver.queries_in_flight_max} *
                                         udp_answer_truesize_bytes,
                                     INT32_MAX)));
    _udp[i].fd = fd;
    ++usable;
    arm_udp_receive(i);
  }
  if (usable == 0) return core::fail(last_error != 0 ? last_error : EINVAL);
  return {};
}

void dns_client::stop() noexcept {
  _stopped = true;
  _owner.timers().cancel(_timer);
  _waiters.clear();
  for (auto& socket : _udp) {
    if (socket.fd >= 0) _owner.descriptors().shutdown(socket.fd, SHUT_RDWR);  // ends the receive
  }
  for (std::uint32_t slot = 0; slot < _tcp.capacity(); ++slot) {
    if (tcp_exchange* exchange = _tcp.get(slot, _tcp.generation(slot))) {
      end_tcp(*exchange, slot, false);
    }
  }
}

// ---- lookups

std::uint64_t dns_client::start_mx_lookup(std::string_view domain, lookup_handler& handler,
                                          std::uint64_t cookie) noexcept {
  const std::uint64_t id = _resolver.start_mx_lookup(domain, now_ms());
  _waiters[id] = waiter{&handler, cookie};
  actions_waiting();
  return id;
}

std::uint64_t dns_client::start_host_lookup(std::string_view host, lookup_handler& handler,
                                            std::uint64_t cookie) noexcept {
  const std::uint64_t id = _resolver.start_host_lookup(host, now_ms());
  _waiters[id] = waiter{&handler, cookie};
  actions_waiting();
  return id;
}

void dns_client::cancel(std::uint64_t lookup) noexcept {
  if (_waiters.erase(lookup) == 0) return;
  _resolver.cancel(lookup);
  actions_waiting();  // a lookup that waited for the freed slot may have sent its questions
}

// Actions wait for the end of this iteration (no callback from inside start_*). The hook may
// have run already this iteration (a start from a later hook): the timer, due at the next tick,
// makes sure the shard does not sleep on them.
void dns_client::actions_waiting() noexcept {
  if (_draining || _actions_waiting) return;  // the running drain or a pending wake takes them
  _actions_waiting = true;
  if (!_stopped) _owner.timers().schedule_after(_timer, 0);
}

void dns_client::before_wait() noexcept {
  if (_actions_waiting) drain();
}

// Handles every action the resolver has. A handler called from here may start lookups: their
// actions join this same loop (the resolver keeps pending actions valid until it runs dry).
void dns_client::drain() noexcept {
  if (_draining) return;
  _draining = true;
  _actions_waiting = false;
  while (dns::action* next = _resolver.next_action()) handle(*next);
  _draining = false;
  _actions_waiting = false;
  reschedule();
}

void dns_client::handle(dns::action& next) noexcept {
  switch (next.kind) {
    case dns::action_kind::send:
      if (_stopped) return;
      if (next.via == dns::transport::udp) return send_udp(next);
      return send_tcp(next);
    case dns::action_kind::close:
      return close_tcp(next.exchange);
    case dns::action_kind::lookup_done: {
      const auto found = _waiters.find(next.lookup);
      if (found == _waiters.end()) return;  // cancelled
      const waiter who = found->second;
      _waiters.erase(found);
      who.handler->on_lookup_done(who.cookie, next.result);
      return;
    }
  }
}

void dns_client::reschedule() noexcept {
  if (_stopped) return;
  const std::uint64_t deadline = _resolver.next_deadline_ms();
  auto& timers = _owner.timers();
  if (deadline == dns::resolver::no_deadline) {
    timers.cancel(_timer);
    return;
  }
  if (_timer.armed() && _timer.deadline_tick() == deadline) return;
  timers.schedule_at(_timer, deadline);
}

void dns_client::on_deadline() noexcept {
  _resolver.on_time(now_ms());
  drain();
}

// ---- completions

void dns_client::on_completion(const io::completion& done) noexcept {
  const io::op_kind kind = done.kind();
  if (kind == _udp_recv_kind) on_udp_received(done.tag().slot, done);
  else if (kind == _udp_send_kind) on_udp_sent(done);
  else if (kind != _misc_kind) on_tcp_completion(done);
  else return;  // cancels
  drain();
}

// ---- UDP

void dns_client::arm_udp_receive(std::uint32_t server) noexcept {
  udp_socket& socket = _udp[server];
  if (_stopped || socket.receive_armed || socket.fd < 0) return;
  const auto queued = _io.prep_recv(socket.fd, socket.buffer.get(),
                                    _config.receive_buffer_bytes,
                                    io::pack_user_data(_udp_recv_kind, 0, server));
  socket.receive_armed = queued.ok();
}

void dns_client::on_udp_received(std::uint32_t server, const io::completion& done) noexcept {
  if (server >= _udp.size()) return;
  udp_socket& socket = _udp[server];
  socket.receive_armed = false;
  if (_stopped) return;
  if (done.res > 0) {
    _resolver.on_udp_packet(
        server, {socket.buffer.get(), static_cast<std::size_t>(done.res)}, now_ms());
  } else if (done.res == -ECONNREFUSED) {
    // ICMP port unreachable for one of our datagrams: nobody serves DNS there. Fail what we
    // sent lately (answered exchanges are ignored by the resolver) instead of timing out.
    ++_counters.port_unreachable;
    for (std::uint64_t& exchange : socket.recent) {
      if (exchange != 0) _resolver.on_send_failed(exchange, now_ms());
      exchange = 0;
    }
  } else {
    ++_counters.udp_receive_errors;
  }
  arm_udp_receive(server);
}

void dns_client::send_udp(dns::action& next) noexcept {
  const auto slot = _sends.acquire();
  if (!slot || next.bytes.size() > query_bytes_max || next.server_index >= _udp.size() ||
      _udp[next.server_index].fd < 0) {
    if (slot) _sends.release(slot->slot);
    ++_counters.udp_sends_refused;
    _resolver.on_send_failed(next.exchange, now_ms());
    return;
  }
  udp_send& send = *_sends.get(slot->slot, slot->generation);
  send.exchange = next.exchange;
  send.server = next.server_index;
  std::uint8_t* bytes = _send_bytes.get() + std::size_t{slot->slot} * query_bytes_max;
  std::memcpy(bytes, next.bytes.data(), next.bytes.size());
  udp_socket& socket = _udp[next.server_index];
  const auto queued = _io.prep_send(socket.fd, bytes,
                                    static_cast<std::uint32_t>(next.bytes.size()),
                                    _sends.user_data(_udp_send_kind, *slot));
  if (!queued) {
    _sends.release(slot->slot);
    ++_counters.udp_send_errors;
    _resolver.on_send_failed(next.exchange, now_ms());
    return;
  }
  socket.recent[socket.recent_next] = next.exchange;
  socket.recent_next = (socket.recent_next + 1) % recent_exchanges;
}

void dns_client::on_udp_sent(const io::completion& done) noexcept {
  const io::op_tag tag = done.tag();
  udp_send* send = _sends.get(tag);
  if (send == nullptr) return;
  const std::uint64_t exchange = send->exchange;
  _sends.release(tag.slot);
  if (done.res < 0 && !_stopped) {
    ++_counters.udp_send_errors;
    _resolver.on_send_failed(exchange, now_ms());
  }
}

// ---- TCP (RFC 1035 §4.2.2, RFC 7766): one connection per exchange, the resolver frames

std::uint64_t dns_client::tcp_user_data(io::op_kind kind, std::uint32_t slot) const noexcept {
  return io::pack_user_data(kind, _tcp.generation(slot), slot);
}

void dns_client::send_tcp(dns::action& next) noexcept {
  const auto handle = _tcp.acquire();
  if (!handle || next.bytes.size() > tcp_query_bytes_max || next.server_index >= _udp.size()) {
    if (handle) _tcp.release(handle->slot);
    ++_counters.tcp_refused;
    _resolver.on_tcp_closed(next.exchange, now_ms());
    return;
  }
  const std::uint32_t slot = handle->slot;
  tcp_exchange& exchange = *_tcp.get(slot, handle->generation);
  exchange.exchange = next.exchange;
  exchange.server = next.server_index;
  const auto& server = _config.resolver.servers[next.server_index];
  exchange.peer = to_endpoint(server.ip, server.port);
  const auto opened = _owner.descriptors().open_socket(exchange.peer.family(), SOCK_STREAM);
  exchange.fd = opened ? opened.value() : -1;
  std::memcpy(tcp_query_bytes(slot), next.bytes.data(), next.bytes.size());
  auto& ring = _io;
  // Connect, then (linked: only once connected) the framed query.
  const bool queued =
      exchange.fd >= 0 && ring.reserve(2).ok() &&
      ring.prep_connect(exchange.fd, exchange.peer.sockaddr_pointer(), exchange.peer.length,
                        tcp_user_data(_tcp_connect_kind, slot), io::sqe::link)
          .ok();
  if (!queued) {
    if (exchange.fd >= 0) _owner.descriptors().close(exchange.fd);
    _tcp.release(slot);
    ++_counters.tcp_refused;
    _resolver.on_tcp_closed(next.exchange, now_ms());
    return;
  }
  exchange.connecting = true;
  ++exchange.ops;
  ++_counters.tcp_connections;
  if (ring.prep_send(exchange.fd, tcp_query_bytes(slot),
                     static_cast<std::uint32_t>(next.bytes.size()),
                     tcp_user_data(_tcp_send_kind, slot))) {
    ++exchange.ops;
  }
}

void dns_client::arm_tcp_receive(tcp_exchange& exchange, std::uint32_t slot) noexcept {
  if (exchange.ending) return;
  const auto queued = _io.prep_recv(exchange.fd, tcp_receive_bytes(slot),
                                    _config.receive_buffer_bytes,
                                    tcp_user_data(_tcp_recv_kind, slot));
  if (!queued) return end_tcp(exchange, slot, true);
  ++exchange.ops;
}

void dns_client::on_tcp_completion(const io::completion& done) noexcept {
  const io::op_tag tag = done.tag();
  tcp_exchange* exchange = _tcp.get(tag);
  if (exchange == nullptr) return;
  const io::op_kind kind = done.kind();
  if (exchange->ops > 0) --exchange->ops;
  if (kind == _tcp_close_kind) {
    _tcp.release(tag.slot);
    return;
  }
  if (kind == _tcp_connect_kind) {
    exchange->connecting = false;
    if (done.res < 0) end_tcp(*exchange, tag.slot, true);
    else arm_tcp_receive(*exchange, tag.slot);
  } else if (kind == _tcp_send_kind) {
    if (done.res < 0) end_tcp(*exchange, tag.slot, true);
  } else if (kind == _tcp_recv_kind && !exchange->ending) {
    if (done.res <= 0) {
      end_tcp(*exchange, tag.slot, true);
    } else {
      const std::uint64_t id = exchange->exchange;
      // May produce a close action for this exchange (handled in drain, after this).
      _resolver.on_tcp_data(
          id, {tcp_receive_bytes(tag.slot), static_cast<std::size_t>(done.res)}, now_ms());
      arm_tcp_receive(*exchange, tag.slot);
    }
  }
  close_tcp_when_idle(*exchange, tag.slot);
}

// The resolver is done with the exchange (it has the reply, or gave up on it).
void dns_client::close_tcp(std::uint64_t exchange) noexcept {
  for (std::uint32_t slot = 0; slot < _tcp.capacity(); ++slot) {
    tcp_exchange* found = _tcp.get(slot, _tcp.generation(slot));
    if (found != nullptr && found->exchange == exchange && !found->ending) {
      return end_tcp(*found, slot, false);
    }
  }
}

void dns_client::end_tcp(tcp_exchange& exchange, std::uint32_t slot, bool tell) noexcept {
  if (exchange.ending) return;
  exchange.ending = true;
  if (tell) _resolver.on_tcp_closed(exchange.exchange, now_ms());
  if (exchange.connecting) {
    (void)_io.prep_cancel(tcp_user_data(_tcp_connect_kind, slot),
                                    io::pack_user_data(_misc_kind, 0, 0), false,
                                    io::sqe::skip_success);
  }
  // Ends a pending receive (0) or send (EPIPE).
  _owner.descriptors().shutdown(exchange.fd, SHUT_RDWR);
  close_tcp_when_idle(exchange, slot);
}

void dns_client::close_tcp_when_idle(tcp_exchange& exchange, std::uint32_t slot) noexcept {
  if (!exchange.ending || exchange.ops > 0 || exchange.close_queued) return;
  exchange.close_queued = true;
  if (_io.prep_close(exchange.fd, tcp_user_data(_tcp_close_kind, slot))) {
    ++exchange.ops;
    return;
  }
  _owner.descriptors().close(exchange.fd);
  _tcp.release(slot);
}

}  // namespace ringmta::outbound
