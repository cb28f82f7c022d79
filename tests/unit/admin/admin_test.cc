#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

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

std::string http_get(const core::endpoint& at, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_EQ(::connect(fd, at.sockaddr_pointer(), at.length), 0);
  ::send(fd, request.data(), request.size(), 0);
  std::string response;
  char chunk[4096];
  ssize_t got;
  while ((got = ::recv(fd, chunk, sizeof chunk, 0)) > 0) response.append(chunk, got);
  ::close(fd);
  return response;
}

TEST(http_server, routes_requests_and_bounds_them) {
  http_server server;
  auto started = server.start({*core::endpoint::parse("127.0.0.1:0")},
                              [](const http_request& request) {
                                if (request.path == "/health") return http_response{200, "text/plain", "ok\n"};
                                return http_response{404, "text/plain", "no\n"};
                              });
  ASSERT_TRUE(started.ok()) << started.error_text();
  const auto at = server.bound().at(0);
  ASSERT_NE(at.port(), 0);
  const auto health = http_get(at, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(health.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_NE(health.find("\r\n\r\nok\n"), std::string::npos);
  EXPECT_EQ(http_get(at, "GET /nope HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 404");
  EXPECT_EQ(http_get(at, "GARBAGE\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  EXPECT_EQ(http_get(at, "GET / HTTP/1.1\r\nX: " + std::string(20000, 'a')).substr(0, 12),
            "HTTP/1.1 431");
  server.stop();
}

}  // namespace
}  // namespace ringmta::admin
