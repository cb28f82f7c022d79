#include "ringmta/config/settings.h"

#include <fmt/format.h>
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
probe_backoff_max = "2h"
delay_warning = "0"
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
  EXPECT_EQ(s.probe_backoff_max_s, 7200u);
  EXPECT_EQ(s.delay_warning_s, 0u);  // off; the default is 4h
  EXPECT_EQ(from("", {"--delay-warning", "30m"}).delay_warning_s, 1800u);
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

TEST(settings, tls_block) {
  const auto s = from("[tls]\ncert = [\"a.pem\", \"b.pem\"]\nkey = [\"a.key\", \"b.key\"]\n"
                      "listen = [\"127.0.0.1:465\"]\nmin_version = \"TLSv1.3\"\n",
                      {"--timeout-tls-handshake", "30s", "--tls-ask-client-cert"});
  EXPECT_EQ(s.tls_cert_files, (std::vector<std::string>{"a.pem", "b.pem"}));
  EXPECT_EQ(s.tls_key_files, (std::vector<std::string>{"a.key", "b.key"}));
  ASSERT_EQ(s.tls_listen.size(), 1u);
  EXPECT_EQ(s.tls_min_version, "TLS1.3");
  EXPECT_EQ(s.timeout_tls_handshake_s, 30u);
  EXPECT_TRUE(s.tls_ask_client_certificate);
  EXPECT_NE(error_of("", {"--tls-min-version", "TLS1.0"}).find("expected TLS1.2 or TLS1.3"),
            std::string::npos);
  EXPECT_NE(error_of("", {"--tls-cert", "a.pem"}).find("one key per certificate"),
            std::string::npos);
  EXPECT_NE(error_of("", {"--tls-listen", "127.0.0.1:465"}).find("needs --tls-cert"),
            std::string::npos);
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
            "test.toml:2: relay.tls.policy_for: expected a domain name such as example.com or "
            "b\xC3\xBC" "cher.example, got 'bank..example'");
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
  // Every key, whatever is added later: the file states each default.
  for (const auto& info : describe()) {
    if (info.key == "server.hostname") continue;  // the machine's name: commented out
    if (info.key == "dkim") continue;  // no key by default: [[dkim]] examples commented out
    // None by default either: [[shaping]], [[reply_rule]], [[source]] and [[pool]] examples
    // are commented out.
    if (info.key == "shaping" || info.key == "reply_rule" || info.key == "source" ||
        info.key == "pool")
      continue;
    EXPECT_EQ(show(file, info.key), show(builtin, info.key)) << info.key;
    EXPECT_TRUE(file.origins.count(info.key)) << info.key << " is not in conf/ringmta.toml";
  }
}

