// outbound::dns_client: the pure DNS resolver (dns/resolver.h) driven on one shard's ring.
//
// One per shard, created and used on that shard's thread. UDP: one connected socket per
// configured server (the kernel then only hands us datagrams from that server, RFC 5452 §9),
// one receive armed per socket into a fixed buffer. TCP (answers with TC set): one connection
// per exchange, connect linked to the send of the length-framed query, then receives into a
// fixed buffer until the resolver says close. Deadlines: one timer on the shard's timer wheel,
// always set to the resolver's next deadline. Lookups are started by the embedder with a
// handler and a cookie; the handler gets the mx_result (moved out, the handler may keep it).
//
// Bounded: the resolver bounds lookups, questions and cache; here at most tcp_exchanges_max TCP
// connections and one datagram in flight per question the resolver may have on the wire
// (queries_in_flight_max: a send never waits for a slot). An ICMP "port unreachable" (ECONNREFUSED on the
// socket) fails the last few exchanges sent to that server at once instead of waiting for
// their timeouts.
//
// Never: blocks, calls a handler from inside start_*_lookup() or cancel() (results, even
// immediate ones such as an address literal or a cached answer, arrive from a completion, a
// timer or the end of the loop iteration), or calls a handler of a cancelled lookup.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/dns/resolver.h"
#include "ringmta/io/slot_table.h"
#include "ringmta/shard/runtime.h"

namespace ringmta::outbound {

struct dns_client_config {
  dns::resolver_config resolver;  // servers from dns::load_resolv_conf or --resolver ADDR:PORT
  std::uint32_t tcp_exchanges_max = 16;
  std::uint32_t receive_buffer_bytes = 4096;  // > the EDNS0 payload size (1232)
  // Query ids and MX shuffles (RFC 5452 §9.2: the id is the secret). Empty: the kernel's
  // CSPRNG. Only a simulation sets it (a seeded source makes a run's packets replayable).
  dns::random_source random;
};

class lookup_handler {
 public:
  virtual void on_lookup_done(std::uint64_t cookie, dns::mx_result& result) noexcept = 0;

 protected:
  ~lookup_handler() = default;
};

struct dns_client_counters {
  std::uint64_t udp_receive_errors = 0;
  std::uint64_t udp_send_errors = 0;
  std::uint64_t udp_sends_refused = 0;  // server socket unusable (or no slot): failed at once
  std::uint64_t tcp_connections = 0;
  std::uint64_t tcp_refused = 0;        // no free TCP slot
  std::uint64_t port_unreachable = 0;   // ECONNREFUSED seen on a UDP socket
};

class dns_client final : public shard::host_handler, public shard::host_hook {
 public:
  // `config.resolver` must pass validate() (asserted): validate at start-up. Throws only on
  // allocation failure (start-up).
  // `owner`: the shard (or the simulator's host) whose loop runs this object.
  dns_client(shard::host& owner, dns_client_config config);
  ~dns_client();
  dns_client(const dns_client&) = delete;
  dns_client& operator=(const dns_client&) = delete;

  // Registers the op kinds and the iteration hook, opens and connects the UDP sockets, arms
  // their receives. On this shard's thread, once. A server whose socket cannot be connected
  // is skipped (its queries fail over to the others); errno when no server is usable.
  core::result<void> start() noexcept;
  // Closes every socket and cancels the timer; pending lookups get no result. On this shard's
  // thread (runtime on_stop); destroy the object once the shard's thread has exited (join).
  void stop() noexcept;

  // RFC 5321 §5.1 route of `domain` (or address literal); see dns::resolver. Returns the
  // lookup id (for cancel). The handler must stay valid until it is called or cancelled.
  std::uint64_t start_mx_lookup(std::string_view domain, lookup_handler& handler,
                                std::uint64_t cookie) noexcept;
  // A/AAAA of one host (a smarthost name): one host of preference 0 in the result.
  std::uint64_t start_host_lookup(std::string_view host, lookup_handler& handler,
                                  std::uint64_t cookie) noexcept;
  void cancel(std::uint64_t lookup) noexcept;

  const dns::resolver& resolver() const noexcept { return _resolver; }
  const dns_client_counters& counters() const noexcept { return _counters; }
  std::size_t lookups_waiting() const noexcept { return _waiters.size(); }

  // shard::host_handler, shard::host_hook
  void on_completion(const io::completion& done) noexcept override;
  void before_wait() noexcept override;

 private:
  struct udp_socket;
  struct udp_send;
  struct tcp_exchange;
  struct waiter {
    lookup_handler* handler = nullptr;
    std::uint64_t cookie = 0;
  };

  // The owner's loop clock (issue 16: never read here).
  std::uint64_t now_ms() const noexcept { return _owner.now_ms(); }
  void actions_waiting() noexcept;
  void drain() noexcept;
  void handle(dns::action& next) noexcept;
  void send_udp(dns::action& next) noexcept;
  void send_tcp(dns::action& next) noexcept;
  void close_tcp(std::uint64_t exchange) noexcept;
  std::uint8_t* tcp_query_bytes(std::uint32_t slot) noexcept;
  std::uint8_t* tcp_receive_bytes(std::uint32_t slot) noexcept;
  void arm_udp_receive(std::uint32_t server) noexcept;
  void on_udp_received(std::uint32_t server, const io::completion& done) noexcept;
  void on_udp_sent(const io::completion& done) noexcept;
  void on_tcp_completion(const io::completion& done) noexcept;
  void arm_tcp_receive(tcp_exchange& exchange, std::uint32_t slot) noexcept;
  void end_tcp(tcp_exchange& exchange, std::uint32_t slot, bool tell_resolver) noexcept;
  void close_tcp_when_idle(tcp_exchange& exchange, std::uint32_t slot) noexcept;
  std::uint64_t tcp_user_data(io::op_kind kind, std::uint32_t slot) const noexcept;
  void reschedule() noexcept;
  void on_deadline() noexcept;

  shard::host& _owner;
  io::operations& _io;  // _owner.io(): every op goes through it
  dns_client_config _config;
  dns::resolver _resolver;
  std::vector<udp_socket> _udp;  // one per server
  io::slot_table<udp_send> _sends;
  io::slot_table<tcp_exchange> _tcp;
  // Not zero-filled: each query is copied in before it is sent, each answer received before
  // it is read (issue 16: zeroing them was 1% of a crash-heavy simulation, 2 x ~100 KiB a start).
  std::unique_ptr<std::uint8_t[]> _send_bytes;  // queries_in_flight_max x query_bytes_max
  std::unique_ptr<std::uint8_t[]> _tcp_bytes;   // per TCP slot: the framed query, receive room
  std::unordered_map<std::uint64_t, waiter> _waiters;  // resolver lookup id -> who waits
  core::member_timer<dns_client, &dns_client::on_deadline> _timer{*this};
  io::op_kind _udp_recv_kind = io::op_kind_invalid;
  io::op_kind _udp_send_kind = io::op_kind_invalid;
  io::op_kind _tcp_connect_kind = io::op_kind_invalid;
  io::op_kind _tcp_send_kind = io::op_kind_invalid;
  io::op_kind _tcp_recv_kind = io::op_kind_invalid;
  io::op_kind _tcp_close_kind = io::op_kind_invalid;
  io::op_kind _misc_kind = io::op_kind_invalid;
  bool _draining = false;
  bool _actions_waiting = false;  // a start_* queued actions: drain at the end of the iteration
  bool _stopped = false;
  dns_client_counters _counters;
};

}  // namespace ringmta::outbound
