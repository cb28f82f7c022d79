// One daemon per spool and per listening address. See server/instance_lock.h.
#include "ringmta/server/instance_lock.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "ringmta/config/settings.h"

namespace ringmta::server {

namespace {

// The pid written in a lock file, when it holds one.
std::optional<long> pid_in(int fd) {
  char text[32] = {};
  const ssize_t got = ::pread(fd, text, sizeof text - 1, 0);
  if (got <= 0) return std::nullopt;
  char* end = nullptr;
  const long pid = std::strtol(text, &end, 10);
  if (end == text || pid <= 0) return std::nullopt;
  return pid;
}

}  // namespace

spool_lock::spool_lock(const std::string& spool_directory) {
  const std::string path = spool_directory + "/lock";
  _fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (_fd < 0)
    throw config::error(fmt::format("spool.dir: cannot open {}: {}", path, std::strerror(errno)));
  if (::flock(_fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const auto owner = pid_in(_fd);
    ::close(_fd);
    _fd = -1;
    if (error == EWOULDBLOCK)
      throw config::error(fmt::format("spool {} is in use by pid {}", spool_directory,
                                      owner ? std::to_string(*owner) : "unknown"));
    throw config::error(fmt::format("spool.dir: cannot lock {}: {}", path, std::strerror(error)));
  }
  // Our pid, for the message a second daemon prints (written over the old one in place, so a
  // reader never sees an empty file, then cut to length).
  const auto text = fmt::format("{}\n", ::getpid());
  if (::pwrite(_fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
      ::ftruncate(_fd, static_cast<off_t>(text.size())) != 0) {
    // The lock holds all the same; only the pid in a refusal would be missing.
  }
}

spool_lock::~spool_lock() {
  if (_fd >= 0) ::close(_fd);  // releases the flock
}

namespace {

// "ringmta-listen:127.0.0.1:25" in the abstract namespace (no file, gone with the process).
sockaddr_un claim_address(const core::endpoint& at, socklen_t& length) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const auto name = fmt::format("ringmta-listen:{}", at.to_string());
  const std::size_t bytes = std::min(name.size(), sizeof address.sun_path - 1);
  std::memcpy(address.sun_path + 1, name.data(), bytes);  // sun_path[0] = 0: abstract
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + bytes);
  return address;
}

// The pid of the ringmta holding the claim on `at`, through SO_PEERCRED of a connection to it.
std::optional<long> claim_owner(const core::endpoint& at) {
  socklen_t length = 0;
  const sockaddr_un address = claim_address(at, length);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::nullopt;
  std::optional<long> pid;
  ucred owner{};
  socklen_t owner_length = sizeof owner;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), length) == 0 &&
      ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &owner, &owner_length) == 0)
    pid = owner.pid;
  ::close(fd);
  return pid;
}

// Binds `at` without SO_REUSEPORT: EADDRINUSE when anything listens there already.
int probe_bind(const core::endpoint& at) {
  const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // TIME_WAIT is no owner
  const int error = ::bind(fd, at.sockaddr_pointer(), at.length) == 0 ? 0 : errno;
  ::close(fd);
  return error;
}

}  // namespace

listen_claim::listen_claim(const std::vector<core::endpoint>& addresses, const std::string& key,
                           bool probe) {
  try {
    claim(addresses, key, probe);
  } catch (...) {
    for (const int fd : _fds) ::close(fd);
    throw;
  }
}

void listen_claim::claim(const std::vector<core::endpoint>& addresses, const std::string& key,
                         bool probe) {
  for (const auto& at : addresses) {
    if (at.port() == 0) continue;
    socklen_t length = 0;
    const sockaddr_un address = claim_address(at, length);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && ::bind(fd, reinterpret_cast<const sockaddr*>(&address), length) == 0 &&
        ::listen(fd, 16) == 0) {
      _fds.push_back(fd);
    } else {
      const int error = errno;
      if (fd >= 0) ::close(fd);
      if (error == EADDRINUSE) {
        const auto owner = claim_owner(at);
        throw config::error(fmt::format("{}: {} is in use by ringmta pid {}", key,
                                        at.to_string(),
                                        owner ? std::to_string(*owner) : "unknown"));
      }
    }
    if (!probe) continue;
    if (const int error = probe_bind(at); error != 0)
      throw config::error(fmt::format("{}: cannot listen on {}: {}{}", key, at.to_string(),
                                      std::strerror(error),
                                      error == EADDRINUSE ? " (something listens there already)"
                                                          : ""));
  }
}

listen_claim::~listen_claim() {
  for (const int fd : _fds) ::close(fd);
}

}  // namespace ringmta::server
