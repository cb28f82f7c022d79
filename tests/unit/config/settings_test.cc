#include "ringmta/config/settings.h"

#include <gtest/gtest.h>

#include <map>

namespace ringmta::config {
namespace {

settings from(const std::string& toml, std::vector<std::string> flags = {}) {
  return load_from(toml, toml.empty() ? "" : "test.toml", flags);
}

std::string error_of(const std::string& toml, std::vector<std::string> flags = {}) {
  try {
    from(toml, flags);
  } catch (const error& problem) {
    return problem.what();
  }
  return "no error";
}

TEST(settings, safe_defaults) {
  const auto s = from("");
  ASSERT_EQ(s.listen.size(), 1u);
  EXPECT_EQ(s.listen[0].to_string(), "0.0.0.0:25");
  EXPECT_EQ(s.message_bytes_max, 50ull << 20);
  EXPECT_FALSE(s.unsafe_no_fsync);
  EXPECT_TRUE(s.relay_domains.empty()) << "no open relay by default";
  ASSERT_EQ(s.mynetworks.size(), 2u);
  EXPECT_EQ(s.mynetworks[0].to_string(), "127.0.0.0/8");
  EXPECT_EQ(s.bare_line_endings, bare_line_ending_policy::reject);
  EXPECT_FALSE(s.hostname.empty());
}

TEST(settings, file_values_are_applied) {
  const auto s = from(R"(
[server]
listen = ["127.0.0.1:2525", "[::1]:2525"]
hostname = "MX.Example.COM"
shards = 2
[limits]
max_message_size = "10M"
max_recipients = 50
[timeouts]
command = "5m"
[relay]
relay_domains = ["example.com"]
[relay.routes]
"example.org" = "192.0.2.7:2526"
[queue]
retry_schedule = ["1m", "10m"]
)");
  ASSERT_EQ(s.listen.size(), 2u);
  EXPECT_EQ(s.listen[1].to_string(), "[::1]:2525");
  EXPECT_EQ(s.hostname, "mx.example.com");
  EXPECT_EQ(s.shards, 2u);
  EXPECT_EQ(s.message_bytes_max, 10ull << 20);
  EXPECT_EQ(s.recipients_max, 50u);
  EXPECT_EQ(s.timeout_command_s, 300u);
  ASSERT_EQ(s.routes.size(), 1u);
  EXPECT_EQ(s.routes[0].destination, "example.org");
  EXPECT_EQ(s.routes[0].host, "192.0.2.7");
  EXPECT_EQ(s.routes[0].port, 2526);
  EXPECT_EQ(s.retry_schedule_s, (std::vector<std::uint32_t>{60, 600}));
}

TEST(settings, flags_override_file) {
  const auto s = from("[server]\nlisten = [\"127.0.0.1:2525\"]\n[limits]\nmax_recipients = 5\n",
                      {"--listen", "127.0.0.2:26", "--listen=127.0.0.3:27", "--max-recipients",
                       "7", "--unsafe-no-fsync", "--mynetworks", "10.0.0.0/8,192.0.2.0/24",
                       "--spool", "/tmp/q"});
  ASSERT_EQ(s.listen.size(), 2u);
  EXPECT_EQ(s.listen[0].to_string(), "127.0.0.2:26");
  EXPECT_EQ(s.listen[1].to_string(), "127.0.0.3:27");
  EXPECT_EQ(s.recipients_max, 7u);
  EXPECT_TRUE(s.unsafe_no_fsync);
  ASSERT_EQ(s.mynetworks.size(), 2u);
  EXPECT_EQ(s.mynetworks[1].to_string(), "192.0.2.0/24");
  EXPECT_EQ(s.spool_dir, "/tmp/q");
  EXPECT_EQ(from("", {"--greeting-delay", "1500ms"}).greeting_delay_ms, 1500u);
  EXPECT_EQ(from("", {"--shards", "3", "--shards", "5"}).shards, 5u);  // the last one wins
  EXPECT_EQ(from("", {"--greeting-delay", "2s"}).greeting_delay_ms, 2000u);
}

TEST(settings, errors_name_file_line_key_and_problem) {
  EXPECT_EQ(error_of("[limits]\n\nmax_message_size = \"lots\"\n"),
            "test.toml:3: limits.max_message_size: expected a byte size such as 52428800, "
            "64k or 50M, got 'lots'");
  EXPECT_EQ(error_of("[server]\nlisten = \"localhost:25\"\n"),
            "test.toml:2: server.listen: expected an address and port such as 127.0.0.1:25 or "
            "[::1]:25, got 'localhost:25'");
  EXPECT_EQ(error_of("[server]\nlisen = \"127.0.0.1:25\"\n"),
            "test.toml:2: unknown setting 'server.lisen'");
  EXPECT_EQ(error_of("", {"--max-message-size", "-1"}),
            "command line: --max-message-size: expected a byte size such as 52428800, 64k or "
            "50M, got '-1'");
  EXPECT_NE(error_of("", {"--no-such-flag"}).find("command line:"), std::string::npos);
  EXPECT_NE(error_of("[server\n").find("test.toml:1:"), std::string::npos);
  EXPECT_EQ(error_of("", {"--bare-line-endings", "accept"}),
            "command line: --bare-line-endings: expected reject or normalize, got 'accept'");
  EXPECT_EQ(error_of("", {"--max-hops", "0"}),
            "command line: --max-hops: expected a count of 1 or more (0 would refuse every "
            "message), got '0'");
  EXPECT_EQ(error_of("", {"--route", "example.com"}),
            "command line: --route: expected DOMAIN=HOST:PORT, got 'example.com'");
}

TEST(settings, outbound_tls_policies_from_file_and_flags) {
  const auto defaults = from("");
  EXPECT_EQ(defaults.relay_tls_policy, tls_policy::opportunistic);
  EXPECT_TRUE(defaults.relay_tls_policy_for.empty());
  EXPECT_EQ(defaults.relay_tls_ca_file, "");
  const auto file = from(R"(
[relay.tls]
policy = "required"
ca_file = "/etc/ringmta/ca.pem"
[relay.tls.policy_for]
"Bank.Example" = "verify"
".legacy.example" = "none"
)");
  EXPECT_EQ(file.relay_tls_policy, tls_policy::required);
  EXPECT_EQ(file.relay_tls_ca_file, "/etc/ringmta/ca.pem");
  ASSERT_EQ(file.relay_tls_policy_for.size(), 2u);
  std::map<std::string, tls_policy> by_domain;
  for (const auto& entry : file.relay_tls_policy_for) by_domain[entry.domain] = entry.policy;
  EXPECT_EQ(by_domain, (std::map<std::string, tls_policy>{{"bank.example", tls_policy::verify},
                                                          {".legacy.example", tls_policy::none}}));
  const auto flags = from("", {"--tls-policy", "verify", "--tls-ca", "/tmp/ca.pem",
                               "--tls-policy-for", "a.example=none",
                               "--tls-policy-for=b.example=opportunistic"});
  EXPECT_EQ(flags.relay_tls_policy, tls_policy::verify);
  EXPECT_EQ(flags.relay_tls_ca_file, "/tmp/ca.pem");
  ASSERT_EQ(flags.relay_tls_policy_for.size(), 2u);
  EXPECT_EQ(flags.relay_tls_policy_for[1].domain, "b.example");
  EXPECT_EQ(flags.relay_tls_policy_for[1].policy, tls_policy::opportunistic);
  // Postfix's level names are understood too.
  EXPECT_EQ(from("", {"--tls-policy", "encrypt"}).relay_tls_policy, tls_policy::required);
  EXPECT_EQ(from("", {"--tls-policy", "may"}).relay_tls_policy, tls_policy::opportunistic);
}

TEST(settings, outbound_tls_errors_name_where_and_what) {
  EXPECT_EQ(error_of("[relay.tls]\npolicy = \"secure\"\n"),
            "test.toml:2: relay.tls.policy: expected none, opportunistic, required or verify, "
            "got 'secure'");
  EXPECT_EQ(error_of("[relay.tls]\npolicy = \"verify\"\npolicie = \"none\"\n"),
            "test.toml:3: unknown setting 'relay.tls.policie'");
  EXPECT_EQ(error_of("[relay.tls.policy_for]\n\"bank..example\" = \"verify\"\n"),
            "test.toml:2: relay.tls.policy_for: expected a domain name such as example.com, "
            "got 'bank..example'");
  EXPECT_EQ(error_of("", {"--tls-policy-for", "bank.example"}),
            "command line: --tls-policy-for: expected DOMAIN=POLICY, got 'bank.example'");
  EXPECT_EQ(error_of("", {"--tls-policy-for", "bank.example=strict"}),
            "command line: --tls-policy-for: expected none, opportunistic, required or verify, "
            "got 'strict'");
  EXPECT_EQ(error_of("[relay.tlz]\npolicy = \"none\"\n"),
            "test.toml:1: unknown setting 'relay.tlz'");
}

TEST(settings, load_reports_unreadable_file) {
  const char* argv[] = {"ringmta", "--config", "/nonexistent/ringmta.toml"};
  try {
    load(3, argv);
    FAIL() << "no error";
  } catch (const error& problem) {
    EXPECT_EQ(std::string(problem.what()),
              "/nonexistent/ringmta.toml: cannot read: No such file or directory");
  }
}

TEST(settings, help_lists_every_flag_with_its_key) {
  const auto help = help_text();
  EXPECT_NE(help.find("--listen ADDR:PORT"), std::string::npos);
  EXPECT_NE(help.find("[spool.dir]"), std::string::npos);
  EXPECT_NE(help.find("--max-message-size BYTES"), std::string::npos);
}

}  // namespace
}  // namespace ringmta::config

