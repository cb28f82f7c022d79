// sim::sim_host: a shard::host, io::operations and io::descriptors on the simulator's clock and
// network (issue 16 item 1, step 3), so the REAL src/outbound (outbound::outbound over
// outbound::dns_client) runs inside a simulated world.
//
// The loop, as shard::shard::run turns: completions wait in a completion queue; a batch of
// them is dispatched (timers advanced to now first) and followed by one turn: timers, the
// iteration hooks, the buffer rings' recycles, and the next timer deadline scheduled. A
// network event that completes receives (bytes, end of stream, a datagram, a connect) reaps
// in its own action; completions posted by a prep_* wait for a reap action at the current
// time (never delivered from inside a prep_*: io/operations.h); a timer tick or wake() is a
// turn alone. An event that completes nothing (bytes reaching a peer) turns nothing: a shard
// sleeps through it.
//
// The simulated kernel:
//   - stream sockets connect to whatever network::connect returns for the address (a
//     stream_peer: a remote MTA) or fail with ECONNREFUSED; bytes take a seeded latency each
//     way and keep their order; the peer answers with peer_send/peer_close;
//   - datagram sockets (connect_datagram fixes the peer) hand each datagram to
//     network::datagram, whose replies come back after a latency each;
//   - receives (plain, or from a provided-buffer group: the group's io::buffer_ring is
//     initialised unregistered and its buffers taken as the kernel does, -ENOBUFS included)
//     complete when data or end of stream arrives; shutdown ends them with 0; a multishot
//     receive (from a group) completes with cqe_flag_more per segment until end of stream,
//     an error or -ENOBUFS ends it (that completion without the flag);
//   - listeners (add_listener): connect_client queues a connection, a (multishot) accept
//     takes it, EMFILE at a seeded rate; getpeername; a send that never waits;
//   - read from descriptors made by add_file (the test's spool segments);
//   - writev and fdatasync of a file writer's descriptors (a simulated disk: the spool's ring
//     driver), linked into chains as the driver submits them;
//   - cancel (by user_data, or every op of a descriptor), close, nop.
// A close drops the bytes still on their way to the peer (the peer hears the client gone at
// once: the remote MTAs count connections to the close, which the relay's limit is about),
// except after send_now, whose bytes arrive first, then the close (the kernel's behaviour
// for the acceptor's 421 at the session limit, sent and closed at once).
// Not simulated: the other ops (prep fails with EOPNOTSUPP, so glue that needs them sees a
// kernel without them), linked SQEs but the file writer's (EOPNOTSUPP: dns_client's TCP
// fallback is refused),
// pipes (open_pipe: EOPNOTSUPP; run outbound with body_transfer::copy), TLS peers.
// Lifetime: the scheduler may outlive the host (a simulated crash); actions the host queued
// do nothing once it is destroyed. Destroy the glue that uses the host before the host.
// Never: reads a clock, draws randomness but from its seed, or runs two actions at once.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ringmta/core/endpoint.h"
#include "ringmta/shard/host.h"
#include "sim_random.h"
#include "sim_scheduler.h"

namespace ringmta::sim {

class sim_host;

// The far end of one simulated stream connection (a remote MTA's session).
class stream_peer {
 public:
  virtual ~stream_peer() = default;
  // The connection is up: `fd` is the client's descriptor, to name in sim_host::peer_send.
  virtual void on_connected(sim_host& host, int fd) = 0;
  // `bytes` lives in the socket's buffer for the call only; answer with peer_send/peer_close.
  virtual void on_bytes(sim_host& host, int fd, std::string_view bytes) = 0;
  // The client shut the socket down or closed it; nothing more arrives.
  virtual void on_client_gone(sim_host& host, int fd) = 0;
};

struct sim_network {
  // A stream connect to `address`: its peer, or null for ECONNREFUSED.
  std::function<std::unique_ptr<stream_peer>(const core::endpoint& address)> connect;
  // A datagram to `address`: the datagrams sent back (none: lost).
  std::function<std::vector<std::string>(const core::endpoint& address, std::string_view bytes)>
      datagram;
};

struct sim_host_counters {
  std::uint64_t completions = 0;
  std::uint64_t stale_completions = 0;  // a kind with no handler
  std::uint64_t turns = 0;
  std::uint64_t timers_fired = 0;
  std::uint64_t connects = 0;
  std::uint64_t connects_refused = 0;
  std::uint64_t bytes_to_peers = 0;
  std::uint64_t bytes_from_peers = 0;
  std::uint64_t datagrams = 0;
  std::uint64_t enobufs = 0;
  std::uint64_t unsupported_ops = 0;  // preps refused with EOPNOTSUPP
  std::uint64_t accepts = 0;
  std::uint64_t accepts_failed = 0;  // EMFILE (set_accept_failures)
};

class sim_host final : public shard::host, public io::operations, public io::descriptors {
 public:
  // net_ns_max: the largest one-way latency (drawn per message from the seed's stream).
  sim_host(scheduler& clock, std::uint64_t seed, sim_network network, std::int64_t net_ns_max,
           std::int64_t epoch_ms);
  ~sim_host();
  sim_host(const sim_host&) = delete;
  sim_host& operator=(const sim_host&) = delete;

