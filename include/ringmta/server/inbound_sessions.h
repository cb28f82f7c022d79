// server::inbound_sessions: the per-connection half of server::inbound (issue 16 item 1) — SMTP
// sessions on sockets someone else accepted, the path from end-of-data to the spool and back
// to the 250, timeouts, load, shutdown of sessions — over a shard::host (its IO, descriptors,
// timers and clock) and a spool::store. What needs the real shard stays in server::inbound:
// listening sockets, accept and its pauses.
//
// The daemon's server::inbound runs it on a shard::shard with the sockets it accepts;
// tests/sim runs the same code on a sim::sim_host whose simulated clients are the peers
// (docs/simulation.md). Same code, no #ifdef.
//
// The embedder drives the spool (commit tickets come back through on_committed) and is told:
// after every commit, through spool_pump (a batch may be full already); for every message
// answered 250 (set_accepted_listener); when a session's slot is free again
// (set_release_listener: a descriptor is free). on_commit_issued is an observer for tests
// (the simulator's oracle must know which message a ticket carries before it is durable).
// Never: called from another thread than the host's loop.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "ringmta/admin/log.h"
#include "ringmta/auth/verifier.h"
#include "ringmta/core/endpoint.h"
#include "ringmta/core/result.h"
#include "ringmta/shard/host.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/store.h"

namespace ringmta::server {

struct inbound_config;
struct inbound_metrics;
class inbound_server;

// What sessions need from whatever runs the store's operations: a kick after a commit.
class spool_pump {
 public:
  virtual void pump() noexcept = 0;

 protected:
  ~spool_pump() = default;
};

// Which listener a socket came from (server::inbound_config's per-listener flags).
struct session_origin {
  bool implicit_tls = false;  // TLS from the first byte (RFC 8314)
  bool submission = false;    // AUTH before MAIL (RFC 6409)
};

class inbound_sessions {
 public:
  // Called for every message answered 250 (it is durable), with its envelope and where the
  // spool put its body; `pool`: the X-Ringmta-Pool a trusted submitter named, else empty.
  using accepted_fn = std::function<void(const spool::envelope&,
                                         std::span<const spool::body_slice>, std::string_view)>;
  // store::commit returned `ticket` for this envelope (its id, recipients, client).
  using commit_issued_fn = std::function<void(std::uint64_t ticket, const spool::envelope&)>;

  // `shard_id` names this shard in session ids, log records and AUTH replies.
  inbound_sessions(std::shared_ptr<const inbound_config> config, shard::host& host,
                   unsigned shard_id, spool::store& store, spool_pump& spool,
                   inbound_metrics& metrics, admin::log_buffer& log);
  ~inbound_sessions();
  inbound_sessions(const inbound_sessions&) = delete;
  inbound_sessions& operator=(const inbound_sessions&) = delete;

  // Registers the op kinds and the receive buffers on the host.
  core::result<void> start() noexcept;
  // A session on `fd` (a connected stream socket, the sessions' from now on) from `peer`.
  // False at sessions_per_shard_max: `fd` stays the caller's.
  bool open(int fd, const core::endpoint& peer, session_origin origin) noexcept;
  // Sessions may finish for grace_ms, then get 421 4.3.2 and are closed.
  void begin_shutdown(std::uint32_t grace_ms) noexcept;
  bool shutting_down() const noexcept;
  bool drained() const noexcept;
  std::uint32_t sessions() const noexcept;
  // The spool may have room again: retry connections whose input waits for it.
  void retry_waiting() noexcept;
  // A reload: sessions opened from now on use `next` (its fixed parts must equal the first).
  void update(std::shared_ptr<const inbound_config> next) noexcept;
  // The spool reports a commit ticket durable (error 0) or failed.
  void on_committed(std::uint64_t ticket, int error) noexcept;
  // A password check finished (the verifier's result, posted to this shard).
  void on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept;

  void set_accepted_listener(accepted_fn listener);
  void set_release_listener(std::function<void()> listener);
  void set_commit_observer(commit_issued_fn observer);

 private:
  std::unique_ptr<inbound_server> _server;
};

}  // namespace ringmta::server