// [[dkim]] tables and --dkim: parsed with file:line errors; the key files are read later.
TEST(settings, dkim_tables_and_flags) {
  const auto s = load_from(R"([[dkim]]
domain = "Example.COM"
selector = "s1"
key_file = "/k/a.key"
algorithm = "ed25519"
headers = ["From", "Subject", "List-Unsubscribe"]

[[dkim]]
domain = "esp.example"
selector = "s2"
key_file = "/k/b.key"
canonicalization = "simple/simple"

[signing]
fallback = ["*=esp.example", ".customer.example=esp.example"]
platform_domains = ["esp.example"]
expire = "7d"
timestamp = false
)", "t.toml", {});
  ASSERT_EQ(s.dkim_keys.size(), 2u);
  EXPECT_EQ(s.dkim_keys[0].domain, "example.com");
  EXPECT_EQ(s.dkim_keys[0].algorithm, "ed25519");
  EXPECT_EQ(s.dkim_keys[0].headers,
            (std::vector<std::string>{"from", "subject", "list-unsubscribe"}));
  EXPECT_EQ(s.dkim_keys[0].origin, "t.toml:1");
  EXPECT_EQ(s.dkim_keys[1].canonicalization, "simple/simple");
  EXPECT_EQ(s.dkim_fallback.size(), 2u);
  EXPECT_EQ(s.dkim_fallback[1].first, ".customer.example");
  EXPECT_EQ(s.dkim_expire_s, 7u * 86400);
  EXPECT_FALSE(s.dkim_timestamp);
  const auto flags = load_from({}, {}, {"--dkim", "a.example:sel:/k/with:colon.key", "--dkim",
                                        "b.example:sel:/k/b.key"});
  ASSERT_EQ(flags.dkim_keys.size(), 2u);
  EXPECT_EQ(flags.dkim_keys[0].key_file, "/k/with:colon.key");
  EXPECT_EQ(flags.dkim_keys[1].domain, "b.example");
  EXPECT_EQ(error_of("[[dkim]]\ndomain = \"a.example\"\nselector = \"s\"\n", {}),
            "test.toml:1: dkim: missing key_file");
  EXPECT_EQ(error_of("[[dkim]]\ndomain = \"a.example\"\nselector = \"s\"\nkey_file = \"k\"\n"
                     "headers = [\"To\"]\n",
                     {}),
            "test.toml:5: dkim.headers: expected a list that includes From (RFC 6376 §5.4), got 'to'");
  EXPECT_EQ(error_of("[[dkim]]\ndomain = \"a.example\"\nselector = \"s\"\nkey_file = \"k\"\n"
                     "color = \"red\"\n",
                     {}),
            "test.toml:5: dkim.color: unknown field; use domain, selector, key_file, algorithm, "
            "headers, canonicalization");
  EXPECT_EQ(error_of("", {"--dkim", "a.example:sel"}),
            "command line: --dkim: expected DOMAIN:SELECTOR:KEYFILE, got 'a.example:sel'");
  EXPECT_EQ(error_of("", {"--dkim-fallback", "x"}),
            "command line: --dkim-fallback: expected SENDER=DOMAIN such as *=esp.example, got 'x'");
}

TEST(settings, deployment_settings) {
  const auto builtin = from("");
  EXPECT_EQ(builtin.user, "ringmta");
  EXPECT_FALSE(builtin.allow_root) << "root must be asked for";
  EXPECT_FALSE(builtin.debug_endpoints);
  EXPECT_EQ(builtin.pin_threads, pin_policy::automatic);
  const auto file = from("[server]\nuser = \"mail\"\nallow_root = true\npin_threads = false\n"
                         "[admin]\ndebug_endpoints = true\n");
  EXPECT_EQ(file.user, "mail");
  EXPECT_TRUE(file.allow_root);
  EXPECT_TRUE(file.debug_endpoints);
  EXPECT_EQ(file.pin_threads, pin_policy::off);
  const auto flags = from("", {"--user", "nobody", "--allow-root", "--pin-threads", "true"});
  EXPECT_EQ(flags.user, "nobody");
  EXPECT_TRUE(flags.allow_root);
  EXPECT_EQ(flags.pin_threads, pin_policy::on);
  EXPECT_EQ(from("", {"--pin-threads", "auto"}).pin_threads, pin_policy::automatic);
  EXPECT_NE(error_of("", {"--pin-threads", "sometimes"}).find("--pin-threads"),
            std::string::npos);
  EXPECT_NE(error_of("[server]\nuser = \"\"\n").find("test.toml:2: server.user"),
            std::string::npos);
  EXPECT_NE(error_of("", {"--user", "a:b"}).find("--user"), std::string::npos);
}

}  // namespace
}  // namespace ringmta::config