  // ---- shard::host
  core::result<io::op_kind> add_handler(shard::host_handler& handler) noexcept override;
  void add_iteration_hook(shard::host_hook& hook) noexcept override { _hooks.push_back(&hook); }
  core::result<void> register_buffer_ring(io::buffer_ring& buffers,
                                          const io::buffer_ring_options& options) noexcept override;
  core::timer_wheel& timers() noexcept override { return _timers; }
  io::operations& io() noexcept override { return *this; }
  io::descriptors& descriptors() noexcept override { return *this; }
  std::uint64_t now_ms() const noexcept override;
  std::int64_t wall_ms() const noexcept override;
  std::uint64_t precise_ns() const noexcept override;  // the simulated clock

  // ---- io::operations (see the header comment for what is simulated)
  core::result<void> prep_accept(int, std::uint64_t, bool, bool, io::sqe_flags) noexcept override;
  core::result<void> prep_connect(int fd, const sockaddr* address, socklen_t address_length,
                                  std::uint64_t user_data, io::sqe_flags flags) noexcept override;
  core::result<void> prep_recv(int fd, void* buffer, std::uint32_t length,
                               std::uint64_t user_data, io::sqe_flags flags) noexcept override;
  core::result<void> prep_recv_select(int fd, std::uint16_t group, std::uint64_t user_data,
                                      io::sqe_flags flags) noexcept override;
  core::result<void> prep_recv_multishot(int fd, std::uint16_t group, std::uint64_t user_data,
                                         io::sqe_flags flags) noexcept override;
  bool recv_multishot_supported() const noexcept override { return true; }
  core::result<void> prep_send(int fd, const void* data, std::uint32_t length,
                               std::uint64_t user_data, io::sqe_flags flags,
                               int msg_flags) noexcept override;
  core::result<void> prep_sendmsg(int, const msghdr*, std::uint64_t, io::sqe_flags,
                                  int) noexcept override;
  core::result<void> prep_send_zc(int, const void*, std::uint32_t, std::uint64_t, bool,
                                  io::sqe_flags, int) noexcept override;
  core::result<void> prep_shutdown(int, int, std::uint64_t, io::sqe_flags) noexcept override;
  core::result<void> prep_poll(int, std::uint32_t, std::uint64_t, bool,
                               io::sqe_flags) noexcept override;
  core::result<void> prep_read(int fd, void* buffer, std::uint32_t length, std::uint64_t offset,
                               std::uint64_t user_data, io::sqe_flags flags) noexcept override;
  core::result<void> prep_write(int, const void*, std::uint32_t, std::uint64_t, std::uint64_t,
                                io::sqe_flags) noexcept override;
  core::result<void> prep_writev(int, const iovec*, unsigned, std::uint64_t, std::uint64_t,
                                 io::sqe_flags) noexcept override;
  core::result<void> prep_fsync(int, std::uint64_t, io::sqe_flags) noexcept override;
  core::result<void> prep_fdatasync(int, std::uint64_t, io::sqe_flags) noexcept override;
  core::result<void> prep_openat(int, const char*, int, mode_t, std::uint64_t,
                                 io::sqe_flags) noexcept override;
  core::result<void> prep_close(int fd, std::uint64_t user_data,
                                io::sqe_flags flags) noexcept override;
  core::result<void> prep_close_fixed(std::uint32_t, std::uint64_t,
                                      io::sqe_flags) noexcept override;
  core::result<void> prep_splice(int, std::int64_t, int, std::int64_t, std::uint32_t,
                                 std::uint64_t, io::sqe_flags) noexcept override;
  core::result<void> prep_timeout(std::uint64_t, std::uint64_t, unsigned,
                                  io::sqe_flags) noexcept override;
  core::result<void> prep_timeout_multishot(std::uint64_t, unsigned, std::uint64_t,
                                            io::sqe_flags) noexcept override;
  core::result<void> prep_timeout_update(std::uint64_t, std::uint64_t, std::uint64_t,
                                         io::sqe_flags) noexcept override;
  core::result<void> prep_timeout_remove(std::uint64_t, std::uint64_t,
                                         io::sqe_flags) noexcept override;
  core::result<void> prep_link_timeout(std::uint64_t, std::uint64_t,
                                       io::sqe_flags) noexcept override;
  core::result<void> prep_cancel(std::uint64_t target_user_data, std::uint64_t user_data,
                                 bool all, io::sqe_flags flags) noexcept override;
  core::result<void> prep_cancel_fd(int fd, std::uint64_t user_data,
                                    io::sqe_flags flags) noexcept override;
  core::result<void> prep_nop(std::uint64_t user_data, io::sqe_flags flags) noexcept override;
  core::result<void> prep_msg_ring(int, std::int32_t, std::uint64_t, std::uint64_t,
                                   io::sqe_flags) noexcept override;
  core::result<void> prep_msg_ring_fd(int, std::uint32_t, std::uint32_t, std::uint64_t,
                                      std::uint64_t, io::sqe_flags) noexcept override;
  core::result<void> prep_fixed_fd_install(std::uint32_t, std::uint64_t,
                                           io::sqe_flags) noexcept override;
  core::result<void> reserve(unsigned) noexcept override { return {}; }

