// server::inbound: one shard's SMTP front door. Listening sockets (SO_REUSEPORT, one per listener
// per shard), multishot accept, connections that run smtp::server_session over the ring, and
// the path from end-of-data to the spool and back to the 250. The connections are
// server::inbound_sessions (inbound_sessions.h) on the shard as a shard::host, which the
// simulator runs on its own host too; only the listeners and accept here need the real shard.
//
// Per connection, the flow is one receive, one feed, one send at a time:
//   recv (provided buffer) → session.feed() → replies → send → recv again.
// A receive is not re-armed while input is held (a pending verdict, a full output buffer, a
// send in flight), so a client that pipelines faster than we answer is slowed down by TCP flow
// control, not by our memory. An idle connection holds no receive buffer (provided buffers).
// The reply to end-of-data is held until the spool reports the message durable (DESIGN
// principle 4); a spool write error becomes 452 4.3.1.
//
// Limits: sessions per shard (421 4.7.0 at the greeting), sessions per client address across
// all shards (421 4.7.0), command and data-block timeouts (421 4.4.2), early talkers (554
// 5.5.0), and everything the protocol engine bounds. Shutdown stops accepting, lets sessions
// finish for a grace period, then answers 421 4.3.2 to the rest.
// Never: a 250 before fdatasync completed (unless the operator set unsafe_no_fsync), a blocking
// syscall on the data path, a pointer into a recycled receive buffer.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <memory>
#include <string>
#include <vector>

#include "ringmta/admin/log.h"
#include "ringmta/admin/metrics.h"
#include "ringmta/auth/credentials.h"
#include "ringmta/auth/verifier.h"
#include "ringmta/core/endpoint.h"
#include "ringmta/dkim/key_table.h"
#include "ringmta/server/inbound_dkim.h"
#include "ringmta/server/inbound_sessions.h"
#include "ringmta/server/recipient_policy.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/smtp/server_session.h"
#include "ringmta/spool/store.h"
#include "ringmta/tls/context.h"
#include "ringmta/tls/session.h"

namespace ringmta::server {

class spool_ring_driver;

// Concurrent sessions per client address, shared by every shard: a fixed table of atomic
// counters indexed by a hash of the address. Two addresses that share a slot share a limit,
// which errs on the strict side; with 65536 slots that is rare. Cheap enough for accept time.
class client_counters {
 public:
  static constexpr std::size_t slot_count = 1 << 16;
  // Counts a new session; false (and nothing counted) when the address is at `limit`.
  bool try_add(const core::endpoint& client, std::uint32_t limit) noexcept;
  void remove(const core::endpoint& client) noexcept;

 private:
  static std::size_t slot_of(const core::endpoint& client) noexcept;
  std::unique_ptr<std::atomic<std::uint32_t>[]> _counts{
      new std::atomic<std::uint32_t>[slot_count]()};
};

// Relay policy (RFC 5321 §3.6, no open relay by default): a client in mynetworks may send to
// any domain; any client may send to relay_domains (and their subdomains when listed with a
// leading dot) and to postmaster (RFC 5321 §4.5.1).
struct relay_policy {
  std::vector<core::cidr> mynetworks;
  std::vector<std::string> relay_domains;  // lowercase; ".example.com" matches subdomains

