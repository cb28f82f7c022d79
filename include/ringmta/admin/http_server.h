// A small HTTP/1.1 server for the admin endpoints: /metrics (Prometheus), /health, and the
// admin API. It runs on its own thread with blocking sockets: it is off the mail path, serves
// a handful of requests per second, and must keep answering even when the shards are busy.
//
// Bounded: requests larger than 16 KiB get 431, at most 64 connections are open at once, and
// each connection gets 5 s to send its request. One request per connection (Connection: close).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "ringmta/core/endpoint.h"
#include "ringmta/core/result.h"

namespace ringmta::admin {

struct http_request {
  std::string method;  // "GET", "POST", …
  std::string path;    // "/metrics" (query string kept: "/queue?domain=x")
  std::string body;
};

struct http_response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class http_server {
 public:
  using handler = std::function<http_response(const http_request&)>;

  http_server() = default;
  ~http_server() { stop(); }
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds every endpoint (port 0: the OS picks; see bound()) and starts the thread.
  core::result<void> start(const std::vector<core::endpoint>& listen, handler on_request);
  // The same in two steps: bind while privileged, start the thread once privileges are gone.
  core::result<void> bind(const std::vector<core::endpoint>& listen);
  core::result<void> start(handler on_request);
  void stop() noexcept;
  const std::vector<core::endpoint>& bound() const noexcept { return _bound; }

 private:
  void run() noexcept;
  void serve(int client_fd) noexcept;
  std::vector<int> _listen_fds;
  std::vector<core::endpoint> _bound;
  handler _handler;
  int _wake_fd = -1;
  std::atomic<bool> _stopping{false};
  std::thread _thread;
};

}  // namespace ringmta::admin