  // ---- io::descriptors
  core::result<int> open_socket(int family, int type) noexcept override;
  core::result<void> set_option(int fd, int level, int name, int value) noexcept override;
  core::result<void> bind(int fd, const sockaddr* address,
                          socklen_t address_length) noexcept override;
  core::result<void> connect_datagram(int fd, const sockaddr* address,
                                      socklen_t address_length) noexcept override;
  void shutdown(int fd, int how) noexcept override;
  void close(int fd) noexcept override;
  core::result<io::pipe_ends> open_pipe(std::uint32_t bytes) noexcept override;
  // A simulated file is "in the page cache" (the bytes at once) but for a seeded share of
  // calls (set_cache_misses): EAGAIN, as preadv2 RWF_NOWAIT says when it would wait, so the
  // caller's ring read runs (the outbound's staged fallback).
  core::result<std::size_t> read_cached(int fd, void* buffer, std::size_t length,
                                        std::uint64_t offset) noexcept override;
  void set_cache_misses(double chance, std::uint64_t seed) {
    _cache_miss = chance;
    _cache_random = random(seed);
  }
  core::result<void> peer_name(int fd, sockaddr_storage& address,
                               socklen_t& length) noexcept override;
  void send_now(int fd, const void* data, std::size_t length) noexcept override;

