// The admin endpoint's HTTP server: /metrics (Prometheus), /health and the admin API, served by
// cpp-httplib (Debian's libcpp-httplib) off the mail path. Each listener has its own accept
// thread and a pool of worker threads, so a slow or stalled client holds one worker, never the
// endpoint: every read and write has a timeout, idle keep-alive connections are closed, and
// request bodies are bounded.
//
// Listeners: TCP endpoints and at most one UNIX stream socket (the operator's control socket,
// what ringmta-ctl talks to). We bind the sockets ourselves (before the privilege drop, with our
// endpoint parsing, port 0 reported by bound()) and hand each listening descriptor to an
// httplib::Server, whose 0.11 release cannot bind a UNIX socket itself.
//
// Invariants: the handler runs on a worker thread, concurrently with other requests; it must
// be thread-safe and must never block a shard (it asks shards through their queues).
// Never: runs on a shard, lets an exception escape into httplib (it answers 500 instead).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ringmta/core/endpoint.h"
#include "ringmta/core/result.h"

namespace ringmta::admin {

struct http_request {
  std::string method;  // "GET", "POST", …
  std::string path;    // "/queue/example.com/suspend" (percent-decoded, no query string)
  std::map<std::string, std::string> query;  // ?duration=1h&reason=x, decoded
  std::string body;
  bool local_socket = false;  // came through the UNIX control socket
  std::string peer;           // "unix" or "127.0.0.1:40112": where the request came from
  std::string authorization;  // the Authorization header, verbatim
  std::string operator_name;  // X-Ringmta-Operator, as the client states it (for the log)
  // The parameter's value, or `fallback` when absent.
  std::string param(const std::string& name, const std::string& fallback = {}) const {
    const auto it = query.find(name);
    return it != query.end() ? it->second : fallback;
  }
};

struct http_response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct unix_socket_options {
  std::string path;
  mode_t mode = 0660;
  uid_t owner = static_cast<uid_t>(-1);  // -1: unchanged
  gid_t group = static_cast<gid_t>(-1);
};

class http_server {
 public:
  using handler = std::function<http_response(const http_request&)>;
  static constexpr unsigned workers_per_listener = 16;
  static constexpr int io_timeout_s = 5;          // each read and write
  static constexpr std::size_t body_bytes_max = 64 * 1024;

  http_server();
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds every endpoint (port 0: the OS picks; see bound()) and starts the threads.
  core::result<void> start(const std::vector<core::endpoint>& listen, handler on_request);
  // The same in steps: bind while privileged, start the threads once privileges are gone.
  core::result<void> bind(const std::vector<core::endpoint>& listen);
  // A UNIX socket: a stale socket file is replaced, a live one (a daemon answers) is EADDRINUSE,
  // any other file is EEXIST. Mode, owner and group are applied before anyone may connect.
  core::result<void> bind_unix(const unix_socket_options& options);
  core::result<void> start(handler on_request);
  void stop() noexcept;  // waits for requests in progress; removes the UNIX socket file
  const std::vector<core::endpoint>& bound() const noexcept { return _bound; }
  const std::string& unix_path() const noexcept { return _unix_path; }

 private:
  struct listener;
  std::vector<std::unique_ptr<listener>> _listeners;
  std::vector<core::endpoint> _bound;
  std::string _unix_path;
  bool _stopped = false;
};

}  // namespace ringmta::admin