namespace ringmta::config {
namespace {

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }
std::string name_of(const std::string& key) { return key.substr(key.find('.') + 1); }
// "[section]\nname = VALUE\n", or "key = VALUE\n" for a top-level key such as dkim.
std::string toml_line(const std::string& key, const std::string& value) {
  if (key.find('.') == std::string::npos) return fmt::format("{} = {}\n", key, value);
  return fmt::format("[{}]\n{} = {}\n", section_of(key), name_of(key), value);
}

// Issue 9: "--unsafe-no-fsync=false" turned fsync off and "--proxy-protocol=false" turned
// PROXY mode on (the value after '=' was ignored).
TEST(settings, boolean_flag_values_are_honoured) {
  EXPECT_FALSE(from("", {"--unsafe-no-fsync=false"}).unsafe_no_fsync);
  EXPECT_FALSE(from("", {"--proxy-protocol=false"}).proxy_protocol);
  EXPECT_TRUE(from("", {"--proxy-protocol=true"}).proxy_protocol);
  EXPECT_EQ(from("", {"--pin-threads=false"}).pin_threads, pin_policy::off);
  EXPECT_EQ(from("", {"--pin-threads", "false"}).pin_threads, pin_policy::off);
}

// Every boolean of the table, whatever is added later: no value, =true, =false, a separate
// word, the last one winning, and the TOML key with true and false.
TEST(settings, every_boolean_accepts_no_value_true_and_false) {
  std::size_t booleans = 0;
  for (const auto& info : describe()) {
    if (info.kind != setting_kind::boolean) continue;
    ++booleans;
    SCOPED_TRACE(info.key);
    EXPECT_EQ(show(from("", {info.flag}), info.key), "true");
    EXPECT_EQ(show(from("", {info.flag + "=true"}), info.key), "true");
    EXPECT_EQ(show(from("", {info.flag + "=false"}), info.key), "false");
    EXPECT_EQ(show(from("", {info.flag, "false"}), info.key), "false");
    EXPECT_EQ(show(from("", {info.flag, "true"}), info.key), "true");
    EXPECT_EQ(show(from("", {info.flag, info.flag + "=false"}), info.key), "false");
    EXPECT_EQ(show(from("", {info.flag + "=false", info.flag}), info.key), "true");
    for (const char* value : {"true", "false"}) {
      const auto toml = fmt::format("[{}]\n{} = {}\n", section_of(info.key), name_of(info.key),
                                    value);
      EXPECT_EQ(show(from(toml), info.key), value);
      const auto quoted = fmt::format("[{}]\n{} = \"{}\"\n", section_of(info.key),
                                      name_of(info.key), value);
      EXPECT_EQ(show(from(quoted), info.key), value);
    }
    EXPECT_NE(error_of("", {info.flag + "=maybe"}).find("command line: " + info.flag + ":"),
              std::string::npos);
    EXPECT_NE(error_of(fmt::format("[{}]\n{} = 3\n", section_of(info.key), name_of(info.key)))
                  .find("test.toml:2: " + info.key + ":"),
              std::string::npos);
  }
  EXPECT_GE(booleans, 3u);
}

// Every row renders its value as TOML that loads back to the same value (check-config's
// output is itself a valid configuration).
TEST(settings, every_setting_renders_and_loads_back) {
  const auto defaults = from("");
  for (const auto& info : describe()) {
    SCOPED_TRACE(info.key);
    const auto shown = show(defaults, info.key);
    EXPECT_NE(shown, "\"(not shown)\"") << "the row needs a show function";
    EXPECT_EQ(show(from(toml_line(info.key, shown)), info.key), shown);
  }
  const auto rendered = render(from("[queue]\nretry_schedule = [\"90s\", \"2h\"]\n",
                                    {"--route", "example.org=[2001:db8::1]:2525"}));
  EXPECT_EQ(from(rendered.substr(0, rendered.size())).retry_schedule_s,
            (std::vector<std::uint32_t>{90, 7200}));
  EXPECT_NE(rendered.find("retry_schedule = [\"90s\", \"2h\"]"), std::string::npos) << rendered;
  EXPECT_NE(rendered.find("# test.toml:2"), std::string::npos) << rendered;
  EXPECT_NE(rendered.find("# command line (--route)"), std::string::npos) << rendered;
  EXPECT_EQ(from(rendered).routes.at(0).host, "2001:db8::1");
}

// Issue 9: --retry-schedule 0 and --queue-lifetime 0 aborted the daemon (exit 134). Values
// that make no sense are start-up errors naming where, the key, and what is expected.
TEST(settings, nonsensical_values_are_errors) {
  EXPECT_EQ(error_of("", {"--retry-schedule", "0"}),
            "command line: --retry-schedule: expected a duration from 1s to 30d such as 30s, "
            "5m or 2h, got '0'");
  EXPECT_EQ(error_of("[queue]\nprobe_backoff_max = \"31d\"\n"),
            "test.toml:2: queue.probe_backoff_max: expected a duration from 0s to 30d such as "
            "30s, 5m or 2h, got '31d'");
  EXPECT_EQ(error_of("[queue]\ndelay_warning = \"31d\"\n"),
            "test.toml:2: queue.delay_warning: expected a duration from 0s to 30d such as "
            "30s, 5m or 2h, got '31d'");
  EXPECT_EQ(error_of("[queue]\nlifetime = 0\n"),
            "test.toml:2: queue.lifetime: expected a duration from 1s to 365d such as 30s, 5m "
            "or 2h, got '0'");
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--timeout-command", "0"}, {"--timeout-command", "50d"},
           {"--timeout-data-block", "0"}, {"--timeout-connect", "0"}, {"--site-relearn", "0"},
           {"--max-connections-per-destination", "0"}, {"--delivery-port", "0"},
           {"--max-sessions-per-shard", "0"}, {"--max-sessions-per-shard", "4294967295"},
           {"--max-sessions-per-client", "0"}, {"--max-recipients", "0"},
           {"--max-recipients", "70000"}, {"--max-messages-per-second", "nan"},
           {"--max-messages-per-second", "inf"}, {"--max-messages-per-second", "1e300"},
           {"--max-messages-per-second", "1e-300"}, {"--relayhost", "mx.example.com:0"},
           {"--route", "example.com=192.0.2.1:0"}, {"--resolver", "127.0.0.1:0"},
           {"--spool", ""}, {"--spool-segment-size", "1T"}, {"--spool-journal-buffer-size", "63"},
           {"--spool-journal-buffer-size", "2G"}, {"--greeting-text", "a\r\n250 ok"},
           {"--log-output", "journal"}, {"--log-buffer-size", "1k"}}) {
    SCOPED_TRACE(flag + " " + value);
    EXPECT_EQ(error_of("", {flag, value}).rfind("command line: " + flag + ": expected ", 0), 0u)
        << error_of("", {flag, value});
  }
  EXPECT_EQ(error_of("", {"--log-output", "file"}),
            "command line (--log-output): log.output: 'file' needs log.file (--log-file PATH)");
  EXPECT_EQ(error_of("[server]\nlisten = []\n"),
            "test.toml:2: server.listen: no listener: give --listen ADDR:PORT");
}

