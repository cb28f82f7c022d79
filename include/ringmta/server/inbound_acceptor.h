// server::inbound_acceptor: one shard's listening sockets and their multishot accepts, each
// accepted socket handed to the shard's inbound_sessions.
//
// It needs only a shard::host — the ring's accept, the descriptors' getpeername, close,
// shutdown and a send that never waits (the 421 at the session limit), the timer wheel — so
// the daemon runs it on its shard and tests/sim on a simulated host (issue 16 item 1).
// Accepting pauses while descriptors run out (EMFILE, ENFILE, ENOMEM, ENOBUFS): re-arming at
// once would spin, the error coming straight back; it resumes when a session ends or after
// 250 ms, and logs `accept_paused` at most once a minute.
// Never: blocks, or accepts once stop() was called.
#pragma once

#include <cstdint>
#include <vector>

#include "ringmta/admin/log.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/server/inbound.h"
#include "ringmta/server/inbound_sessions.h"
#include "ringmta/shard/host.h"

namespace ringmta::server {

class inbound_acceptor final : public shard::host_handler {
 public:
  // `shard` picks this shard's sockets out of config.listener_fds.
  inbound_acceptor(const inbound_config& config, shard::host& owner, unsigned shard,
                   inbound_sessions& sessions, inbound_metrics& metrics,
                   admin::log_buffer& log) noexcept
      : _config(config),
        _owner(owner),
        _shard(shard),
        _sessions(sessions),
        _metrics(metrics),
        _log(log) {}
  ~inbound_acceptor();
  inbound_acceptor(const inbound_acceptor&) = delete;
  inbound_acceptor& operator=(const inbound_acceptor&) = delete;

  core::result<void> start() noexcept;
  // Shutting the listening sockets down ends the multishot accepts (their final CQE arrives
  // later).
  void stop() noexcept;
  // A session ended: its descriptor is free, a paused listener may accept again.
  void on_session_released() noexcept {
    if (_accept_timer.armed()) resume_accepting();
  }
  void on_completion(const io::completion& done) noexcept override {
    on_accepted(done.tag().slot, done);
  }

 private:
  void arm_accept(std::size_t listener) noexcept;
  void on_accepted(std::size_t listener, const io::completion& done) noexcept;
  void refuse_at_limit(int fd, const core::endpoint& peer) noexcept;
  void pause_accepting(std::size_t listener, int error) noexcept;
  void resume_accepting() noexcept;

  const inbound_config& _config;
  shard::host& _owner;
  unsigned _shard;
  inbound_sessions& _sessions;
  inbound_metrics& _metrics;
  admin::log_buffer& _log;
  // A listener's multishot accept: `idle` (none queued: it ended, or the ring had no room),
  // `armed`, or `paused` after EMFILE/ENFILE — not re-armed until a connection closes or the
  // retry timer fires (re-arming at once would spin: the error comes straight back).
  enum class accept_phase : std::uint8_t { idle, armed, paused };
  std::vector<int> _listeners;           // this shard's sockets, one per configured listener
  std::vector<accept_phase> _accepting;  // by listener
  std::uint64_t _accept_pauses = 0;      // since start, for the log line
  std::uint64_t _pause_logged_ms = 0;    // when the last accept_paused line was written
  bool _stopped = false;
  core::member_timer<inbound_acceptor, &inbound_acceptor::resume_accepting> _accept_timer{*this};
  io::op_kind _accept_kind = io::op_kind_invalid;
};

}  // namespace ringmta::server