  bool client_may_relay(const core::endpoint& client) const noexcept;
  bool accepts_domain(std::string_view domain) const noexcept;
};

struct inbound_config {
  std::vector<core::endpoint> listen;
  std::vector<std::vector<int>> listener_fds;  // [shard][listener], from open_listeners()
  std::vector<bool> implicit_tls;  // per listener: TLS from the first byte (RFC 8314)
  std::vector<bool> submission;    // per listener: AUTH before MAIL (RFC 6409, RFC 8314)
  std::string hostname;
  std::string greeting_text;
  std::string greeting;        // "220 HOSTNAME TEXT\r\n" (set by freeze())
  smtp::server_config engine;  // hostname/greeting views point into the strings above
  smtp::server_config engine_implicit_tls;  // the same, with tls_active (implicit listeners)
  smtp::server_config engine_plain_auth;    // AUTH offered without TLS (loopback, if allowed)
  // STARTTLS and implicit TLS (null: no certificate, STARTTLS not offered). A reload builds a
  // new snapshot with a new context (same ticket keys); sessions keep the one they began with.
  std::shared_ptr<const tls::server_context> tls;
  std::uint32_t timeout_tls_handshake_ms = 60'000;
  relay_policy relay;
  recipient_policy recipients;  // own names, --postmaster
  bool proxy_protocol = false;
  std::vector<core::cidr> proxy_trusted;  // peers whose PROXY header is believed
  std::vector<core::cidr> xclient_trusted;  // peers offered XCLIENT (empty: nobody)
  std::uint32_t sessions_per_shard_max = 20000;
  std::uint32_t sessions_per_client_max = 100;
  std::uint32_t timeout_command_ms = 300'000;     // RFC 5321 §4.5.3.2.7
  std::uint32_t timeout_data_block_ms = 180'000;  // RFC 5321 §4.5.3.2.5
  std::uint32_t timeout_proxy_header_ms = 10'000;
  // Slow senders: a DATA/BDAT block buys bytes / min_data_rate_bytes seconds of deadline,
  // never more than timeout_data_block_ms ahead (0: idle timeout only). Above
  // load_threshold_percent of sessions_per_shard_max, every timeout is at most
  // timeout_under_load_ms (0: unchanged).
  std::uint32_t min_data_rate_bytes = 500;
  std::uint32_t timeout_under_load_ms = 10'000;
  std::uint32_t load_threshold_percent = 80;
  std::uint32_t greeting_delay_ms = 0;  // > 0: data before the greeting is an early talker
  std::uint32_t hops_max = 100;  // Received: fields a message may arrive with; more: a loop
  std::uint32_t receive_buffer_bytes = 16 * 1024;
  std::uint32_t receive_buffer_count = 2048;  // per shard, power of two
  client_counters* clients = nullptr;          // shared by all shards
  // DKIM keys (immutable; a reload installs a new table): mail from mynetworks (and
  // authenticated clients) is signed when its From: domain has keys. Null or empty: off.
  std::shared_ptr<const dkim::key_table> dkim_keys;
  // SMTP AUTH (RFC 4954; inbound_auth.cc). No credentials: AUTH is not offered. Both tables
  // are immutable (a reload builds new ones); the verifier is shared by every shard and
  // outlives them.
  std::shared_ptr<const auth::backend> auth_credentials;
  std::shared_ptr<const auth::sender_map> auth_senders;  // null: a login sends as itself
  auth::verify_service* auth_verifier = nullptr;
  bool auth_plaintext_loopback = false;
};

// Per-shard counters, registered with the metrics registry by the daemon.
struct inbound_metrics {
  admin::counter connections_accepted;
  admin::counter connections_refused_shard_limit;
  admin::counter connections_refused_client_limit;
  admin::counter early_talkers;
  admin::counter timeouts;
  admin::counter messages_accepted;
  admin::counter messages_rejected;
  admin::counter message_bytes;
  admin::counter recipients_accepted;
  admin::counter recipients_duplicate;  // folded into an earlier RCPT of the transaction
  admin::counter recipients_unknown;    // own names without a mailbox (550 5.1.1)
  admin::counter relay_denied;
  admin::counter spool_failures;
  // The client left between its end of data and the spool's verdict (no reply reached it):
  // durable ones are delivered (the client may send them again), failed ones are not queued.
  admin::counter unanswered_durable;
  admin::counter unanswered_failed;
  // append took less than can_append had promised (answered 452): a store bug; the simulator
  // fails on it.
  admin::counter spool_short_appends;
  admin::counter accept_pauses;  // EMFILE/ENFILE/ENOMEM from accept: listener paused
  admin::counter load_episodes;  // times the shard went above load_threshold_percent
  admin::gauge sessions;
  admin::histogram commit_latency;  // end of data → durable
  dkim_metrics dkim;
  admin::counter tls_handshakes;    // completed (STARTTLS and implicit)
  admin::counter tls_resumed;       // ... of which resumed a session (ticket)
  admin::counter tls_timeouts;      // handshakes cut by --timeout-tls-handshake
  admin::counter auth_succeeded;
  admin::counter auth_failed;       // 535: bad credentials (each delayed, see auth/verifier.h)
  admin::counter auth_locked;       // refused while the address or login is locked out
  admin::counter auth_busy;         // 454: verifier queue full or back-end unavailable
  admin::counter auth_sender_denied;  // 553 5.7.1: the login may not use that sender
  admin::counter auth_required;     // 530 5.7.0: MAIL without AUTH on a submission listener
  admin::counter proxy_untrusted;   // PROXY connections from peers not in proxy_trusted
  admin::counter xclient_accepted;  // XCLIENT commands taken from xclient_trusted peers
  admin::counter xclient_untrusted;  // XCLIENT from other peers (550 5.7.0)
  std::array<admin::counter, static_cast<std::size_t>(tls::failure::count_)> tls_failures;
};

// The immutable snapshot sessions hold: `config` moved to the heap, its engine's views and the
// greeting pointing into itself. Made on the daemon thread (start-up, reload); shared by every
// shard and by each session that started under it (a reload changes new sessions only).
std::shared_ptr<const inbound_config> freeze(inbound_config config);

// Opens `shards` listening sockets per endpoint with SO_REUSEPORT, so the kernel spreads new
// connections over the shards; port 0 is resolved by the first socket and shared by the rest.
// Returns [shard][listener] fds and fills `bound` with the actual addresses. Start-up only.
core::result<std::vector<std::vector<int>>> open_listeners(
    const std::vector<core::endpoint>& listen, unsigned shards,
    std::vector<core::endpoint>& bound) noexcept;

// One per shard, created and used on that shard's thread.
class inbound {
 public:
  // `config` also fixes what cannot change without a restart: listeners, session tables,
  // receive buffers.
  inbound(std::shared_ptr<const inbound_config> config, shard::shard& owner, spool::store& store,
          spool_ring_driver& driver, inbound_metrics& metrics, admin::log_buffer& log);
  ~inbound();
  inbound(const inbound&) = delete;
  inbound& operator=(const inbound&) = delete;

