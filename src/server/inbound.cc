// server::inbound: listeners and accept on the real shard, feeding server::inbound_sessions
// (inbound_sessions.cc: the connection table, tickets, shutdown of sessions; one SMTP session
// is in inbound_connection.cc). Also the client counters, the relay policy and freeze().
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <xxhash.h>

#include "ringmta/core/timer_wheel.h"
#include "ringmta/server/inbound.h"
#include "ringmta/server/inbound_sessions.h"
#include "ringmta/server/spool_ring_driver.h"
#include "ringmta/net/idna.h"
#include "ringmta/core/assert.h"

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

// ---- inbound_acceptor: what needs the real shard

// This shard's listening sockets and their multishot accepts, paused while descriptors run out;
// each accepted socket goes to the sessions. Needs the kernel's ring (accept), getpeername and
// a best-effort send(2) of the 421 at the session limit, so it stays on shard::shard.
class inbound_acceptor final : public shard::host_handler {
 public:
  inbound_acceptor(const inbound_config& config, shard::shard& owner, inbound_sessions& sessions,
                   inbound_metrics& metrics, admin::log_buffer& log) noexcept
      : _config(config), _owner(owner), _sessions(sessions), _metrics(metrics), _log(log) {}
  ~inbound_acceptor() {
    if (_accept_timer.armed()) _owner.timers().cancel(_accept_timer);
    for (int fd : _listeners) ::close(fd);
  }
  inbound_acceptor(const inbound_acceptor&) = delete;
  inbound_acceptor& operator=(const inbound_acceptor&) = delete;

  core::result<void> start() noexcept;
  // Closing the listening sockets ends the multishot accepts (their final CQE arrives later).
  void stop() noexcept {
    _stopped = true;
    for (int fd : _listeners) ::shutdown(fd, SHUT_RDWR);
  }
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
  void pause_accepting(std::size_t listener, int error) noexcept;
  void resume_accepting() noexcept;

  const inbound_config& _config;
  shard::shard& _owner;
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

core::result<void> inbound_acceptor::start() noexcept {
  auto registered = _owner.add_handler(static_cast<shard::host_handler&>(*this));
  if (!registered) return core::fail(registered.error());
  _accept_kind = registered.value();
  RINGMTA_ASSERT(_owner.id() < _config.listener_fds.size());
  _listeners = _config.listener_fds[_owner.id()];
  _accepting.assign(_listeners.size(), accept_phase::idle);
  for (std::size_t i = 0; i < _listeners.size(); ++i) arm_accept(i);
  return {};
}

void inbound_acceptor::arm_accept(std::size_t listener) noexcept {
  if (_stopped || _accepting[listener] != accept_phase::idle) return;
  const auto tag = io::pack_user_data(_accept_kind, 0, static_cast<std::uint32_t>(listener));
  const auto queued = _owner.ring().prep_accept(_listeners[listener], tag, /*multishot=*/true);
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
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (_sessions.shutting_down() ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0) {
    ::close(fd);
    return;
  }
  const auto peer = core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length);
  const session_origin origin{
      listener < _config.implicit_tls.size() && _config.implicit_tls[listener],
      listener < _config.submission.size() && _config.submission[listener]};
  if (!_sessions.open(fd, peer, origin)) {
    // At the session limit: a best-effort 421 straight from this thread (non-blocking send on a
    // fresh socket always fits the buffer) instead of leaving the client to time out.
    static constexpr char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
    [[maybe_unused]] const auto sent =
        ::send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    ::close(fd);
    _metrics.connections_refused_shard_limit.add();
    char client[64];
    _log.set_time(_owner.wall_ms());
    _log.record("rejected")
        .field("client", peer.to_chars(client, sizeof client))
        .field("reply", std::string_view(busy, sizeof busy - 3))
        .field("detail", "max_sessions_per_shard reached");
  }
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
      .field("shard", static_cast<std::uint64_t>(_owner.id()))
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

// ---- inbound (the public face): the sessions on this shard, fed by its acceptor

namespace {
// spool_ring_driver as the sessions' spool_pump (the driver needs the real shard; the sessions
// only a kick after each commit).
class ring_driver_pump final : public spool_pump {
 public:
  explicit ring_driver_pump(spool_ring_driver& driver) noexcept : _driver(driver) {}
  void pump() noexcept override { _driver.pump(); }

 private:
  spool_ring_driver& _driver;
};
}  // namespace

struct inbound::parts {
  parts(std::shared_ptr<const inbound_config> config, shard::shard& owner, spool::store& store,
        spool_ring_driver& driver, inbound_metrics& metrics, admin::log_buffer& log)
      : first(std::move(config)),
        pump(driver),
        sessions(first, owner, owner.id(), store, pump, metrics, log),
        acceptor(*first, owner, sessions, metrics, log) {
    sessions.set_release_listener([this] { acceptor.on_session_released(); });
  }
  std::shared_ptr<const inbound_config> first;  // the acceptor's configuration
  ring_driver_pump pump;
  inbound_sessions sessions;
  inbound_acceptor acceptor;  // destroyed first: its listeners close before the sessions go
};

inbound::inbound(std::shared_ptr<const inbound_config> config, shard::shard& owner,
                 spool::store& store, spool_ring_driver& driver, inbound_metrics& metrics,
                 admin::log_buffer& log)
    : _parts(std::make_unique<parts>(std::move(config), owner, store, driver, metrics, log)) {}
inbound::~inbound() = default;

core::result<void> inbound::start() noexcept {
  if (auto started = _parts->sessions.start(); !started) return started;
  return _parts->acceptor.start();
}
void inbound::begin_shutdown(std::uint32_t grace_ms) noexcept {
  _parts->acceptor.stop();
  _parts->sessions.begin_shutdown(grace_ms);
}
bool inbound::drained() const noexcept { return _parts->sessions.drained(); }
std::uint32_t inbound::sessions() const noexcept { return _parts->sessions.sessions(); }
void inbound::retry_waiting() noexcept { _parts->sessions.retry_waiting(); }
void inbound::update(std::shared_ptr<const inbound_config> next) noexcept {
  _parts->sessions.update(std::move(next));
}
void inbound::on_committed(std::uint64_t ticket, int error) noexcept {
  _parts->sessions.on_committed(ticket, error);
}
void inbound::on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept {
  _parts->sessions.on_auth_result(std::move(result));
}
void inbound::set_accepted_listener(accepted_fn listener) {
  _parts->sessions.set_accepted_listener(std::move(listener));
}

}  // namespace ringmta::server
