// outbound::outbound: one shard's SMTP client connections, delivering spooled messages for the
// destinations this shard owns (docs/design.md: connection pool per destination).
//
// The embedder (the queue) drives it:
//   h = open_connection(destination, route)   route: MX of a domain, or one host (smarthost)
//   on_ready(h)                    -> deliver(h, delivery) or release(h)
//   on_recipient_result(h, ...)    one per recipient, in order
//   on_delivery_done(h, ...)       then on_ready(h) again (connection reuse) or on_closed
//   on_closed(h, close_result)     exactly once per connection
// A connection resolves its route (outbound::dns_client), then tries the addresses in order
// (outbound/attempt_plan.h: MX preference, at most addresses_max, next address on refusal,
// timeout, 4xx/5xx greeting, refused EHLO, broken session; RFC 5321 §5.1, §4.5.4.1) until one
// gives a ready SMTP session (smtp::client_session). A connection that never became ready ends
// with close_reason::destination_failed and the destination's failure (transient/permanent,
// with a reply: 4.4.1 all refused, 5.1.10 null MX, 5.1.2 NXDOMAIN, 4.4.3 DNS failure, ...).
// A ready connection stays open for idle_timeout_ms (then QUIT); the embedder decides how many
// messages it sends over one connection.
//
// Per connection one receive (provided buffers: an idle connection holds none), one send or
// body transfer step (over TLS: one send, and one spool read beside it), and one timer
// (connect, RFC 5321 §4.5.3.2 reply timeouts, data block, idle) at a time. Commands are copied out of the engine into the connection's staging buffer when
// handed to the kernel (client_session's consume_output rule); TCP_NODELAY is set, since the
// engine batches commands itself and the final "." must not wait for a delayed ACK.
// The body goes from the spool's segment file to the socket without passing through user
// space: IORING_OP_SPLICE file -> pipe, then pipe -> socket, a pipe per active transfer from a
// per-shard pool. Bodies up to copy_body_bytes_max are read into the staging buffer and
// sent with the ".CRLF" in one send instead (bench/outbound/README.md: splice pays an io-wq
// hop per op, which dominates for small bodies). The body is never re-stuffed.
//
// TLS (RFC 3207, outbound/tls.cc): a route's tls_policy decides what the connection demands.
// On the server's 220 to STARTTLS the connection runs a tls::session (memory BIOs, the ring
// moving ciphertext; the handshake is CPU work on the shard), with SNI and the RFC 6125 name
// check against the MX host name (or the route's host, e.g. a smarthost; address literals get
// no SNI and are checked against the certificate's IP addresses). Anything the server sent
// after that 220 and before the handshake is discarded (response injection), and EHLO is said
// again. A shard keeps resumable sessions per server (tls_cache_entries, keyed by host name,
// port and whether the chain was verified). Under `opportunistic` a failed handshake is
// retried once in plaintext on the same address, and the address is remembered for
// tls_plaintext_memory_ms so that the next connections go plaintext at once; under `required`
// and `verify` it is that address's failure (4.7.x), the next address is tried, and no byte of
// mail is ever sent in plaintext. Splice cannot carry TLS (no kTLS here): over TLS a large
// body is read from the spool into a pooled buffer (preadv2 RWF_NOWAIT from the page cache,
// else a ring read), encrypted in records and sent, the next read overlapping the send.
//
// Memory: a connection slot allocates its session and staging buffer on first use, a route
// lookup its candidate list; a delivery over a ready connection allocates nothing
// (tests/integration/outbound/outbound_alloc_test.cc).
// Never: blocks, calls a handler from inside an API call (results of work started by an API
// call arrive from completions, timers or the end of the loop iteration), holds a receive
// buffer across loop iterations, or has more than connections_max connections.
// Threads: one per shard, created and used on that shard's thread only.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ringmta/core/endpoint.h"
#include "ringmta/core/result.h"
#include "ringmta/outbound/attempt_plan.h"
#include "ringmta/outbound/delivery.h"
#include "ringmta/outbound/dns_client.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/tls/context.h"
#include "ringmta/tls/session.h"