// Walks every key with values at and past the usual boundaries and with garbage: each is
// accepted (and renders back) or refused with "FILE:LINE: KEY: " (or "command line: FLAG: ");
// every key refuses at least one of them. New rows are covered without editing this test.
TEST(settings, every_key_refuses_garbage_with_its_name) {
  const std::vector<std::string> probes = {
      "", "0", "1", "-1", "65535", "65536", "4294967295", "4294967296", "18446744073709551616",
      "0.5", "1e9", "nan", "garbage", "\x01", "[::1]:0", "1.2.3.4:99999", "true", "99999d"};
  for (const auto& info : describe()) {
    SCOPED_TRACE(info.key);
    std::size_t refused = 0;
    for (const auto& probe : probes) {
      const auto quoted = fmt::format("\"{}\"", probe == "\x01" ? "\\u0001" : probe);
      const auto toml = info.key.find('.') == std::string::npos  // [[dkim]]: top level
                            ? fmt::format("\n\n{} = {}\n", info.key, quoted)
                            : fmt::format("[{}]\n\n{} = {}\n", section_of(info.key),
                                          name_of(info.key), quoted);
      const auto file_error = error_of(toml);
      const auto flag_error = error_of("", {info.flag + "=" + probe});
      if (file_error == "no error" && probe.empty()) {  // CLI11 wants a value after '='
        EXPECT_NE(flag_error.find(info.flag), std::string::npos) << flag_error;
        continue;
      }
      if (file_error == "no error") {
        EXPECT_EQ(flag_error, "no error") << probe;
        EXPECT_EQ(show(from(toml), info.key), show(from("", {info.flag + "=" + probe}), info.key));
        continue;
      }
      ++refused;
      EXPECT_EQ(file_error.rfind("test.toml:3: " + info.key + ": ", 0), 0u) << file_error;
      EXPECT_EQ(flag_error.rfind("command line", 0), 0u) << flag_error;
      EXPECT_NE(flag_error.find(info.flag), std::string::npos) << flag_error;
    }
    EXPECT_GT(refused, 0u);
  }
}