  // ---- the test's side
  // A read-only descriptor over `bytes` (a spool segment file).
  int add_file(std::string bytes);
  // Reads of descriptors the host did not make (a simulated disk's spool segments: disk::read):
  // bytes at [offset, offset + length) into `into`; the count read, or -errno.
  using file_reader =
      std::function<std::int64_t(int fd, std::uint64_t offset, void* into, std::uint32_t length)>;
  void set_file_reader(file_reader reader) { _file_reader = std::move(reader); }
  // Writes and datasyncs of descriptors the host did not make (a simulated disk's spool files:
  // the real server::spool_ring_driver's ring ops) go to a file writer, which completes each
  // one later with complete_file_op. `linked` is IOSQE_IO_LINK: the writer keeps the chain's
  // order and cancels the rest of it after a failure (spool/operation.h).
  struct file_op {
    bool datasync = false;  // else a write of `pieces` at `offset`
    int fd = -1;
    const iovec* pieces = nullptr;
    unsigned piece_count = 0;
    std::uint64_t offset = 0;
    std::uint64_t user_data = 0;
    bool linked = false;
  };
  using file_writer = std::function<void(const file_op& op)>;
  void set_file_writer(file_writer writer) { _file_writer = std::move(writer); }
  // A file writer's result: a completion of the op's user_data, reaped as any other.
  void complete_file_op(std::uint64_t user_data, std::int32_t result) {
    complete(user_data, result);
  }
  // From the peer of stream socket `fd`: bytes (in order, after a latency), then end of stream.
  void peer_send(int fd, std::string_view bytes);
  void peer_close(int fd);
  // A connected stream socket whose far end is `peer` at `remote`: what accept(2) returns for
  // a simulated client (inbound sessions). The peer talks with peer_send/peer_close and hears
  // the descriptor's sends in on_bytes; on_connected is not called (the caller has the fd).
  int add_stream(std::unique_ptr<stream_peer> peer, const core::endpoint& remote);
  // A listening socket (what the daemon's open_listeners makes): its accepts take the
  // connections connect_client queues, in order.
  int add_listener();
  // A client connecting to `listen_fd`: the connection's descriptor (already connected, its
  // peer talking as add_stream's), queued until an accept takes it; -1 when the listener is
  // gone or shut down (refused).
  int connect_client(int listen_fd, std::unique_ptr<stream_peer> peer,
                     const core::endpoint& remote);
  // Accepts fail EMFILE with this chance (the connection stays queued; a multishot accept
  // ends), on a stream of their own.
  void set_accept_failures(double chance, std::uint64_t seed) {
    _accept_failure = chance;
    _accept_random = random(seed);
  }
  // Called with each stream descriptor the glue closes (close(2) or a completed prep_close),
  // after its pending ops were ended: the test learns that a session is over even when its
  // peer had closed first (then on_client_gone is not called: the peer is gone).
  void set_close_listener(std::function<void(int fd)> listener) {
    _close_listener = std::move(listener);
  }
  // A loop turn as the next action at the current time: call it after using the glue's API
  // from outside the host's callbacks (their deferred work runs in a turn, as on a shard).
  void wake();
  // One loop turn now (after API calls made from outside a callback), then actions until
  // `done()` holds or `actions_max` ran; false when the bound stopped it.
  bool run(const std::function<bool()>& done, std::uint64_t actions_max);
  const sim_host_counters& counters() const noexcept { return _counters; }
  // Descriptors not closed yet (files excluded): a leak check at the end of a run.
  std::size_t open_sockets() const noexcept;

 private:
  struct socket;
  class byte_lane;
  struct waiting_receive {
    std::uint64_t user_data = 0;
    void* buffer = nullptr;  // plain receive
    std::uint32_t length = 0;
    io::buffer_ring* group = nullptr;  // provided-buffer receive
    bool multishot = false;            // stays until end of stream, an error or -ENOBUFS
  };

  // Every action the host queues checks that the host still exists: the world's scheduler
  // outlives a simulated process (a crash destroys its host with actions still queued). One
  // wrapping lambda, and a non-atomic count instead of a shared_ptr copy per event (issue 16).
  template <class F>
  void at(std::int64_t when_ns, F&& what) {
    _clock.at(when_ns, [alive = liveness_ref(_liveness), what = std::forward<F>(what)]() mutable {
      if (alive.host_alive()) what();
    });
  }
  socket* find(int fd) noexcept;
  int add_socket(std::unique_ptr<socket> s);
  void erase_socket(int fd) noexcept;
  std::int64_t latency_ns() noexcept;
  // Posts the completion (skip_success honoured); a reap at the current time dispatches it.
  void complete(std::uint64_t user_data, std::int32_t res, std::uint32_t flags = 0,
                io::sqe_flags sqe_flags = io::sqe::none);
  // Dispatches the completions posted so far, then turns the loop (nothing posted: nothing).
  void reap() noexcept;
  void dispatch(const io::completion& done) noexcept;
  void turn() noexcept;
  void arm_timer_wake() noexcept;
  // Hands waiting receives what has arrived (data, end of stream) on `fd`.
  void satisfy_receives(socket& s);
  std::int32_t fill(const waiting_receive& wanted, byte_lane& inbound, bool datagram,
                    std::uint32_t& flags);
  void send_datagram(int fd, socket& s, std::string_view bytes);
  void send_stream(int fd, socket& s, std::string_view bytes);
  bool cancel_matching(const std::function<bool(int, std::uint64_t)>& matches);
  io::buffer_ring* group(std::uint16_t id) const noexcept;
  core::result<void> unsupported() noexcept;
  core::result<void> refuse_linked(io::sqe_flags flags) noexcept;
  core::result<void> queue_receive(int fd, waiting_receive wanted, io::sqe_flags flags) noexcept;
  core::result<void> forward_file_op(const file_op& op, io::sqe_flags flags) noexcept;
  void queue_accepts(int listen_fd);
  void end_listener(socket& listener);
  void linger_arrive(int fd, std::size_t length);