namespace ringmta::config {
namespace {

// conf/ringmta.toml documents the defaults: loading it must give exactly the built-in ones.
TEST(settings, shipped_config_file_states_the_defaults) {
  const char* argv[] = {"ringmta", "--config", RINGMTA_SOURCE_ROOT "/conf/ringmta.toml"};
  const auto file = load(3, argv);
  const auto builtin = load_from({}, {}, {});
  EXPECT_EQ(file.listen[0].to_string(), builtin.listen[0].to_string());
  EXPECT_EQ(file.shards, builtin.shards);
  EXPECT_EQ(file.pin_threads, builtin.pin_threads);
  EXPECT_EQ(file.mynetworks.size(), builtin.mynetworks.size());
  EXPECT_EQ(file.message_bytes_max, builtin.message_bytes_max);
  EXPECT_EQ(file.recipients_max, builtin.recipients_max);
  EXPECT_EQ(file.sessions_per_shard_max, builtin.sessions_per_shard_max);
  EXPECT_EQ(file.sessions_per_client_max, builtin.sessions_per_client_max);
  EXPECT_EQ(file.errors_per_session_max, builtin.errors_per_session_max);
  EXPECT_EQ(file.timeout_command_s, builtin.timeout_command_s);
  EXPECT_EQ(file.timeout_data_block_s, builtin.timeout_data_block_s);
  EXPECT_EQ(file.shutdown_grace_s, builtin.shutdown_grace_s);
  EXPECT_EQ(file.greeting_delay_ms, builtin.greeting_delay_ms);
  EXPECT_EQ(file.spool_dir, builtin.spool_dir);
  EXPECT_EQ(file.spool_segment_bytes, builtin.spool_segment_bytes);
  EXPECT_EQ(file.queue_lifetime_s, builtin.queue_lifetime_s);
  EXPECT_EQ(file.timeout_connect_s, builtin.timeout_connect_s);
  EXPECT_EQ(file.retry_schedule_s, builtin.retry_schedule_s);
  EXPECT_EQ(file.default_destination_limits.connections_max,
            builtin.default_destination_limits.connections_max);
  EXPECT_EQ(file.admin_listen[0].to_string(), builtin.admin_listen[0].to_string());
  EXPECT_EQ(file.greeting_text, builtin.greeting_text);
  EXPECT_EQ(file.relay_tls_policy, builtin.relay_tls_policy);
  EXPECT_EQ(file.relay_tls_ca_file, builtin.relay_tls_ca_file);
  EXPECT_EQ(file.relay_tls_policy_for.size(), builtin.relay_tls_policy_for.size());
}

}  // namespace
}  // namespace ringmta::config