  // Opens this shard's listeners, registers the receive buffers, arms the accepts.
  core::result<void> start() noexcept;
  // Stops accepting; sessions may finish for grace_ms, then get 421 4.3.2 and are closed.
  void begin_shutdown(std::uint32_t grace_ms) noexcept;
  bool drained() const noexcept;
  std::uint32_t sessions() const noexcept;
  // The spool may have room again: retry connections whose input waits for it.
  void retry_waiting() noexcept;
  // A reload: sessions accepted from now on use `next` (its fixed parts must equal the first).
  void update(std::shared_ptr<const inbound_config> next) noexcept;

  // The spool reports a commit ticket durable (error 0) or failed.
  void on_committed(std::uint64_t ticket, int error) noexcept;
  // Called for every message answered 250 (it is durable), with its envelope and where the
  // spool put its body: the relay takes it from there. `pool`: the X-Ringmta-Pool a trusted
  // submitter named (server/egress.h; the field itself was stripped), else empty.
  using accepted_fn = inbound_sessions::accepted_fn;
  void set_accepted_listener(accepted_fn listener);
  // A password check finished (the verifier's result, posted to this shard).
  void on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept;

 private:
  struct parts;  // the sessions (inbound_sessions.h) and this shard's listeners (inbound.cc)
  std::unique_ptr<parts> _parts;
};

}  // namespace ringmta::server
