// The resolver engine against a real DNS server: NSD started by dns_server.py on a free loopback
// port with test zones. A tiny blocking driver (poll, one connected UDP socket per server, one TCP
// connection per TCP exchange) plays the reactor's part. Skips when NSD is not installed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ringmta/core/clock.h"
#include "ringmta/dns/resolver.h"

#ifndef DNS_SERVER_SCRIPT
#error "DNS_SERVER_SCRIPT must name tests/integration/dns/dns_server.py"
#endif

namespace ringmta::dns {
namespace {

std::uint64_t now_ms() { return core::monotonic_ns() / 1'000'000; }

// NSD on loopback for the whole suite.
class dns_server {
 public:
  bool start(const std::string& spec_path) {
    if (access("/usr/sbin/nsd", X_OK) != 0) return false;
    int out[2];
    int in[2];
    if (pipe(out) != 0 || pipe(in) != 0) return false;
    _pid = fork();
    if (_pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(in[0], STDIN_FILENO);
      close(out[0]);
      close(in[1]);
      execlp("python3", "python3", DNS_SERVER_SCRIPT, "--spec", spec_path.c_str(),
             "--stop-on-stdin-eof", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    close(in[0]);
    _stdin = in[1];  // closing it (or our death) stops the server
    std::string line;
    pollfd readable{out[0], POLLIN, 0};
    const std::uint64_t deadline = now_ms() + 30'000;
    while (line.find('\n') == std::string::npos && now_ms() < deadline) {
      if (poll(&readable, 1, 200) <= 0) continue;
      char buffer[256];
      const ssize_t n = read(out[0], buffer, sizeof buffer);
      if (n <= 0) break;
      line.append(buffer, static_cast<std::size_t>(n));
    }
    close(out[0]);
    unsigned port = 0;
    if (std::sscanf(line.c_str(), "READY 127.0.0.1 %u", &port) != 1) return false;
    _port = static_cast<std::uint16_t>(port);
    return true;
  }

  void stop() {
    if (_pid <= 0) return;
    kill(_pid, SIGTERM);
    close(_stdin);
    int status = 0;
    waitpid(_pid, &status, 0);
    _pid = -1;
  }

  std::uint16_t port() const { return _port; }

 private:
  pid_t _pid = -1;
  int _stdin = -1;
  std::uint16_t _port = 0;
};

int udp_socket_to(const server_address& server) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(server.port);
  std::memcpy(&address.sin_addr, server.ip.bytes.data(), 4);
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int tcp_connect(const server_address& server) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(server.port);
  std::memcpy(&address.sin_addr, server.ip.bytes.data(), 4);
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The embedder: moves the resolver's packets over real sockets until a lookup finishes.
class socket_driver {
 public:
  explicit socket_driver(resolver& r) : _r(r) {
    for (const auto& server : r.config().servers) _udp.push_back(udp_socket_to(server));
  }
  ~socket_driver() {
    for (const int fd : _udp) close(fd);
    for (const auto& [exchange, fd] : _tcp) close(fd);
  }

  mx_result run(std::uint64_t lookup, std::uint64_t limit_ms = 20'000) {
    const std::uint64_t end = now_ms() + limit_ms;
    drain();
    while (_results.count(lookup) == 0 && now_ms() < end) {
      std::vector<pollfd> fds;
      std::vector<std::uint64_t> owners;  // server index (UDP) or exchange (TCP)
      for (std::size_t i = 0; i < _udp.size(); ++i) {
        fds.push_back(pollfd{_udp[i], POLLIN, 0});
        owners.push_back(i);
      }
      for (const auto& [exchange, fd] : _tcp) {
        fds.push_back(pollfd{fd, POLLIN, 0});
        owners.push_back(exchange);
      }
      const std::uint64_t deadline = _r.next_deadline_ms();
      const std::uint64_t now = now_ms();
      const int wait = deadline <= now ? 0 : static_cast<int>(std::min<std::uint64_t>(
                                                 deadline - now, 100));
      poll(fds.data(), fds.size(), wait);
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        if (i < _udp.size()) receive_udp(static_cast<std::uint32_t>(owners[i]));
        else receive_tcp(owners[i]);
      }
      if (now_ms() >= _r.next_deadline_ms()) _r.on_time(now_ms());
      drain();
    }
    const auto found = _results.find(lookup);
    if (found == _results.end()) {
      ADD_FAILURE() << "lookup did not finish";
      return {};
    }
    return found->second;
  }

  std::size_t tcp_connections = 0;

 private:
  void receive_udp(std::uint32_t server) {
    std::uint8_t buffer[65536];
    const ssize_t n = recv(_udp[server], buffer, sizeof buffer, 0);
    if (n > 0) _r.on_udp_packet(server, std::span(buffer, static_cast<std::size_t>(n)), now_ms());
  }

  void receive_tcp(std::uint64_t exchange) {
    std::uint8_t buffer[16384];
    const int fd = _tcp.at(exchange);
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
      _r.on_tcp_data(exchange, std::span(buffer, static_cast<std::size_t>(n)), now_ms());
      return;
    }
    close(fd);
    _tcp.erase(exchange);
    _r.on_tcp_closed(exchange, now_ms());
  }

