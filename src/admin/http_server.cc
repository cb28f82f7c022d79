#include "ringmta/admin/http_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

namespace ringmta::admin {

// One listening socket served by one httplib::Server (its accept loop on `thread`, requests on
// its thread pool). `adopt` hands our bound descriptor to the server: httplib's listen loop
// accepts on svr_sock_ whatever its family.
struct http_server::listener : httplib::Server {
  int fd = -1;
  bool local_socket = false;
  std::thread thread;
  void adopt() { svr_sock_ = fd; }
};

namespace {

http_request request_of(const httplib::Request& in, bool local_socket) {
  http_request out;
  out.method = in.method;
  out.path = in.path;
  for (const auto& [name, value] : in.params) out.query.emplace(name, value);
  out.body = in.body;
  out.local_socket = local_socket;
  out.peer = local_socket ? std::string("unix")
                          : fmt::format("{}:{}", in.remote_addr, in.remote_port);
  out.authorization = in.get_header_value("Authorization");
  out.operator_name = in.get_header_value("X-Ringmta-Operator");
  return out;
}

int listen_fd(const sockaddr* address, socklen_t length, int family) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  const int on = 1;
  if (family != AF_UNIX) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::bind(fd, address, length) < 0 || ::listen(fd, 128) < 0) {
    const int error = errno;
    ::close(fd);
    return -error;
  }
  return fd;
}

// A socket file left by a daemon that died is replaced; one a daemon still answers on is not.
core::result<void> clear_stale_socket(const sockaddr_un& address) {
  struct stat st{};
  if (::lstat(address.sun_path, &st) != 0) return {};
  if (!S_ISSOCK(st.st_mode)) return core::fail(EEXIST);
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return core::fail(errno);
  const bool live = ::connect(probe, reinterpret_cast<const sockaddr*>(&address),
                              sizeof address) == 0;
  ::close(probe);
  if (live) return core::fail(EADDRINUSE);
  if (::unlink(address.sun_path) != 0) return core::fail(errno);
  return {};
}

}  // namespace

http_server::http_server() = default;
http_server::~http_server() { stop(); }

core::result<void> http_server::start(const std::vector<core::endpoint>& listen,
                                      handler on_request) {
  if (auto bound = bind(listen); !bound) return bound;
  return start(std::move(on_request));
}

core::result<void> http_server::bind(const std::vector<core::endpoint>& listen) {
  for (const auto& at : listen) {
    const int fd = listen_fd(at.sockaddr_pointer(), at.length, at.family());
    if (fd < 0) return core::fail(-fd);
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
    _bound.push_back(core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), length));
    auto added = std::make_unique<listener>();
    added->fd = fd;
    _listeners.push_back(std::move(added));
  }
  return {};
}

core::result<void> http_server::bind_unix(const unix_socket_options& options) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (options.path.empty() || options.path.size() >= sizeof address.sun_path)
    return core::fail(ENAMETOOLONG);
  std::memcpy(address.sun_path, options.path.data(), options.path.size());
  if (auto cleared = clear_stale_socket(address); !cleared) return cleared;
  // Nobody may connect before mode and group are right: bind under a umask that leaves only
  // the owner, then widen to the configured mode.
  const mode_t previous = ::umask(0177);
  const int fd = listen_fd(reinterpret_cast<const sockaddr*>(&address), sizeof address, AF_UNIX);
  ::umask(previous);
  if (fd < 0) return core::fail(-fd);
  const auto undo = [&](int error) {
    ::close(fd);
    ::unlink(options.path.c_str());
    return core::fail(error);
  };
  if ((options.owner != static_cast<uid_t>(-1) || options.group != static_cast<gid_t>(-1)) &&
      ::lchown(options.path.c_str(), options.owner, options.group) != 0)
    return undo(errno);
  if (::chmod(options.path.c_str(), options.mode) != 0) return undo(errno);
  auto added = std::make_unique<listener>();
  added->fd = fd;
  added->local_socket = true;
  _listeners.push_back(std::move(added));
  _unix_path = options.path;
  return {};
}

core::result<void> http_server::start(handler on_request) {
  auto shared = std::make_shared<handler>(std::move(on_request));
  for (auto& each : _listeners) {
    listener& server = *each;
    const bool local_socket = server.local_socket;
    const auto serve = [shared, local_socket](const httplib::Request& in,
                                              httplib::Response& out) {
      http_response response;
      try {
        response = (*shared)(request_of(in, local_socket));
      } catch (const std::exception& problem) {  // admin code may throw; mail must not stop
        response = {500, "text/plain", fmt::format("internal error: {}\n", problem.what())};
      }
      out.status = response.status;
      out.set_content(response.body, response.content_type.c_str());
    };
    server.Get(".*", serve);  // one handler for every path: the daemon routes
    server.Post(".*", serve);
    server.Delete(".*", serve);
    server.Put(".*", serve);
    server.new_task_queue = [] { return new httplib::ThreadPool(workers_per_listener); };
    server.set_read_timeout(io_timeout_s, 0);
    server.set_write_timeout(io_timeout_s, 0);
    server.set_keep_alive_timeout(io_timeout_s);
    server.set_keep_alive_max_count(100);
    server.set_payload_max_length(body_bytes_max);
    server.set_tcp_nodelay(true);
    server.adopt();
    server.thread = std::thread([&server] { server.listen_after_bind(); });
    // stop() only reaches a running server: wait (bounded) until its loop has started.
    for (int i = 0; i < 5000 && !server.is_running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!server.is_running()) return core::fail(EAGAIN);
  }
  return {};
}

void http_server::stop() noexcept {
  if (_stopped) return;
  _stopped = true;
  for (auto& server : _listeners) {
    if (server->thread.joinable()) {
      server->stop();  // shuts the listening socket down and closes it
      server->thread.join();
    } else if (server->fd >= 0) {
      ::close(server->fd);  // bound, never started
    }
  }
  _listeners.clear();
  if (!_unix_path.empty()) ::unlink(_unix_path.c_str());
}

}  // namespace ringmta::admin