namespace ringmta::outbound {

enum class body_transfer : std::uint8_t {
  splice,  // file -> pipe -> socket through the ring (no user-space copy)
  copy,    // read into a pooled buffer, then send (the comparison; filesystems without splice)
};

struct outbound_config {
  std::string helo_name = "localhost";
  bool pipelining = true;  // RFC 2920, when the server offers it
  // RFC 3030: bodies read whole into memory (copy_body_bytes_max) go as one BDAT chunk when
  // the server offers CHUNKING: commands and body in one send, no wait for 354.
  bool chunking = true;
  std::uint32_t connections_max = 1024;
  std::uint32_t addresses_max = 10;  // addresses tried per connection (RFC 5321 §4.5.4.1)
  // Where we accept mail (address:port, wildcards expanded): an MX host there, or named
  // helo_name, is ourselves (attempt_plan.h).
  std::vector<core::endpoint> self_endpoints;
  bool ipv4 = true;
  bool ipv6 = true;
  std::optional<core::endpoint> source_ipv4;  // bind() before connect (port 0 = any)
  std::optional<core::endpoint> source_ipv6;

  // RFC 5321 §4.5.3.2 client timeouts; every one is a transient failure.
  std::uint32_t timeout_connect_ms = 30'000;
  std::uint32_t timeout_greeting_ms = 300'000;    // §4.5.3.2.1
  std::uint32_t timeout_hello_ms = 300'000;       // EHLO/HELO: like MAIL
  std::uint32_t timeout_mail_ms = 300'000;        // §4.5.3.2.2 (and RSET)
  std::uint32_t timeout_rcpt_ms = 300'000;        // §4.5.3.2.3
  std::uint32_t timeout_data_init_ms = 120'000;   // §4.5.3.2.4
  std::uint32_t timeout_data_block_ms = 180'000;  // §4.5.3.2.5: per body chunk moved
  std::uint32_t timeout_data_end_ms = 600'000;    // §4.5.3.2.6
  std::uint32_t timeout_quit_ms = 30'000;         // the reply to QUIT; flushing the last QUIT
  std::uint32_t idle_timeout_ms = 3'000;          // ready and unused: QUIT (connection reuse)

  body_transfer transfer = body_transfer::splice;
  std::uint32_t copy_body_bytes_max = 64 * 1024;  // smaller bodies: one read, one send
  std::uint32_t transfers_max = 64;               // large bodies moving at once (pipes)
  std::uint32_t pipe_bytes = 256 * 1024;          // F_SETPIPE_SZ (the kernel may give less)
  std::uint32_t copy_chunk_bytes = 256 * 1024;    // body_transfer::copy buffer per transfer

  // TLS. The client context holds the CA store (loaded once at start-up, never from disk per
  // connection); null: no TLS at all (opportunistic then stays plaintext, required and verify
  // fail their servers).
  std::shared_ptr<const tls::client_context> tls_context;
  std::uint32_t tls_cache_entries = 1024;            // resumable sessions per shard
  std::uint32_t tls_plaintext_memory_ms = 3'600'000;  // opportunistic: a failed handshake's
  std::uint32_t tls_plaintext_memory_entries = 4096;  // address goes plaintext this long