  void drain() {
    while (action* a = _r.next_action()) {
      if (a->kind == action_kind::send && a->via == transport::udp) {
        if (send(_udp[a->server_index], a->bytes.data(), a->bytes.size(), 0) < 0)
          _failed_sends.push_back(a->exchange);
      } else if (a->kind == action_kind::send) {
        ++tcp_connections;
        const int fd = tcp_connect(_r.config().servers.at(a->server_index));
        if (fd < 0 || write(fd, a->bytes.data(), a->bytes.size()) !=
                          static_cast<ssize_t>(a->bytes.size())) {
          if (fd >= 0) close(fd);
          _failed_sends.push_back(a->exchange);
        } else {
          _tcp[a->exchange] = fd;
        }
      } else if (a->kind == action_kind::close) {
        if (const auto found = _tcp.find(a->exchange); found != _tcp.end()) {
          close(found->second);
          _tcp.erase(found);
        }
      } else {
        _results[a->lookup] = std::move(a->result);
      }
    }
    // Failures are reported after draining: the resolver's calls may not nest.
    while (!_failed_sends.empty()) {
      const auto exchange = _failed_sends.back();
      _failed_sends.pop_back();
      _r.on_send_failed(exchange, now_ms());
      drain();
    }
  }

  resolver& _r;
  std::vector<int> _udp;
  std::map<std::uint64_t, int> _tcp;
  std::vector<std::uint64_t> _failed_sends;
  std::map<std::uint64_t, mx_result> _results;
};

class dns_integration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string spec_path = "/tmp/ringmta-dns-spec-" + std::to_string(getpid()) + ".json";
    std::ofstream spec(spec_path);
    spec << R"({"zones": {
      "example.test": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.2", "mx2 A 127.0.0.3",
                       "mx2 AAAA ::1", "target MX 5 mx1"],
      "equal.test": ["@ MX 10 a", "@ MX 10 b", "@ MX 10 c", "a A 127.0.0.11", "b A 127.0.0.12",
                     "c A 127.0.0.13"],
      "nullmx.test": ["@ MX 0 ."],
      "plain.test": ["@ A 127.0.0.20"],
      "noaddr.test": ["@ MX 10 ghost", "@ MX 20 real", "real A 127.0.0.21"],
      "cname.test": ["www CNAME target.example.test."],
      "big.test": [)";
    for (int i = 0; i < 60; ++i) {
      spec << (i ? "," : "") << "\"@ MX " << i << " mail-exchanger-with-a-long-name-" << i
           << "\", \"mail-exchanger-with-a-long-name-" << i << " A 127.0.1." << i << "\"";
    }
    spec << R"(]}, "broken_zones": ["broken.test"]})";
    spec.close();
    server_ = new dns_server();
    started_ = server_->start(spec_path);
    std::remove(spec_path.c_str());
  }

  static void TearDownTestSuite() {
    server_->stop();
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    if (!started_) GTEST_SKIP() << "NSD not available (tools/bootstrap installs it)";
  }

  static resolver_config config() {
    resolver_config c;
    c.servers.push_back(server_address{ip_address::v4(127, 0, 0, 1), server_->port()});
    c.timeout_ms = 2000;
    c.attempts = 2;
    return c;
  }

  static mx_result lookup(const std::string& domain, resolver_config c = config(),
                          std::uint64_t seed = 1) {
    resolver r(std::move(c), seeded_random(seed));
    socket_driver driver(r);
    return driver.run(r.start_mx_lookup(domain, now_ms()));
  }

  static std::vector<std::string> names(const mx_result& result) {
    std::vector<std::string> out;
    for (const auto& host : result.hosts) out.push_back(host.name);
    return out;
  }

  static dns_server* server_;
  static bool started_;
};

dns_server* dns_integration::server_ = nullptr;
bool dns_integration::started_ = false;