  // Shared by the host and its queued actions (one thread: a plain count); the last of them
  // frees it.
  struct liveness {
    bool alive = true;
    std::uint32_t holders = 0;
  };
  class liveness_ref {
   public:
    explicit liveness_ref(liveness* shared) noexcept : _shared(shared) { ++_shared->holders; }
    liveness_ref(liveness_ref&& other) noexcept : _shared(std::exchange(other._shared, nullptr)) {}
    liveness_ref(const liveness_ref&) = delete;
    liveness_ref& operator=(const liveness_ref&) = delete;
    liveness_ref& operator=(liveness_ref&&) = delete;
    ~liveness_ref() {
      if (_shared != nullptr && --_shared->holders == 0 && !_shared->alive) delete _shared;
    }
    bool host_alive() const noexcept { return _shared->alive; }

   private:
    liveness* _shared;
  };

  scheduler& _clock;
  liveness* _liveness = new liveness;  // alive = false once destroyed
  random _random;
  sim_network _network;
  std::int64_t _net_ns_max;
  std::int64_t _epoch_ms;
  std::uint64_t _start_ms = 1'000'000;  // the monotonic clock does not start at 0
  core::timer_wheel _timers;
  std::int64_t _timer_wake_ns = -1;  // a tick action is scheduled for this time
  bool _wake_queued = false;         // wake(): a turn is queued at the current time
  std::vector<io::completion> _ready;    // the completion queue: posted, not dispatched
  std::vector<io::completion> _reaping;  // the batch being dispatched (capacity reused)
  bool _reap_queued = false;             // a reap action is queued at the current time
  shard::host_handler* _handlers[256] = {};
  unsigned _next_kind = io::op_kind_first_free;
  std::vector<shard::host_hook*> _hooks;
  // Provided-buffer groups by id: one or two per host, searched in a line (walked at every
  // turn to flush, looked up at every receive queued).
  std::vector<std::pair<std::uint16_t, io::buffer_ring*>> _groups;
  // Descriptors are allocated in increasing order and never reused, so the table is indexed
  // by fd - _first_fd; closed slots at the front are dropped in blocks, once they are half
  // the table (issue 16: a std::map lookup ~15 times per delivery cost more than the
  // delivery; a deque's indexing was still ~700 instructions per relayed message).
  std::vector<std::unique_ptr<socket>> _sockets;
  std::size_t _closed_front = 0;  // _sockets[0, _closed_front) are closed
  std::function<void(int fd)> _close_listener;
  file_reader _file_reader;
  file_writer _file_writer;
  // Closed stream descriptors whose sent bytes are still on their way to the peer.
  struct lingering;
  std::map<int, std::unique_ptr<lingering>> _lingering;
  double _cache_miss = 0;
  random _cache_random{1};  // its own stream: misses change no other draw
  double _accept_failure = 0;
  random _accept_random{1};  // its own stream too
  // Above any real descriptor (RLIMIT_NOFILE's hard limit is 2^20 here): the spool files are
  // real descriptors of the simulated disks, read through set_file_reader, and must never be
  // taken for the host's own (they were 100 and up, and a search's leaked descriptors reached
  // them: docs/notes.md, s10-simworld).
  static constexpr int first_fd = 1 << 22;
  int _first_fd = first_fd;
  int _next_fd = first_fd;
  sim_host_counters _counters;
};

}  // namespace ringmta::sim