TEST(settings, changed_keys_lists_what_differs) {
  const auto before = from("", {"--retry-schedule", "1m", "--listen", "127.0.0.1:25"});
  const auto after = from("", {"--retry-schedule", "2m", "--listen", "127.0.0.1:26"});
  EXPECT_EQ(changed_keys(before, after),
            (std::vector<std::string>{"server.listen", "queue.retry_schedule"}));
  EXPECT_TRUE(changed_keys(before, before).empty());
}

}  // namespace
}  // namespace ringmta::config

#include "ringmta/config/man_page.h"

namespace ringmta::config {
namespace {

TEST(settings, keep_value_restores_every_key) {
  const auto current = from("", {"--listen", "127.0.0.1:2525", "--retry-schedule", "1m,1h",
                                 "--route", "a.example=192.0.2.1:26", "--unsafe-no-fsync"});
  for (const auto& info : describe()) {
    auto next = from("");
    keep_value(next, current, info.key);
    EXPECT_EQ(show(next, info.key), show(current, info.key)) << info.key;
  }
}

TEST(man_page, defaults_come_from_the_documented_config_file) {
  const auto defaults = documented_defaults(
      "[server]\n"
      "listen = [\"0.0.0.0:25\"]   # --listen\n"
      "# hostname = \"mx.example.com\"  # --hostname; default: this machine's host name\n"
      "greeting_text = \"a # b\"   # a '#' inside a string is not a comment\n"
      "[relay.routes]                 # --route\n"
      "# \"example.org\" = \"192.0.2.10:25\"\n");
  EXPECT_EQ(defaults.at("server.listen"), "[\"0.0.0.0:25\"]");
  EXPECT_EQ(defaults.at("server.hostname"), "this machine's host name");
  EXPECT_EQ(defaults.at("server.greeting_text"), "\"a # b\"");
  EXPECT_EQ(defaults.at("relay.routes"), "an empty table");
  EXPECT_FALSE(missing_defaults("[server]\nlisten = 1\n").empty());
}

TEST(man_page, pages_escape_roff_and_list_each_setting) {
  const auto page8 = man_page(8, "[server]\nlisten = [\"0.0.0.0:25\"]\n", "9.9");
  EXPECT_NE(page8.find(".TH RINGMTA 8 \"\" \"ringmta 9.9\""), std::string::npos);
  EXPECT_NE(page8.find("\\%\\fB\\-\\-listen\\fR"), std::string::npos) << "flags unhyphenated";
  EXPECT_NE(page8.find("default \\fB[\"0.0.0.0:25\"]\\fR"), std::string::npos);
  EXPECT_NE(page8.find("RFC 5321 \\[sc]4.5.3.2.7"), std::string::npos) << "non-ASCII as glyphs";
  EXPECT_NE(page8.find("default \\fBsee conf/ringmta.toml\\fR"), std::string::npos)
      << "an undocumented key says so instead of inventing a default";
  const auto page5 = man_page(5, "[server]\nlisten = [\"0.0.0.0:25\"]\n", "9.9");
  EXPECT_NE(page5.find(".SH [server]\n.TP\n\\fBlisten\\fR = [\"0.0.0.0:25\"]"), std::string::npos);
  for (const auto& s : describe()) {
    EXPECT_NE(page8.find(s.key), std::string::npos) << s.key;
  }
}

}  // namespace
}  // namespace ringmta::config