TEST_F(dns_integration, mx_hosts_in_preference_order_with_addresses) {
  const auto result = lookup("example.test");
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_EQ(names(result), (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
  ASSERT_EQ(result.hosts[0].addresses.size(), 1u);
  EXPECT_EQ(result.hosts[0].addresses[0].to_string(), "127.0.0.2");
  ASSERT_EQ(result.hosts[1].addresses.size(), 2u);
  EXPECT_EQ(result.hosts[1].addresses[0].to_string(), "127.0.0.3");
  EXPECT_EQ(result.hosts[1].addresses[1].to_string(), "::1");
}

TEST_F(dns_integration, equal_preferences_come_in_seeded_random_order) {
  std::set<std::vector<std::string>> orders;
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    const auto result = lookup("equal.test", config(), seed);
    ASSERT_EQ(result.status, lookup_status::ok) << result.text;
    ASSERT_EQ(result.hosts.size(), 3u);
    orders.insert(names(result));
  }
  EXPECT_GT(orders.size(), 1u);
}

TEST_F(dns_integration, null_mx_is_permanent_5_1_10) {
  const auto result = lookup("nullmx.test");
  EXPECT_EQ(result.status, lookup_status::permanent_failure);
  EXPECT_STREQ(result.enhanced_code(), "5.1.10");
}

TEST_F(dns_integration, domain_without_mx_uses_its_address) {
  const auto result = lookup("plain.test");
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_TRUE(result.implicit_mx);
  ASSERT_EQ(result.hosts.size(), 1u);
  EXPECT_EQ(result.hosts[0].name, "plain.test");
  EXPECT_EQ(result.hosts[0].addresses[0].to_string(), "127.0.0.20");
}

TEST_F(dns_integration, nxdomain_is_permanent_5_1_2) {
  const auto result = lookup("nosuch.example.test");
  EXPECT_EQ(result.status, lookup_status::permanent_failure);
  EXPECT_STREQ(result.enhanced_code(), "5.1.2");
}

TEST_F(dns_integration, mx_host_without_address_is_skipped) {
  const auto result = lookup("noaddr.test");
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_EQ(names(result), (std::vector<std::string>{"real.noaddr.test"}));
}

TEST_F(dns_integration, cname_out_of_zone_is_chased) {
  const auto result = lookup("www.cname.test");
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_EQ(names(result), (std::vector<std::string>{"mx1.example.test"}));
}

TEST_F(dns_integration, large_answer_is_truncated_then_fetched_over_tcp) {
  resolver r(config(), seeded_random(1));
  socket_driver driver(r);
  const auto result = driver.run(r.start_mx_lookup("big.test", now_ms()));
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_EQ(r.counters().truncated, 1u);
  EXPECT_GE(driver.tcp_connections, 1u);
  ASSERT_EQ(result.hosts.size(), r.config().mx_hosts_max);
  EXPECT_EQ(result.hosts[0].name, "mail-exchanger-with-a-long-name-0.big.test");
  EXPECT_EQ(result.hosts[0].addresses[0].to_string(), "127.0.1.0");
  EXPECT_EQ(result.hosts[9].preference, 9);
}

TEST_F(dns_integration, broken_zone_servfail_is_temporary) {
  const auto result = lookup("broken.test");
  EXPECT_EQ(result.status, lookup_status::temporary_failure);
  EXPECT_EQ(result.failure, failure_kind::server_failure);
  EXPECT_STREQ(result.enhanced_code(), "4.4.3");
}

TEST_F(dns_integration, silent_server_times_out_then_the_next_one_answers) {
  // A bound UDP socket that never answers: a real server that drops queries.
  const int silent = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(silent, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(getsockname(silent, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const server_address silent_server{ip_address::v4(127, 0, 0, 1), ntohs(address.sin_port)};

  auto c = config();
  c.servers.insert(c.servers.begin(), silent_server);
  c.timeout_ms = 200;
  resolver r(c, seeded_random(1));
  socket_driver driver(r);
  const auto result = driver.run(r.start_mx_lookup("example.test", now_ms()));
  ASSERT_EQ(result.status, lookup_status::ok) << result.text;
  EXPECT_GE(r.counters().timeouts, 1u);

  auto only_silent = config();
  only_silent.servers = {silent_server};
  only_silent.timeout_ms = 200;
  const auto failed = lookup("example.test", only_silent);
  EXPECT_EQ(failed.status, lookup_status::temporary_failure);
  EXPECT_EQ(failed.failure, failure_kind::timeout);
  close(silent);
}

TEST_F(dns_integration, cache_serves_a_second_lookup_without_queries) {
  resolver r(config(), seeded_random(1));
  socket_driver driver(r);
  ASSERT_EQ(driver.run(r.start_mx_lookup("example.test", now_ms())).status, lookup_status::ok);
  const auto sent = r.counters().udp_sent;
  const auto again = driver.run(r.start_mx_lookup("example.test", now_ms()));
  ASSERT_EQ(again.status, lookup_status::ok);
  EXPECT_EQ(r.counters().udp_sent, sent);
  EXPECT_EQ(names(again), (std::vector<std::string>{"mx1.example.test", "mx2.example.test"}));
}

}  // namespace
}  // namespace ringmta::dns
