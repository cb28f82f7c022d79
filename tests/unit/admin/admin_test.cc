#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ringmta/admin/http_server.h"
#include "ringmta/admin/log.h"
#include "ringmta/admin/metrics.h"

namespace ringmta::admin {
namespace {

TEST(log, json_records_are_one_escaped_line_each) {
  log_buffer log(log_format::json);
  log.set_time(1700000000123);
  log.record("received")
      .field("id", "0001")
      .field("from", "evil\"\n{\"event\":\"forged\"}")
      .field("size", std::uint64_t{1024})
      .field("tls", false);
  log.record("delivered").field("ok", true);
  const std::string text(log.pending());
  ASSERT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  const auto first = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(first["event"], "received");
  EXPECT_EQ(first["ts"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(first["from"], "evil\"\n{\"event\":\"forged\"}");
  EXPECT_EQ(first["size"], 1024);
  EXPECT_EQ(first["tls"], false);
}

// logfmt: bare values when they can be, quoted (spaces kept readable) when they must be, and
// no value can forge a field or a line.
TEST(log, text_format_quotes_values_readably) {
  log_buffer log(log_format::text);
  log.record("bounce")
      .field("reply", "550 5.1.1 no such user")
      .field("id", "0123abcd")
      .field("from", "")
      .field("helo", "x=1 \"y\"\nz\\");
  EXPECT_EQ(std::string(log.pending()),
            "1970-01-01T00:00:00.000Z bounce reply=\"550 5.1.1 no such user\" id=0123abcd "
            "from=\"\" helo=\"x=1 \\\"y\\\"\\nz\\\\\"\n");
}

TEST(log, full_buffer_drops_whole_records_and_counts_them) {
  log_buffer log(log_format::json, 100);
  log.record("a").field("x", std::string(40, 'x'));
  const auto first_size = log.pending().size();
  log.record("b").field("x", std::string(80, 'y'));  // does not fit
  EXPECT_EQ(log.pending().size(), first_size);
  EXPECT_EQ(log.dropped_records(), 1u);
  log.consume(first_size);
  log.record("c").field("x", "z");
  EXPECT_NE(std::string(log.pending()).find("\"event\":\"c\""), std::string::npos);
}

TEST(metrics, prometheus_text_sums_shards) {
  counter accepted_shard0, accepted_shard1;
  gauge sessions;
  histogram latency;
  registry metrics;
  metrics.add("ringmta_messages_accepted_total", "Messages answered 250", accepted_shard0);
  metrics.add("ringmta_sessions", "Open sessions", sessions);
  metrics.add("ringmta_messages_accepted_total", "Messages answered 250", accepted_shard1);
  metrics.add("ringmta_commit_seconds", "end of data to durable", latency);
  accepted_shard0.add(3);
  accepted_shard1.add(4);
  sessions.set(12);
  latency.record_us(3);    // bucket le=4µs
  latency.record_us(900);  // bucket le=1024µs
  const auto text = metrics.render_prometheus();
  EXPECT_NE(text.find("# TYPE ringmta_messages_accepted_total counter\n"
                      "ringmta_messages_accepted_total 7\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ringmta_sessions 12\n"), std::string::npos);
  EXPECT_NE(text.find("ringmta_commit_seconds_bucket{le=\"2e-06\"} 0\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("ringmta_commit_seconds_bucket{le=\"4e-06\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("ringmta_commit_seconds_bucket{le=\"0.001024\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("ringmta_commit_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("ringmta_commit_seconds_count 2\n"), std::string::npos);
}

TEST(metrics, labelled_family_gets_one_help_line) {
  counter ok, fail;
  registry metrics;
  metrics.add("ringmta_replies_total{class=\"2xx\"}", "Replies by class", ok);
  metrics.add("ringmta_replies_total{class=\"5xx\"}", "Replies by class", fail);
  fail.add();
  const auto text = metrics.render_prometheus();
  EXPECT_EQ(text,
            "# HELP ringmta_replies_total Replies by class\n"
            "# TYPE ringmta_replies_total counter\n"
            "ringmta_replies_total{class=\"2xx\"} 0\n"
            "ringmta_replies_total{class=\"5xx\"} 1\n");
}

std::string exchange(int fd, const std::string& request) {
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char chunk[4096];
  ssize_t got;
  while ((got = ::recv(fd, chunk, sizeof chunk, 0)) > 0) response.append(chunk, got);
  ::close(fd);
  return response;
}

std::string http_get(const core::endpoint& at, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_EQ(::connect(fd, at.sockaddr_pointer(), at.length), 0);
  return exchange(fd, request);
}

int unix_connect(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

http_response echo(const http_request& request) {
  if (request.path == "/health") return http_response{200, "text/plain", "ok\n"};
  if (request.path == "/echo")
    return http_response{200, "text/plain",
                         request.method + " " + request.param("duration") + " " +
                             request.param("reason") + " " + request.peer + " " +
                             request.operator_name + " " + request.body};
  return http_response{404, "text/plain", "no\n"};
}

TEST(http_server, routes_requests_and_bounds_them) {
  http_server server;
  auto started = server.start({*core::endpoint::parse("127.0.0.1:0")}, echo);
  ASSERT_TRUE(started.ok()) << started.error_text();
  const auto at = server.bound().at(0);
  ASSERT_NE(at.port(), 0);
  const auto health = http_get(at, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(health.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_NE(health.find("\r\n\r\nok\n"), std::string::npos);
  EXPECT_EQ(http_get(at, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").substr(0, 12),
            "HTTP/1.1 404");
  EXPECT_EQ(http_get(at, "GARBAGE\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  // Query parameters are decoded; the body and the stated operator come through.
  const auto echoed = http_get(at, "POST /echo?duration=1h&reason=disk%20full HTTP/1.1\r\n"
                                   "Connection: close\r\nX-Ringmta-Operator: alice\r\n"
                                   "Content-Length: 4\r\n\r\nbody");
  EXPECT_NE(echoed.find("\r\n\r\nPOST 1h disk full 127.0.0.1:"), std::string::npos) << echoed;
  EXPECT_NE(echoed.find(" alice body"), std::string::npos) << echoed;
  // Bodies are bounded (413), so are header lines.
  const auto large = http_get(at, "POST /echo HTTP/1.1\r\nConnection: close\r\nContent-Length: "
                                  "1000000\r\n\r\n" + std::string(100000, 'a'));
  EXPECT_EQ(large.substr(0, 12), "HTTP/1.1 413") << large.substr(0, 100);
  const auto long_header = http_get(at, "GET / HTTP/1.1\r\nX: " + std::string(20000, 'a'));
  EXPECT_EQ(long_header.substr(0, 10), "HTTP/1.1 4") << long_header.substr(0, 100);
  server.stop();
}

TEST(http_server, unix_socket_has_its_mode_and_replaces_only_stale_files) {
  const std::string path = ::testing::TempDir() + "ringmta-admin-test.sock";
  ::unlink(path.c_str());
  http_server server;
  ASSERT_TRUE(server.bind_unix({path, 0660}).ok());
  ASSERT_TRUE(server.start(echo).ok());
  struct stat st{};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  const auto echoed = exchange(unix_connect(path), "POST /echo HTTP/1.1\r\nConnection: close\r\n"
                                                   "Content-Length: 0\r\n\r\n");
  EXPECT_NE(echoed.find("\r\n\r\nPOST   unix"), std::string::npos) << echoed;
  // A second server on the same path: the first still answers, so it is refused.
  http_server second;
  EXPECT_EQ(second.bind_unix({path, 0660}).error(), EADDRINUSE);
  server.stop();
  EXPECT_NE(::lstat(path.c_str(), &st), 0) << "stop() removes the socket file";
  // A socket file nobody answers on (a crashed daemon) is replaced; a regular file is not.
  const int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ::close(stale);
  http_server third;
  EXPECT_TRUE(third.bind_unix({path, 0600}).ok());
  third.stop();
  const int regular = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  ::close(regular);
  http_server fourth;
  EXPECT_EQ(fourth.bind_unix({path, 0600}).error(), EEXIST);
  ::unlink(path.c_str());
}

// A client that sends nothing holds one worker, not the listener.
TEST(http_server, a_silent_client_does_not_hold_others) {
  http_server server;
  ASSERT_TRUE(server.start({*core::endpoint::parse("127.0.0.1:0")}, echo).ok());
  const auto at = server.bound().at(0);
  std::vector<int> silent;
  for (int i = 0; i < 4; ++i) {
    silent.push_back(::socket(AF_INET, SOCK_STREAM, 0));
    ASSERT_EQ(::connect(silent.back(), at.sockaddr_pointer(), at.length), 0);
    ::send(silent.back(), "GET /health", 11, 0);
  }
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(http_get(at, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").substr(0, 12),
              "HTTP/1.1 200");
  for (int fd : silent) ::close(fd);
  server.stop();
}

}  // namespace
}  // namespace ringmta::admin
