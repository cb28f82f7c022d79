#include "ringmta/server/inbound_acceptor.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "ringmta/core/assert.h"

namespace ringmta::server {

inbound_acceptor::~inbound_acceptor() {
  if (_accept_timer.armed()) _owner.timers().cancel(_accept_timer);
  for (int fd : _listeners) _owner.descriptors().close(fd);
}

core::result<void> inbound_acceptor::start() noexcept {
  auto registered = _owner.add_handler(*this);
  if (!registered) return core::fail(registered.error());
  _accept_kind = registered.value();
  RINGMTA_ASSERT(_shard < _config.listener_fds.size());
  _listeners = _config.listener_fds[_shard];
  _accepting.assign(_listeners.size(), accept_phase::idle);
  for (std::size_t i = 0; i < _listeners.size(); ++i) arm_accept(i);
  return {};
}

void inbound_acceptor::stop() noexcept {
  _stopped = true;
  for (int fd : _listeners) _owner.descriptors().shutdown(fd, SHUT_RDWR);
}

void inbound_acceptor::arm_accept(std::size_t listener) noexcept {
  if (_stopped || _accepting[listener] != accept_phase::idle) return;
  const auto tag = io::pack_user_data(_accept_kind, 0, static_cast<std::uint32_t>(listener));
  const auto queued = _owner.io().prep_accept(_listeners[listener], tag, /*multishot=*/true);
  if (queued.ok()) _accepting[listener] = accept_phase::armed;
}

void inbound_acceptor::on_accepted(std::size_t listener, const io::completion& done) noexcept {
  if (!done.more() && _accepting[listener] == accept_phase::armed)
    _accepting[listener] = accept_phase::idle;
  if (done.failed()) {
    const int error = -done.res;
    if (error == EMFILE || error == ENFILE || error == ENOMEM || error == ENOBUFS)
      return pause_accepting(listener, error);
    if (!done.more()) arm_accept(listener);  // ECONNABORTED and the like: the next one is fine
    return;
  }
  const int fd = done.res;
  if (!done.more()) arm_accept(listener);
  io::descriptors& descriptors = _owner.descriptors();
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (_sessions.shutting_down() || !descriptors.peer_name(fd, address, length)) {
    descriptors.close(fd);
    return;
  }
  const auto peer = core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length);
  const session_origin origin{
      listener < _config.implicit_tls.size() && _config.implicit_tls[listener],
      listener < _config.submission.size() && _config.submission[listener]};
  if (!_sessions.open(fd, peer, origin)) refuse_at_limit(fd, peer);
}

// At the session limit: a best-effort 421 straight from this thread (a fresh socket's buffer
// always has room) instead of leaving the client to time out (RFC 5321 §3.8, §4.2.3).
void inbound_acceptor::refuse_at_limit(int fd, const core::endpoint& peer) noexcept {
  static constexpr char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
  io::descriptors& descriptors = _owner.descriptors();
  descriptors.send_now(fd, busy, sizeof busy - 1);
  descriptors.close(fd);
  _metrics.connections_refused_shard_limit.add();
  char client[64];
  _log.set_time(_owner.wall_ms());
  _log.record("rejected")
      .field("client", peer.to_chars(client, sizeof client))
      .field("reply", std::string_view(busy, sizeof busy - 3))
      .field("detail", "max_sessions_per_shard reached");
}

// Out of descriptors (or memory): an accept re-armed now would fail at once, over and over,
// with the CPU spinning and no client served. The listener waits, connections queue in the
// kernel's backlog, and accepting resumes when a connection closes (a descriptor is free) or
// after accept_retry_ms (another part of the process may have freed one). Logged at most once
// a minute, with the count.
void inbound_acceptor::pause_accepting(std::size_t listener, int error) noexcept {
  constexpr std::uint32_t accept_retry_ms = 250;
  // An error that kept the multishot accept alive (F_MORE) leaves it armed: the kernel goes on.
  if (_accepting[listener] == accept_phase::idle) _accepting[listener] = accept_phase::paused;
  ++_accept_pauses;
  _metrics.accept_pauses.add();
  if (!_accept_timer.armed()) _owner.timers().schedule_after(_accept_timer, accept_retry_ms);
  const std::uint64_t now = _owner.now_ms();
  if (_pause_logged_ms != 0 && now - _pause_logged_ms < 60'000) return;
  _pause_logged_ms = now;
  _log.set_time(_owner.wall_ms());
  _log.record("accept_paused")
      .field("shard", static_cast<std::uint64_t>(_shard))
      .field("error", std::string_view(std::strerror(error)))
      .field("pauses", _accept_pauses)
      .field("sessions", static_cast<std::uint64_t>(_sessions.sessions()));
}

void inbound_acceptor::resume_accepting() noexcept {
  if (_accept_timer.armed()) _owner.timers().cancel(_accept_timer);
  for (std::size_t i = 0; i < _accepting.size(); ++i) {
    if (_accepting[i] != accept_phase::paused) continue;
    _accepting[i] = accept_phase::idle;
    arm_accept(i);
  }
}

}  // namespace ringmta::server
