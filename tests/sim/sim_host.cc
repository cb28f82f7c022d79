#include "sim_host.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace ringmta::sim {

namespace {
constexpr std::int64_t ms_ns = 1'000'000;
}  // namespace

// One direction of a socket: bytes in order, [read | arrived | in flight], and the lengths of
// the arrived segments. A receive takes from one segment at most (as a read returns what one
// segment brought; a datagram is one segment). One buffer per direction, reused: no string
// per send or reply (issue 16: the relay bench copied each into a fresh std::string).
class sim_host::byte_lane {
 public:
  // Bytes on their way: they arrive, in order, with arrive() or are lost with lose().
  void send(std::string_view bytes) { _bytes.append(bytes); }
  // The oldest `length` bytes in flight arrive as one segment.
  void arrive(std::size_t length) {
    _segments.push_back(length);
    _arrived_end += length;
  }
  // The oldest `length` bytes in flight never arrive (sent after the end of stream).
  void lose(std::size_t length) { _bytes.erase(_arrived_end, length); }
  bool has_segment() const noexcept { return _segment_head < _segments.size(); }
  bool in_flight() const noexcept { return _arrived_end < _bytes.size(); }
  std::string_view segment() const noexcept {
    return {_bytes.data() + _head, _segments[_segment_head]};
  }
  // Takes `length` bytes of the first segment; a segment taken whole is gone.
  void consume(std::size_t length) noexcept {
    _head += length;
    if ((_segments[_segment_head] -= length) == 0) ++_segment_head;
    if (_segment_head < _segments.size()) return;
    _segments.clear();
    _segment_head = 0;
    _bytes.erase(0, _head);  // what is left is in flight: usually nothing
    _arrived_end -= _head;
    _head = 0;
  }

 private:
  std::string _bytes;
  std::size_t _head = 0;         // the first byte not read
  std::size_t _arrived_end = 0;  // the first byte in flight
  std::vector<std::size_t> _segments;
  std::size_t _segment_head = 0;
};

// Hot fields first: every send, arrival and receive of a stream touches the kind, the flags,
// the peer, the lanes and the receives, and a relay's socket is touched again only after the
// other destinations' (bench/relay: 100 sockets), so they share the first cache lines; the
// address, the file's bytes and the listener's backlog follow (issue 16, s13-benchpack).
struct alignas(64) sim_host::socket {
  enum class kind : std::uint8_t { stream, datagram, file, listener };
  kind what = kind::stream;
  bool connected = false;
  bool end_of_stream = false;  // the peer closed: receives return 0 once inbound is empty
  bool shut = false;           // shutdown(2) by us
  // A close lets the bytes in flight arrive first (set by send_now: the acceptor's 421, sent
  // and closed at once). Other closes drop them (see sim_host.h).
  bool linger = false;
  std::unique_ptr<stream_peer> peer;
  std::int64_t to_peer_ns = 0;  // the last byte sent arrives then: later sends arrive after
  std::int64_t to_us_ns = 0;
  std::vector<waiting_receive> receives;  // in submission order
  byte_lane inbound;           // from the peer: stream segments or whole datagrams
  byte_lane outbound;          // to the peer (streams)

  int family = AF_INET;
  std::uint64_t connect_user_data = 0;  // a connect in flight (0: none)
  core::endpoint remote;
  std::string file;  // kind file: its bytes
  // kind listener: connections not accepted yet, and the accept waiting for them (0: none)
  std::deque<int> backlog;
  std::uint64_t accept_user_data = 0;
  bool accept_multishot = false;
};

struct sim_host::lingering {
  std::unique_ptr<stream_peer> peer;
  byte_lane outbound;  // its bytes in flight arrive; nothing comes back
};

