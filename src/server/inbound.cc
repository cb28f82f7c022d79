// server::inbound: listeners and accept (inbound_acceptor.cc), feeding server::inbound_sessions
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
#include "ringmta/server/inbound_acceptor.h"
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
        acceptor(*first, owner, owner.id(), sessions, metrics, log) {
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