  std::uint16_t buffer_group = 2;  // provided buffer group id on the shard's ring (inbound: 1)
  std::uint32_t receive_buffer_count = 256;  // power of two
  std::uint32_t receive_buffer_bytes = 4096;
};

struct outbound_counters {
  std::uint64_t connections_opened = 0;
  std::uint64_t connections_closed = 0;
  std::uint64_t destination_failures = 0;   // closed before ever being ready
  std::uint64_t connect_attempts = 0;       // addresses tried
  std::uint64_t connect_failures = 0;       // refused, unreachable, timed out
  std::uint64_t sessions_ready = 0;         // greeting and EHLO/HELO done
  std::uint64_t deliveries = 0;             // deliver() calls accepted
  std::uint64_t deliveries_accepted = 0;
  std::uint64_t deliveries_failed = 0;
  std::uint64_t recipients_accepted = 0;
  std::uint64_t recipients_transient = 0;
  std::uint64_t recipients_permanent = 0;
  std::uint64_t body_bytes = 0;             // wire-form bytes handed to the kernel
  std::uint64_t bodies_staged = 0;          // small: read + one send
  std::uint64_t bodies_chunked = 0;         // small, CHUNKING: BDAT with the commands' send
  std::uint64_t bodies_spliced = 0;
  std::uint64_t bodies_copied = 0;          // body_transfer::copy
  std::uint64_t splices = 0;               // splice ops (file -> pipe, pipe -> socket)
  std::uint64_t transfer_waits = 0;         // a large body waited for a free pipe/buffer
  std::uint64_t timeouts = 0;
  std::uint64_t receive_enobufs = 0;
  // TLS
  std::uint64_t tls_handshakes = 0;           // completed
  std::uint64_t tls_resumed = 0;              // of which abbreviated (session cache)
  std::uint64_t tls_verified = 0;             // of which the chain and host name verified
  std::array<std::uint64_t, static_cast<std::size_t>(tls::failure::count_)> tls_failures{};
  std::uint64_t tls_timeouts = 0;             // handshakes that did not finish in time
  std::uint64_t tls_unavailable = 0;          // required/verify: STARTTLS not offered/refused
  std::uint64_t tls_plaintext_retries = 0;    // opportunistic: handshake failed, retried plain
  std::uint64_t tls_plaintext_remembered = 0;  // opportunistic: plaintext at once (memory)
  std::uint64_t tls_injections = 0;           // plaintext after STARTTLS's 220 (discarded)
  std::uint64_t auth_failures = 0;            // relayhost AUTH refused or not possible
  std::uint64_t bodies_encrypted = 0;         // large bodies read and encrypted (not spliced)
};

class outbound_server;

class outbound {
 public:
  // `dns` must outlive this object. helo_name is copied.
  // `owner`: the shard (or the simulator's host) whose loop runs this object.
  outbound(shard::host& owner, dns_client& dns, delivery_handler& handler,
           const outbound_config& config);
  ~outbound();
  outbound(const outbound&) = delete;
  outbound& operator=(const outbound&) = delete;

  // Registers op kinds, the receive buffer ring and the iteration hook. Once, on this shard.
  core::result<void> start() noexcept;

  // Starts a connection for `destination` (the embedder's cookie, handed back with every
  // callback). EAGAIN at connections_max, EINVAL for an empty name.
  core::result<connection_handle> open_connection(std::uint64_t destination,
                                                  const route& where) noexcept;
  // Sends one delivery over a connection that reported on_ready and got nothing since.
  // EINVAL: stale handle or a body slice without fd; EBUSY: not ready.
  core::result<void> deliver(connection_handle connection, const delivery& job) noexcept;
  // Whether deliver() would take a job now. An idle connection stops being usable when its
  // idle lifetime ends (it is quitting) or the server went away; on_closed follows.
  bool can_deliver(connection_handle connection) noexcept;
  // Whether the server of a connection that reported on_ready offered 8BITMIME (RFC 6152);
  // false for a stale handle. An 8-bit message to one that did not is downgraded first.
  bool offers_8bitmime(connection_handle connection) noexcept;
  // The host names of the route's addresses (MX hosts, in preference order, repeated per
  // address) once a connection resolved them; empty before, or for a stale handle. Valid
  // until the next outbound call.
  std::span<const candidate> route_candidates(connection_handle connection) noexcept;
  // QUIT now when ready, after the current delivery otherwise; before ready: abandon the
  // attempt. on_closed follows (reason released). Stale handles are ignored.
  void release(connection_handle connection) noexcept;
  // Every connection: QUIT when ready, after its delivery when busy; attempts not yet ready
  // are abandoned (reason shutdown). New connections are refused (ESHUTDOWN).
  void begin_shutdown() noexcept;
  bool drained() const noexcept;
  // Hard stop on the shard's thread (runtime on_stop): sockets shut, timers cancelled, no
  // more callbacks. Destroy the object after the shard's thread has exited (join) and before
  // the runtime: its receive buffer ring is registered on the shard's ring.
  void stop() noexcept;

  // A reload: connects started from now wait this long (the other settings are fixed).
  void set_timeout_connect_ms(std::uint32_t ms) noexcept;
  // A reload's TLS client context (its CA store; null: outbound TLS off), for connections
  // opened from now on. The session cache empties: a session verified under the old trust
  // must not resume, unchecked, into a connection that verifies under the new one.
  void set_tls_context(std::shared_ptr<const tls::client_context> context) noexcept;

  std::uint32_t connections() const noexcept;
  const outbound_counters& counters() const noexcept;

 private:
  std::unique_ptr<outbound_server> _server;
};

}  // namespace ringmta::outbound