sim_host::sim_host(scheduler& clock, std::uint64_t seed, sim_network network,
                   std::int64_t net_ns_max, std::int64_t epoch_ms)
    : _clock(clock),
      _random(seed * 0x9e3779b97f4a7c15ull + 0x4057),
      _network(std::move(network)),
      _net_ns_max(std::max<std::int64_t>(net_ns_max, 20'000)),
      _epoch_ms(epoch_ms),
      _timers(now_ms()) {}

sim_host::~sim_host() {
  _liveness->alive = false;
  if (_liveness->holders == 0) delete _liveness;
}

// ---- shard::host

core::result<io::op_kind> sim_host::add_handler(shard::host_handler& handler) noexcept {
  if (_next_kind > 255) return core::fail(ENOSPC);
  const auto kind = static_cast<io::op_kind>(_next_kind++);
  _handlers[kind] = &handler;
  return kind;
}

core::result<void> sim_host::register_buffer_ring(io::buffer_ring& buffers,
                                                  const io::buffer_ring_options& options) noexcept {
  if (group(options.group_id) != nullptr) return core::fail(EEXIST);
  if (auto ready = buffers.init_unregistered(options); !ready) return ready;
  _groups.emplace_back(options.group_id, &buffers);
  return {};
}

io::buffer_ring* sim_host::group(std::uint16_t id) const noexcept {
  for (const auto& [group_id, buffers] : _groups) {
    if (group_id == id) return buffers;
  }
  return nullptr;
}

std::uint64_t sim_host::now_ms() const noexcept {
  return _start_ms + static_cast<std::uint64_t>(_clock.now_ns() / ms_ns);
}

std::int64_t sim_host::wall_ms() const noexcept { return _epoch_ms + _clock.now_ns() / ms_ns; }

std::uint64_t sim_host::precise_ns() const noexcept {
  return _start_ms * ms_ns + static_cast<std::uint64_t>(_clock.now_ns());
}

// ---- the loop

void sim_host::dispatch(const io::completion& done) noexcept {
  ++_counters.completions;
  const io::op_kind kind = done.kind();
  if (shard::host_handler* handler = _handlers[kind]) {
    handler->on_completion(done);
  } else {
    ++_counters.stale_completions;
  }
}

// shard::shard::run's order: timers, hooks, buffer-ring recycles; then (here) the next wake.
void sim_host::turn() noexcept {
  ++_counters.turns;
  _counters.timers_fired += _timers.advance(now_ms());
  for (shard::host_hook* hook : _hooks) hook->before_wait();
  for (auto& [group, buffers] : _groups) buffers->flush();
  arm_timer_wake();
}

void sim_host::arm_timer_wake() noexcept {
  const std::uint64_t next = _timers.next_tick();
  if (next == core::timer_wheel::no_timer) return;
  const std::int64_t at_ns =
      std::max(_clock.now_ns(), static_cast<std::int64_t>(next - _start_ms) * ms_ns);
  if (_timer_wake_ns >= 0 && _timer_wake_ns <= at_ns && _timer_wake_ns >= _clock.now_ns()) {
    return;  // an earlier (or the same) wake is already queued
  }
  _timer_wake_ns = at_ns;
  at(at_ns, [this, at_ns] {
    if (_timer_wake_ns == at_ns) _timer_wake_ns = -1;
    turn();
  });
}

void sim_host::complete(std::uint64_t user_data, std::int32_t res, std::uint32_t flags,
                        io::sqe_flags sqe_flags) {
  if (res >= 0 && (sqe_flags & io::sqe::skip_success) != 0) return;
  _ready.push_back(io::completion{user_data, res, flags});
  if (_reap_queued) return;
  _reap_queued = true;
  at(_clock.now_ns(), [this] {
    _reap_queued = false;
    reap();
  });
}

// shard::shard::run's order: the clock read and timers advanced, every completion ready
// dispatched, then one turn. Completions posted meanwhile (a prep inside a handler) are the
// next batch's, as SQEs are submitted only when the loop waits.
void sim_host::reap() noexcept {
  if (_ready.empty()) return;
  _counters.timers_fired += _timers.advance(now_ms());
  _reaping.swap(_ready);
  for (const io::completion& done : _reaping) dispatch(done);
  _reaping.clear();
  turn();
}

void sim_host::wake() {
  if (_wake_queued) return;
  _wake_queued = true;
  at(_clock.now_ns(), [this] {
    _wake_queued = false;
    turn();
  });
}

bool sim_host::run(const std::function<bool()>& done, std::uint64_t actions_max) {
  turn();
  for (std::uint64_t actions = 0; !done(); ++actions) {
    if (actions >= actions_max || !_clock.run_one()) return done();
  }
  return true;
}

std::int64_t sim_host::latency_ns() noexcept {
  return static_cast<std::int64_t>(
      _random.between(20'000, static_cast<std::uint64_t>(_net_ns_max)));
}

sim_host::socket* sim_host::find(int fd) noexcept {
  if (fd < _first_fd) return nullptr;
  const auto index = static_cast<std::size_t>(fd - _first_fd);
  return index < _sockets.size() ? _sockets[index].get() : nullptr;
}

int sim_host::add_socket(std::unique_ptr<socket> s) {
  // The hot fields (socket's comment) in the first four cache lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
  static_assert(offsetof(socket, outbound) + sizeof(byte_lane) <= 4 * 64);
#pragma GCC diagnostic pop
  _sockets.push_back(std::move(s));  // fds only grow: the new one is the table's end
  return _next_fd++;
}

void sim_host::erase_socket(int fd) noexcept {
  if (find(fd) == nullptr) return;
  _sockets[static_cast<std::size_t>(fd - _first_fd)].reset();
  // Closed slots at the front go in blocks (amortised: a vector indexes in two instructions
  // where a deque took a dozen, and find runs several times per event).
  while (_closed_front < _sockets.size() && !_sockets[_closed_front]) ++_closed_front;
  if (_closed_front * 2 >= _sockets.size()) {
    _sockets.erase(_sockets.begin(),
                   _sockets.begin() + static_cast<std::ptrdiff_t>(_closed_front));
    _first_fd += static_cast<int>(_closed_front);
    _closed_front = 0;
  }
}

std::size_t sim_host::open_sockets() const noexcept {
  return static_cast<std::size_t>(
      std::count_if(_sockets.begin(), _sockets.end(), [](const std::unique_ptr<socket>& s) {
        return s && s->what != socket::kind::file;
      }));
}

core::result<void> sim_host::unsupported() noexcept {
  ++_counters.unsupported_ops;
  return core::fail(EOPNOTSUPP);
}

core::result<void> sim_host::refuse_linked(io::sqe_flags flags) noexcept {
  if ((flags & (io::sqe::link | io::sqe::hardlink | io::sqe::drain)) != 0) return unsupported();
  return {};
}

// ---- network ops

core::result<void> sim_host::prep_connect(int fd, const sockaddr* address,
                                          socklen_t address_length, std::uint64_t user_data,
                                          io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  socket* s = find(fd);
  if (s == nullptr || s->what != socket::kind::stream) return core::fail(EBADF);
  if (s->connected || s->connect_user_data != 0) return core::fail(EISCONN);
  s->remote = core::endpoint::from_sockaddr(address, address_length);
  s->connect_user_data = user_data;
  ++_counters.connects;
  at(_clock.now_ns() + latency_ns(), [this, fd, user_data] {
    socket* s = find(fd);
    if (s == nullptr || s->connect_user_data != user_data) return;  // cancelled or closed
    s->connect_user_data = 0;
    std::unique_ptr<stream_peer> peer = _network.connect ? _network.connect(s->remote) : nullptr;
    if (!peer) {
      ++_counters.connects_refused;
      complete(user_data, -ECONNREFUSED);
      return reap();
    }
    s->peer = std::move(peer);
    s->connected = true;
    s->peer->on_connected(*this, fd);
    complete(user_data, 0);
    reap();
  });
  return {};
}

core::result<void> sim_host::prep_recv(int fd, void* buffer, std::uint32_t length,
                                       std::uint64_t user_data, io::sqe_flags flags) noexcept {
  return queue_receive(fd, waiting_receive{user_data, buffer, length, nullptr}, flags);
}

core::result<void> sim_host::prep_recv_select(int fd, std::uint16_t group,
                                              std::uint64_t user_data,
                                              io::sqe_flags flags) noexcept {
  io::buffer_ring* const buffers = this->group(group);
  if (buffers == nullptr) return core::fail(ENOENT);
  return queue_receive(fd, waiting_receive{user_data, nullptr, 0, buffers}, flags);
}

core::result<void> sim_host::prep_recv_multishot(int fd, std::uint16_t group,
                                                 std::uint64_t user_data,
                                                 io::sqe_flags flags) noexcept {
  io::buffer_ring* const buffers = this->group(group);
  if (buffers == nullptr) return core::fail(ENOENT);
  return queue_receive(fd, waiting_receive{user_data, nullptr, 0, buffers, true}, flags);
}

core::result<void> sim_host::queue_receive(int fd, waiting_receive wanted,
                                           io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  socket* s = find(fd);
  if (s == nullptr || s->what == socket::kind::file) return core::fail(EBADF);
  s->receives.push_back(wanted);
  satisfy_receives(*s);
  return {};
}

// Copies from the first arrived segment into the receive's memory; returns the byte count or
// -errno.
std::int32_t sim_host::fill(const waiting_receive& wanted, byte_lane& inbound, bool datagram,
                            std::uint32_t& flags) {
  std::byte* into = static_cast<std::byte*>(wanted.buffer);
  std::uint32_t room = wanted.length;
  if (wanted.group != nullptr) {
    const auto pick = wanted.group->take_as_kernel();
    if (!pick) {
      ++_counters.enobufs;
      return -ENOBUFS;
    }
    into = pick->memory.data();
    room = static_cast<std::uint32_t>(pick->memory.size());
    flags = io::cqe_flag_buffer | (std::uint32_t{pick->buffer_id} << io::cqe_buffer_shift);
  }
  const std::string_view segment = inbound.segment();
  const std::size_t taken = std::min<std::size_t>(room, segment.size());
  std::memcpy(into, segment.data(), taken);
  // A datagram larger than the buffer is truncated (MSG_TRUNC not reported: not used here).
  inbound.consume(datagram ? segment.size() : taken);
  return static_cast<std::int32_t>(taken);
}

void sim_host::satisfy_receives(socket& receiver) {
  socket* const s = &receiver;  // complete() only queues: the socket stays put
  const bool datagram = s->what == socket::kind::datagram;
  while (!s->receives.empty()) {
    const waiting_receive wanted = s->receives.front();
    std::int32_t res = 0;
    std::uint32_t flags = 0;
    if (s->inbound.has_segment()) {
      res = fill(wanted, s->inbound, datagram, flags);
      if (res > 0) _counters.bytes_from_peers += static_cast<std::uint64_t>(res);
    } else if (!s->end_of_stream && !s->shut) {
      return;  // nothing yet: the receive waits
    }
    if (wanted.multishot && res > 0) {  // stays armed: the next segment completes it again
      complete(wanted.user_data, res, flags | io::cqe_flag_more);
      continue;
    }
    s->receives.erase(s->receives.begin());
    complete(wanted.user_data, res, flags);
  }
}

core::result<void> sim_host::prep_send(int fd, const void* data, std::uint32_t length,
                                       std::uint64_t user_data, io::sqe_flags flags,
                                       int) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  socket* s = find(fd);
  if (s == nullptr || s->what == socket::kind::file) return core::fail(EBADF);
  if (!s->connected) {
    complete(user_data, -ENOTCONN);
    return {};
  }
  if (s->shut || (s->what == socket::kind::stream && !s->peer)) {
    complete(user_data, -EPIPE);
    return {};
  }
  const std::string_view bytes(static_cast<const char*>(data), length);
  _counters.bytes_to_peers += length;
  if (s->what == socket::kind::datagram) {
    send_datagram(fd, *s, bytes);
  } else {
    send_stream(fd, *s, bytes);
  }
  complete(user_data, static_cast<std::int32_t>(length));
  return {};
}

// The network's replies come back after a latency each, in any order (UDP: RFC 768).
void sim_host::send_datagram(int fd, socket& s, std::string_view bytes) {
  ++_counters.datagrams;
  std::vector<std::string> replies =
      _network.datagram ? _network.datagram(s.remote, bytes) : std::vector<std::string>{};
  for (std::string& reply : replies) {
    at(_clock.now_ns() + latency_ns() * 2, [this, fd, reply = std::move(reply)] {
      socket* s = find(fd);
      if (s == nullptr) return;
      s->inbound.send(reply);
      s->inbound.arrive(reply.size());
      satisfy_receives(*s);
      reap();
    });
  }
}

// A stream: the bytes reach the peer after the ones sent before them. Their arrival is the
// peer's business: nothing completes on this host, so no loop turn follows.
void sim_host::send_stream(int fd, socket& s, std::string_view bytes) {
  const std::int64_t when = std::max(s.to_peer_ns, _clock.now_ns() + latency_ns());
  s.to_peer_ns = when;
  s.outbound.send(bytes);
  at(when, [this, fd, length = bytes.size()] {
    socket* s = find(fd);
    if (s == nullptr) return linger_arrive(fd, length);
    s->outbound.arrive(length);
    // The view lives in the lane until consumed: the peer only queues its answers.
    if (s->peer) s->peer->on_bytes(*this, fd, s->outbound.segment());
    if ((s = find(fd)) != nullptr) s->outbound.consume(length);
  });
}

void sim_host::peer_send(int fd, std::string_view bytes) {
  socket* s = find(fd);
  if (s == nullptr || bytes.empty()) return;
  const std::int64_t when = std::max(s->to_us_ns, _clock.now_ns() + latency_ns());
  s->to_us_ns = when;
  s->inbound.send(bytes);
  at(when, [this, fd, length = bytes.size()] {
    socket* s = find(fd);
    if (s == nullptr) return;
    if (s->end_of_stream) return s->inbound.lose(length);
    s->inbound.arrive(length);
    satisfy_receives(*s);
    reap();
  });
}

void sim_host::peer_close(int fd) {
  socket* s = find(fd);
  if (s == nullptr) return;
  const std::int64_t when = std::max(s->to_us_ns, _clock.now_ns() + latency_ns());
  s->to_us_ns = when;
  at(when, [this, fd] {
    socket* s = find(fd);
    if (s == nullptr) return;
    s->end_of_stream = true;
    s->peer.reset();
    satisfy_receives(*s);
    reap();
  });
}

core::result<void> sim_host::prep_read(int fd, void* buffer, std::uint32_t length,
                                       std::uint64_t offset, std::uint64_t user_data,
                                       io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  socket* s = find(fd);
  if (s == nullptr && _file_reader && offset != ~0ull) {
    complete(user_data, static_cast<std::int32_t>(_file_reader(fd, offset, buffer, length)));
    return {};
  }
  if (s == nullptr || s->what != socket::kind::file) return core::fail(EBADF);
  if (offset == ~0ull) return unsupported();  // no file position is kept
  std::int32_t res = 0;
  if (offset < s->file.size()) {
    const std::size_t taken = std::min<std::size_t>(length, s->file.size() - offset);
    std::memcpy(buffer, s->file.data() + offset, taken);
    res = static_cast<std::int32_t>(taken);
  }
  complete(user_data, res);
  return {};
}

// ---- listeners: accept(2) of the connections connect_client queued

core::result<void> sim_host::prep_accept(int listen_fd, std::uint64_t user_data, bool multishot,
                                         bool direct, io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  if (direct) return unsupported();  // no fixed-file table
  socket* s = find(listen_fd);
  if (s == nullptr || s->what != socket::kind::listener) return core::fail(EBADF);
  if (s->accept_user_data != 0) return core::fail(EBUSY);  // one accept per listener here
  if (s->shut) {
    complete(user_data, -EINVAL);  // accept(2) on a listener shut down
    return {};
  }
  s->accept_user_data = user_data;
  s->accept_multishot = multishot;
  if (!s->backlog.empty()) queue_accepts(listen_fd);
  return {};
}

int sim_host::add_listener() {
  auto s = std::make_unique<socket>();
  s->what = socket::kind::listener;
  return add_socket(std::move(s));
}

int sim_host::connect_client(int listen_fd, std::unique_ptr<stream_peer> peer,
                             const core::endpoint& remote) {
  socket* listener = find(listen_fd);
  if (listener == nullptr || listener->what != socket::kind::listener || listener->shut)
    return -1;
  const int fd = add_stream(std::move(peer), remote);
  listener = find(listen_fd);  // the table may have moved
  listener->backlog.push_back(fd);
  if (listener->accept_user_data != 0) queue_accepts(listen_fd);
  return fd;
}

// The waiting accept takes the backlog (a multishot one all of it, with F_MORE on each), in an
// action at the current time (never from inside a prep). With the seed's chance an accept
// fails EMFILE instead (the connection stays queued) and a multishot accept ends, as the
// kernel's does on an error.
void sim_host::queue_accepts(int listen_fd) {
  at(_clock.now_ns(), [this, listen_fd] {
    socket* s = find(listen_fd);
    while (s != nullptr && s->accept_user_data != 0 && !s->backlog.empty()) {
      const std::uint64_t user_data = s->accept_user_data;
      if (_accept_failure > 0 && _accept_random.chance(_accept_failure)) {
        s->accept_user_data = 0;
        ++_counters.accepts_failed;
        complete(user_data, -EMFILE);
        return;
      }
      const int fd = s->backlog.front();
      s->backlog.pop_front();
      if (find(fd) == nullptr) continue;  // closed by the test before it was accepted
      if (!s->accept_multishot) s->accept_user_data = 0;
      ++_counters.accepts;
      complete(user_data, fd, s->accept_multishot ? io::cqe_flag_more : 0);
    }
  });
}

core::result<void> sim_host::peer_name(int fd, sockaddr_storage& address,
                                       socklen_t& length) noexcept {
  socket* s = find(fd);
  if (s == nullptr || s->what != socket::kind::stream) return core::fail(EBADF);
  if (!s->connected) return core::fail(ENOTCONN);
  address = s->remote.address;
  length = s->remote.length;
  return {};
}

void sim_host::send_now(int fd, const void* data, std::size_t length) noexcept {
  socket* s = find(fd);
  if (s == nullptr || s->what != socket::kind::stream || !s->connected || s->shut) return;
  s->linger = true;
  send_stream(fd, *s, {static_cast<const char*>(data), length});
}

// ---- a file writer's descriptors (the spool's ring driver over a simulated disk)

core::result<void> sim_host::prep_writev(int fd, const iovec* pieces, unsigned piece_count,
                                         std::uint64_t offset, std::uint64_t user_data,
                                         io::sqe_flags flags) noexcept {
  return forward_file_op(file_op{false, fd, pieces, piece_count, offset, user_data,
                                 (flags & io::sqe::link) != 0},
                         flags);
}

core::result<void> sim_host::prep_fdatasync(int fd, std::uint64_t user_data,
                                            io::sqe_flags flags) noexcept {
  return forward_file_op(file_op{true, fd, nullptr, 0, 0, user_data, (flags & io::sqe::link) != 0},
                         flags);
}

core::result<void> sim_host::forward_file_op(const file_op& op, io::sqe_flags flags) noexcept {
  if (!_file_writer || find(op.fd) != nullptr) return unsupported();
  if ((flags & (io::sqe::hardlink | io::sqe::drain | io::sqe::skip_success)) != 0)
    return unsupported();
  _file_writer(op);
  return {};
}

core::result<void> sim_host::prep_close(int fd, std::uint64_t user_data,
                                        io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  if (find(fd) == nullptr) return core::fail(EBADF);
  close(fd);
  complete(user_data, 0, 0, flags);
  return {};
}

// Removes the ops `matches(fd, user_data)` names, each completing with -ECANCELED.
bool sim_host::cancel_matching(const std::function<bool(int, std::uint64_t)>& matches) {
  bool any = false;
  for (std::size_t index = 0; index < _sockets.size(); ++index) {
    socket* s = _sockets[index].get();
    const int fd = _first_fd + static_cast<int>(index);
    if (s == nullptr) continue;
    for (auto it = s->receives.begin(); it != s->receives.end();) {
      if (matches(fd, it->user_data)) {
        complete(it->user_data, -ECANCELED);
        it = s->receives.erase(it);
        any = true;
      } else {
        ++it;
      }
    }
    if (s->connect_user_data != 0 && matches(fd, s->connect_user_data)) {
      complete(s->connect_user_data, -ECANCELED);
      s->connect_user_data = 0;
      any = true;
    }
  }
  return any;
}

core::result<void> sim_host::prep_cancel(std::uint64_t target_user_data, std::uint64_t user_data,
                                         bool all, io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  bool first_only_done = false;
  const bool any = cancel_matching([&](int, std::uint64_t candidate) {
    if (candidate != target_user_data || first_only_done) return false;
    first_only_done = !all;
    return true;
  });
  complete(user_data, any ? 0 : -ENOENT, 0, flags);
  return {};
}

core::result<void> sim_host::prep_cancel_fd(int fd, std::uint64_t user_data,
                                            io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  const bool any = cancel_matching([fd](int candidate, std::uint64_t) { return candidate == fd; });
  complete(user_data, any ? 0 : -ENOENT, 0, flags);
  return {};
}

core::result<void> sim_host::prep_nop(std::uint64_t user_data, io::sqe_flags flags) noexcept {
  if (auto plain = refuse_linked(flags); !plain) return plain;
  complete(user_data, 0, 0, flags);
  return {};
}

// ---- not simulated: the caller sees a kernel without the op

core::result<void> sim_host::prep_sendmsg(int, const msghdr*, std::uint64_t, io::sqe_flags,
                                          int) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_send_zc(int, const void*, std::uint32_t, std::uint64_t, bool,
                                          io::sqe_flags, int) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_shutdown(int, int, std::uint64_t, io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_poll(int, std::uint32_t, std::uint64_t, bool,
                                       io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_write(int, const void*, std::uint32_t, std::uint64_t,
                                        std::uint64_t, io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_fsync(int, std::uint64_t, io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_openat(int, const char*, int, mode_t, std::uint64_t,
                                         io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_close_fixed(std::uint32_t, std::uint64_t,
                                              io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_splice(int, std::int64_t, int, std::int64_t, std::uint32_t,
                                         std::uint64_t, io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_timeout(std::uint64_t, std::uint64_t, unsigned,
                                          io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_timeout_multishot(std::uint64_t, unsigned, std::uint64_t,
                                                    io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_timeout_update(std::uint64_t, std::uint64_t, std::uint64_t,
                                                 io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_timeout_remove(std::uint64_t, std::uint64_t,
                                                 io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_link_timeout(std::uint64_t, std::uint64_t,
                                               io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_msg_ring(int, std::int32_t, std::uint64_t, std::uint64_t,
                                           io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_msg_ring_fd(int, std::uint32_t, std::uint32_t, std::uint64_t,
                                              std::uint64_t, io::sqe_flags) noexcept {
  return unsupported();
}
core::result<void> sim_host::prep_fixed_fd_install(std::uint32_t, std::uint64_t,
                                                   io::sqe_flags) noexcept {
  return unsupported();
}

// ---- io::descriptors

core::result<int> sim_host::open_socket(int family, int type) noexcept {
  const int base_type = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (base_type != SOCK_STREAM && base_type != SOCK_DGRAM) return core::fail(EPROTONOSUPPORT);
  auto s = std::make_unique<socket>();
  s->what = base_type == SOCK_STREAM ? socket::kind::stream : socket::kind::datagram;
  s->family = family;
  return add_socket(std::move(s));
}

core::result<void> sim_host::set_option(int fd, int, int, int) noexcept {
  if (find(fd) == nullptr) return core::fail(EBADF);
  return {};  // options change nothing in the simulated network
}

core::result<void> sim_host::bind(int fd, const sockaddr*, socklen_t) noexcept {
  if (find(fd) == nullptr) return core::fail(EBADF);
  return {};  // the source address is not modelled
}

core::result<void> sim_host::connect_datagram(int fd, const sockaddr* address,
                                              socklen_t address_length) noexcept {
  socket* s = find(fd);
  if (s == nullptr || s->what != socket::kind::datagram) return core::fail(EBADF);
  s->remote = core::endpoint::from_sockaddr(address, address_length);
  s->connected = true;
  return {};
}

void sim_host::shutdown(int fd, int) noexcept {
  socket* s = find(fd);
  if (s == nullptr || s->shut) return;
  s->shut = true;
  if (s->what == socket::kind::listener) return end_listener(*s);
  if (s->peer) {
    stream_peer* peer = s->peer.get();
    at(_clock.now_ns() + latency_ns(), [this, fd, peer] {
      socket* s = find(fd);
      if (s == nullptr || s->peer.get() != peer) return;
      s->peer->on_client_gone(*this, fd);
      s->peer.reset();
    });
  }
  satisfy_receives(*s);
}

void sim_host::close(int fd) noexcept {
  socket* found = find(fd);
  if (found == nullptr) return;
  socket& s = *found;
  // Closing a descriptor cancels what is pending on it (the kernel ends those ops).
  for (const waiting_receive& wanted : s.receives) complete(wanted.user_data, -ECANCELED);
  if (s.connect_user_data != 0) complete(s.connect_user_data, -ECANCELED);
  if (s.what == socket::kind::listener) end_listener(s);
  if (s.peer && s.linger && s.outbound.in_flight()) {
    // close(2) after send(2): the kernel still delivers what was sent, then the FIN.
    _lingering.emplace(fd, std::make_unique<lingering>(
                               lingering{std::move(s.peer), std::move(s.outbound)}));
  } else if (s.peer) {
    s.peer->on_client_gone(*this, fd);
  }
  const bool stream = s.what == socket::kind::stream;
  erase_socket(fd);
  if (stream && _close_listener) _close_listener(fd);
}

// Bytes sent before a close reach the peer (its answers go nowhere: the descriptor is gone);
// after the last of them, the peer hears the client gone.
void sim_host::linger_arrive(int fd, std::size_t length) {
  const auto found = _lingering.find(fd);
  if (found == _lingering.end()) return;
  lingering& l = *found->second;
  l.outbound.arrive(length);
  l.peer->on_bytes(*this, fd, l.outbound.segment());
  l.outbound.consume(length);
  if (l.outbound.in_flight()) return;
  std::unique_ptr<stream_peer> peer = std::move(l.peer);
  _lingering.erase(found);
  peer->on_client_gone(*this, fd);
}

// A listener shut down or closed: its accept ends (EINVAL, no F_MORE), and the connections
// never accepted are reset (their peers hear the client gone).
void sim_host::end_listener(socket& listener) {
  if (listener.accept_user_data != 0) complete(std::exchange(listener.accept_user_data, 0), -EINVAL);
  for (const int fd : std::exchange(listener.backlog, {})) close(fd);
}

core::result<std::size_t> sim_host::read_cached(int fd, void* buffer, std::size_t length,
                                                std::uint64_t offset) noexcept {
  if (_cache_miss > 0 && _cache_random.chance(_cache_miss)) return core::fail(EAGAIN);
  socket* s = find(fd);
  if (s == nullptr && _file_reader) {
    const std::int64_t got = _file_reader(fd, offset, buffer, static_cast<std::uint32_t>(length));
    if (got < 0) return core::fail(static_cast<int>(-got));
    return static_cast<std::size_t>(got);
  }
  if (s == nullptr || s->what != socket::kind::file) return core::fail(EBADF);
  if (offset >= s->file.size()) return std::size_t{0};
  const std::size_t taken = std::min<std::size_t>(length, s->file.size() - offset);
  std::memcpy(buffer, s->file.data() + offset, taken);
  return taken;
}

core::result<io::pipe_ends> sim_host::open_pipe(std::uint32_t) noexcept {
  ++_counters.unsupported_ops;
  return core::fail(EOPNOTSUPP);
}

int sim_host::add_stream(std::unique_ptr<stream_peer> peer, const core::endpoint& remote) {
  auto s = std::make_unique<socket>();
  s->what = socket::kind::stream;
  s->family = remote.family();
  s->remote = remote;
  s->connected = true;
  s->peer = std::move(peer);
  return add_socket(std::move(s));
}

int sim_host::add_file(std::string bytes) {
  auto s = std::make_unique<socket>();
  s->what = socket::kind::file;
  s->file = std::move(bytes);
  return add_socket(std::move(s));
}

}  // namespace ringmta::sim
