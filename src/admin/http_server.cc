#include "ringmta/admin/http_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ringmta::admin {
namespace {

constexpr std::size_t request_bytes_max = 16 * 1024;
constexpr int request_timeout_ms = 5000;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

void send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
}

void respond(int fd, const http_response& response) {
  send_all(fd, fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n"
                           "Connection: close\r\n\r\n",
                           response.status, reason(response.status), response.content_type,
                           response.body.size()));
  send_all(fd, response.body);
}

// Reads until the end of headers and Content-Length bytes of body, within bounds and time.
int read_request(int fd, std::string& raw, std::size_t& header_end) {
  char chunk[4096];
  std::size_t body_bytes = 0;
  header_end = std::string::npos;
  while (true) {
    if (header_end != std::string::npos && raw.size() >= header_end + body_bytes) return 200;
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, request_timeout_ms) <= 0) return 408;
    const ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
    if (got <= 0) return 400;
    raw.append(chunk, static_cast<std::size_t>(got));
    if (raw.size() > request_bytes_max) return 431;
    if (header_end == std::string::npos) {
      const auto end = raw.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      header_end = end + 4;
      const auto length_at = raw.find("\r\nContent-Length:");
      if (length_at != std::string::npos && length_at < end)
        body_bytes = std::strtoull(raw.c_str() + length_at + 17, nullptr, 10);
      if (body_bytes > request_bytes_max) return 431;
    }
  }
}

}  // namespace

core::result<void> http_server::start(const std::vector<core::endpoint>& listen,
                                      handler on_request) {
  if (auto bound = bind(listen); !bound) return bound;
  return start(std::move(on_request));
}

core::result<void> http_server::bind(const std::vector<core::endpoint>& listen) {
  for (const auto& at : listen) {
    const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return core::fail(errno);
    const int on = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (::bind(fd, at.sockaddr_pointer(), at.length) < 0 || ::listen(fd, 64) < 0) {
      const int error = errno;
      ::close(fd);
      return core::fail(error);
    }
    sockaddr_storage bound{};
    socklen_t length = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
    _bound.push_back(core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&bound), length));
    _listen_fds.push_back(fd);
  }
  return {};
}

core::result<void> http_server::start(handler on_request) {
  _handler = std::move(on_request);
  _wake_fd = ::eventfd(0, EFD_CLOEXEC);
  if (_wake_fd < 0) return core::fail(errno);
  _thread = std::thread([this] { run(); });
  return {};
}

void http_server::stop() noexcept {
  if (_stopping.exchange(true)) return;
  if (_wake_fd >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto ignored = ::write(_wake_fd, &one, sizeof one);
  }
  if (_thread.joinable()) _thread.join();
  for (int fd : _listen_fds) ::close(fd);
  if (_wake_fd >= 0) ::close(_wake_fd);
  _listen_fds.clear();
  _wake_fd = -1;
}

void http_server::run() noexcept {
  std::vector<pollfd> watched;
  for (int fd : _listen_fds) watched.push_back({fd, POLLIN, 0});
  watched.push_back({_wake_fd, POLLIN, 0});
  while (!_stopping.load()) {
    if (::poll(watched.data(), watched.size(), -1) < 0 && errno != EINTR) return;
    for (std::size_t i = 0; i + 1 < watched.size(); ++i) {
      if (!(watched[i].revents & POLLIN)) continue;
      const int client = ::accept4(watched[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      serve(client);  // one at a time: admin traffic is light, and this bounds resources
      ::close(client);
    }
  }
}

void http_server::serve(int client_fd) noexcept {
  std::string raw;
  std::size_t header_end = 0;
  const int status = read_request(client_fd, raw, header_end);
  if (status != 200) return respond(client_fd, {status, "text/plain", reason(status)});
  http_request request;
  const auto line_end = raw.find("\r\n");
  const auto space1 = raw.find(' ');
  const auto space2 = raw.find(' ', space1 + 1);
  if (space1 == std::string::npos || space2 == std::string::npos || space2 > line_end)
    return respond(client_fd, {400, "text/plain", "malformed request line\n"});
  request.method = raw.substr(0, space1);
  request.path = raw.substr(space1 + 1, space2 - space1 - 1);
  request.body = raw.substr(header_end);
  http_response response;
  try {
    response = _handler(request);
  } catch (const std::exception& problem) {  // admin code may throw; mail must not stop
    response = {500, "text/plain", fmt::format("internal error: {}\n", problem.what())};
  }
  respond(client_fd, response);
}

}  // namespace ringmta::admin
