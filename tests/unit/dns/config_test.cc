#include "ringmta/dns/config.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace ringmta::dns {
namespace {

TEST(dns_config, parses_resolv_conf_nameservers_and_options) {
  resolver_config config;
  const auto parsed = parse_resolv_conf(
      "# generated\n"
      "search example.org\n"
      "nameserver 192.0.2.53\n"
      "  nameserver\t2001:db8::53   # trailing comment\n"
      "nameserver fe80::1%eth0\n"
      "; another comment\n"
      "options timeout:3 attempts:4 rotate ndots:2\n",
      config);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(config.servers.size(), 3u);
  EXPECT_EQ(config.servers[0].to_string(), "192.0.2.53:53");
  EXPECT_EQ(config.servers[1].to_string(), "[2001:db8::53]:53");
  EXPECT_EQ(config.servers[2].ip.family, 6);
  EXPECT_EQ(config.timeout_ms, 3000u);
  EXPECT_EQ(config.attempts, 4u);
  EXPECT_TRUE(config.rotate);
  EXPECT_EQ(config.validate(), "");
}

TEST(dns_config, caps_options_like_glibc_and_ignores_junk) {
  resolver_config config;
  ASSERT_TRUE(parse_resolv_conf("nameserver 127.0.0.1\noptions timeout:99 attempts:0 "
                                "timeout:x\nnameserver not-an-address\n",
                                config)
                  .ok());
  EXPECT_EQ(config.servers.size(), 1u);
  EXPECT_EQ(config.timeout_ms, 30000u);
  EXPECT_EQ(config.attempts, 1u);
}

TEST(dns_config, keeps_at_most_servers_max) {
  std::string text;
  for (int i = 1; i <= 12; ++i) text += "nameserver 127.0.0." + std::to_string(i) + "\n";
  resolver_config config;
  ASSERT_TRUE(parse_resolv_conf(text, config).ok());
  EXPECT_EQ(config.servers.size(), servers_max);
}

TEST(dns_config, rejects_text_without_nameserver) {
  resolver_config config;
  config.servers.push_back(server_address{ip_address::v4(127, 0, 0, 1), 5353});
  const auto parsed = parse_resolv_conf("search example.org\noptions rotate\n", config);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error(), EINVAL);
  EXPECT_EQ(config.servers.size(), 1u);  // untouched on failure
}

TEST(dns_config, parses_resolver_addresses_with_ports) {
  auto v4 = server_address::parse("127.0.0.1:5353");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4.value().port, 5353);
  EXPECT_EQ(v4.value().ip, ip_address::v4(127, 0, 0, 1));
  auto bare = server_address::parse("10.1.2.3");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare.value().port, 53);
  auto v6 = server_address::parse("[::1]:10053");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6.value().port, 10053);
  EXPECT_EQ(v6.value().to_string(), "[::1]:10053");
  auto v6_bare = server_address::parse("::1");
  ASSERT_TRUE(v6_bare.ok());
  EXPECT_EQ(v6_bare.value().port, 53);
  for (const char* bad : {"", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "[::1", "[::1]x",
                          "[::1]:", "host.example:53", "1.2.3.4:53x", "300.1.1.1"}) {
    EXPECT_FALSE(server_address::parse(bad).ok()) << bad;
  }
}

TEST(dns_config, validate_names_the_bad_setting) {
  resolver_config config;
  EXPECT_NE(config.validate().find("no DNS server"), std::string::npos);
  config.servers.push_back(server_address{ip_address::v4(127, 0, 0, 1), 53});
  EXPECT_EQ(config.validate(), "");
  config.edns_payload_bytes = 100;
  EXPECT_NE(config.validate().find("EDNS"), std::string::npos);
  config.edns_payload_bytes = 0;
  config.ipv4 = config.ipv6 = false;
  EXPECT_NE(config.validate().find("IPv4"), std::string::npos);
}

TEST(dns_config, loads_a_resolv_conf_file) {
  char path[] = "/tmp/ringmta-resolv-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = "nameserver 127.0.0.53\noptions attempts:3\n";
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  resolver_config config;
  ASSERT_TRUE(load_resolv_conf(path, config).ok());
  std::remove(path);
  ASSERT_EQ(config.servers.size(), 1u);
  EXPECT_EQ(config.servers[0].to_string(), "127.0.0.53:53");
  EXPECT_EQ(config.attempts, 3u);
  const auto missing = load_resolv_conf("/nonexistent/resolv.conf", config);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(), ENOENT);
}

}  // namespace
}  // namespace ringmta::dns
