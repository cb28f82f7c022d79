// [[shaping]]: parsing (file:line:key errors), layering (mx < .suffix < exact), MX patterns,
// site names, and the scheduler using a destination's own retry schedule and lifetime.
#include "ringmta/server/shaping.h"

#include <gtest/gtest.h>

#include <iterator>
#include <memory>
#include <string_view>
#include <vector>

#include "ringmta/config/settings.h"
#include "ringmta/queue/scheduler.h"

namespace ringmta::server {
namespace {

config::settings parse(const std::string& toml, std::vector<std::string> flags = {}) {
  return config::load_from(toml, "shaping.toml", flags);
}

std::string error_of(const std::string& toml, std::vector<std::string> flags = {}) {
  try {
    parse(toml, flags);
  } catch (const config::error& problem) {
    return problem.what();
  }
  return "no error";
}

constexpr const char* three_layers = R"([queue]
max_connections_per_destination = 20
max_messages_per_connection = 100

[[shaping]]
mx = "*.google.com"
max_connections = 5
max_messages_per_second = 10
reply_timeout = "1m"
ehlo_name = "bulk.example.net"

[[shaping]]
domain = ".example.org"
max_messages_per_connection = 7
retry_schedule = ["10s", "20s"]
tls_policy = "required"

[[shaping]]
domain = "a.example.org"
max_connections = 2
lifetime = "1h"
connect_timeout = "5s"
)";

TEST(shaping, layers_most_specific_last) {
  const auto table = build_shaping_table(parse(three_layers));
  ASSERT_EQ(table->size(), 3u);
  const auto plain = table->for_domain("other.net");
  EXPECT_EQ(plain.limits.connections_max, 20u);
  EXPECT_EQ(plain.limits.messages_per_connection_max, 100u);
  EXPECT_EQ(plain.limits.retry_delays_ms, nullptr);
  EXPECT_TRUE(plain.ehlo_name.empty());
  EXPECT_FALSE(plain.tls_set);

  const auto a = table->for_domain("a.example.org");  // exact over .suffix
  EXPECT_EQ(a.limits.connections_max, 2u);
  EXPECT_EQ(a.limits.messages_per_connection_max, 7u) << "the suffix layer below still counts";
  ASSERT_NE(a.limits.retry_delays_ms, nullptr);
  EXPECT_EQ(*a.limits.retry_delays_ms, (std::vector<std::int64_t>{10'000, 20'000}));
  EXPECT_EQ(a.limits.lifetime_max_ms, 3'600'000);
  EXPECT_EQ(a.timeout_connect_ms, 5'000u);
  EXPECT_TRUE(a.tls_set);
  EXPECT_EQ(a.tls, outbound::tls_policy::required);
  EXPECT_EQ(a.origin, "shaping.toml:12,shaping.toml:18");

  const auto b = table->for_domain("b.example.org");
  EXPECT_EQ(b.limits.connections_max, 20u);
  EXPECT_EQ(b.limits.messages_per_connection_max, 7u);
  EXPECT_EQ(table->for_domain("example.org").limits.messages_per_connection_max, 100u)
      << ".example.org covers subdomains only";

  const std::vector<std::string_view> google = {"alt1.aspmx.l.google.com", "aspmx.l.google.com"};
  const auto site = table->for_destination("customer.com", google);
  EXPECT_EQ(site.limits.connections_max, 5u);
  EXPECT_EQ(site.limits.rate_messages, 10u);
  EXPECT_EQ(site.timeout_reply_ms, 60'000u);
  EXPECT_EQ(site.ehlo_name, "bulk.example.net");
  const std::vector<std::string_view> mixed = {"aspmx.l.google.com", "mx.other.net"};
  EXPECT_EQ(table->for_destination("customer.com", mixed).limits.connections_max, 20u)
      << "every MX host must match the pattern";
  const auto both = table->for_destination("a.example.org", google);
  EXPECT_EQ(both.limits.connections_max, 2u) << "the domain beats its MX site";
  EXPECT_EQ(both.limits.rate_messages, 10u) << "what the domain leaves unset comes from the site";
  EXPECT_EQ(both.ehlo_name, "bulk.example.net");
}

TEST(shaping, mx_patterns_and_site_names) {
  EXPECT_TRUE(mx_pattern_matches("*.google.com", "aspmx.l.google.com"));
  EXPECT_TRUE(mx_pattern_matches("*.google.com", "ASPMX.L.Google.COM."));
  EXPECT_FALSE(mx_pattern_matches("*.google.com", "google.com"));
  EXPECT_FALSE(mx_pattern_matches("*.google.com", "mx.google.com.evil.net"));
  EXPECT_TRUE(mx_pattern_matches("mx*.example.net", "mx12.example.net"));
  EXPECT_TRUE(mx_pattern_matches("mx.example.net", "mx.example.net"));
  EXPECT_FALSE(mx_pattern_matches("mx.example.net", "mx2.example.net"));
  const std::vector<std::string_view> one = {"b.mx.", "A.mx", "b.mx"};
  EXPECT_EQ(site_name(one), "a.mx,b.mx");
}

TEST(shaping, flags_and_errors_name_file_line_key) {
  const auto s = parse("", {"--shaping", "mx:*.yahoodns.net max_connections=3 retry_schedule=1m:5m",
                            "--shaping", ".example.com ehlo_name=out.example.net"});
  ASSERT_EQ(s.shaping.size(), 2u);
  EXPECT_EQ(s.shaping[0].mx, "*.yahoodns.net");
  EXPECT_EQ(s.shaping[0].connections_max, 3u);
  EXPECT_EQ(s.shaping[0].retry_schedule_s, (std::vector<std::uint32_t>{60, 300}));
  EXPECT_EQ(s.shaping[1].domain, ".example.com");

  EXPECT_EQ(error_of("[[shaping]]\ndomain = \"x.org\"\nmax_connections = 0\n"),
            "shaping.toml:3: shaping.max_connections: expected at least 1 connection, got '0'");
  EXPECT_EQ(error_of("[[shaping]]\ndomain = \"x.org\"\nspeed = 3\n").rfind(
                "shaping.toml:3: shaping.speed: unknown field", 0),
            0u);
  EXPECT_EQ(error_of("\n[[shaping]]\nmax_connections = 2\n"),
            "shaping.toml:2: shaping: give exactly one of domain (example.com, .example.com), "
            "mx (*.host) or sender_domain");
  EXPECT_EQ(error_of("[[shaping]]\nmx = \"*.a..b\"\n"),
            "shaping.toml:2: shaping.mx: expected an MX host pattern such as *.google.com, "
            "got '*.a..b'");
  EXPECT_EQ(error_of("[[shaping]]\ndomain = \"x.org\"\ntls_policy = \"maybe\"\n"),
            "shaping.toml:3: shaping.tls_policy: expected none, opportunistic, required or "
            "verify, got 'maybe'");
  EXPECT_EQ(error_of("[[shaping]]\ndomain = \"x.org\"\nreply_timeout = \"0s\"\n"),
            "shaping.toml:3: shaping.reply_timeout: expected a duration from 1s to 1d, got '0s'");
  EXPECT_EQ(error_of("", {"--shaping", "x.org max_connections"}),
            "command line: --shaping: expected KEY=VALUE after the match, got 'max_connections'");
}

// The scheduler takes a destination's limits from the hook and uses its own retry schedule
// and lifetime for that destination only.
TEST(shaping, scheduler_uses_per_destination_retry_and_lifetime) {
  const auto table = build_shaping_table(parse(three_layers));
  queue::scheduler_config config;
  config.jitter_permille = 0;
  config.limits_for = [&](std::string_view name) { return table->for_domain(name).limits; };
  queue::scheduler scheduler(config);
  const std::int64_t t0 = 1'700'000'000'000;
  const std::uint16_t recipient = 0;
  for (const char* name : {"a.example.org", "other.net"}) {
    queue::job_spec spec{1, t0 / 1000, std::span(&recipient, 1)};
    ASSERT_EQ(scheduler.add(name, spec, t0).status, queue::add_status::added);
  }
  std::vector<queue::connect_request> requests;
  scheduler.poll(t0, requests);
  ASSERT_EQ(requests.size(), 2u);
  std::int64_t shaped_next = 0, plain_next = 0;
  for (const auto& request : requests) {
    const auto taken = scheduler.take_for_connection(request.connection, t0);
    ASSERT_EQ(taken.status, queue::take_status::job);
    const auto deferred = scheduler.deferred(taken.job.id, t0, {451, {4, 0, 0}, "later"});
    (request.name == "a.example.org" ? shaped_next : plain_next) = deferred.next_attempt_ms;
    scheduler.connection_closed(request.connection, t0);
  }
  EXPECT_EQ(shaped_next, t0 + 10'000) << "a.example.org: retry_schedule from .example.org";
  EXPECT_EQ(plain_next, t0 + 5 * 60'000) << "the scheduler's own schedule elsewhere";
  queue::destination_info info;
  ASSERT_TRUE(scheduler.inspect("a.example.org", info));
  EXPECT_EQ(info.limits.connections_max, 2u);
  // Past a.example.org's 1 h lifetime the next deferral expires the job; other.net's stays.
  const std::int64_t later = t0 + 3'600'000 + 1;
  requests.clear();
  scheduler.poll(later, requests);
  for (const auto& request : requests) {
    const auto taken = scheduler.take_for_connection(request.connection, later);
    ASSERT_EQ(taken.status, queue::take_status::job);
    const auto deferred = scheduler.deferred(taken.job.id, later, {451, {4, 0, 0}, "later"});
    EXPECT_EQ(deferred.status, request.name == "a.example.org"
                                   ? queue::defer_status::expired
                                   : queue::defer_status::scheduled)
        << request.name;
  }
  // A reshape (MX learned, reload) changes a live destination only.
  auto limits = table->for_domain("other.net").limits;
  limits.connections_max = 3;
  EXPECT_TRUE(scheduler.reshape("other.net", limits));
  EXPECT_FALSE(scheduler.reshape("unknown.net", limits));
  ASSERT_TRUE(scheduler.inspect("other.net", info));
  EXPECT_EQ(info.limits.connections_max, 3u);
}

// A layer sets the limits it names and keeps the others the layers below gave: the defaults'
// recipients per transaction survived no [[shaping]] entry with a limit (limits_from made a
// fresh set; ringmta-sim seed 13000100 --shards-max 3 sent 3 recipients where 1 was the limit).
TEST(shaping, a_layer_keeps_the_limits_it_does_not_name) {
  queue::destination_limits defaults = limits_from(4, 10, 0);
  defaults.recipients_per_transaction_max = 2;
  const auto table = std::make_shared<const shaping_table>(parse(three_layers), defaults);
  for (const char* name : {"a.example.org", "b.example.org", "other.net"})
    EXPECT_EQ(table->for_domain(name).limits.recipients_per_transaction_max, 2u) << name;
  const char* hosts[] = {"mx1.l.google.com"};
  const std::vector<std::string_view> mx(std::begin(hosts), std::end(hosts));
  EXPECT_EQ(table->for_destination("gmail.com", mx).limits.recipients_per_transaction_max, 2u);
  EXPECT_EQ(table->for_destination("gmail.com", mx).limits.connections_max, 5u);
}

// A layer (or a reply rule's throttle) that names no rate keeps the bucket below as it is: it
// was rebuilt from its per-second rate, so "18 per second, burst 3" became burst 18.
TEST(shaping, a_layer_naming_no_rate_keeps_the_bucket) {
  queue::destination_limits below = limits_from(4, 10, 0);
  below.rate_messages = 18;
  below.rate_period_ms = 1000;
  below.rate_burst = 3;
  const auto connections_only = layered_limits(below, 2, std::nullopt, std::nullopt);
  EXPECT_EQ(connections_only.connections_max, 2u);
  EXPECT_EQ(connections_only.messages_per_connection_max, 10u);
  EXPECT_EQ(connections_only.rate_messages, 18u);
  EXPECT_EQ(connections_only.rate_period_ms, 1000u);
  EXPECT_EQ(connections_only.rate_burst, 3u);
  const auto rated = layered_limits(below, std::nullopt, std::nullopt, 0.5);
  EXPECT_EQ(rated.connections_max, 4u);
  EXPECT_EQ(rated.rate_messages, 1u);
  EXPECT_EQ(rated.rate_period_ms, 2000u);
  EXPECT_EQ(rated.rate_burst, 1u);
}

// Reply rules: scope (domain, .suffix, mx, all), RE2 on "CODE X.Y.Z text", first match wins;
// a bad pattern is a start-up error naming the rule's file:line.
TEST(shaping, reply_rules_match_by_scope_and_pattern) {
  const auto settings = parse(R"([[reply_rule]]
domain = "y.test"
pattern = '^421 4\.7\.0 \[TSS04\]'
action = "suspend"
duration = "1h"

[[reply_rule]]
mx = "*.google.com"
pattern = '^421 4\.7\.28 '
action = "throttle"
max_connections = 2

[[reply_rule]]
pattern = 'over quota'
action = "bounce"
)");
  ASSERT_EQ(settings.reply_rules.size(), 3u);
  EXPECT_EQ(settings.reply_rules[0].duration_s, 3600u);
  EXPECT_EQ(settings.reply_rules[2].duration_s, 600u) << "the documented default";
  const auto table = build_shaping_table(settings);
  const std::vector<std::string_view> none;
  const std::vector<std::string_view> google = {"aspmx.l.google.com"};
  const char* tss04 = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred";
  ASSERT_NE(table->match_reply("y.test", none, tss04), nullptr);
  EXPECT_EQ(table->match_reply("y.test", none, tss04)->origin, "shaping.toml:1");
  EXPECT_EQ(table->match_reply("other.test", none, tss04), nullptr) << "y.test's rule only";
  const char* google_rate = "421 4.7.28 Gmail has detected an unusual rate";
  EXPECT_EQ(table->match_reply("customer.com", none, google_rate), nullptr)
      << "an mx rule needs the MX hosts";
  ASSERT_NE(table->match_reply("customer.com", google, google_rate), nullptr);
  EXPECT_EQ(table->match_reply("customer.com", google, google_rate)->action,
            config::reply_action::throttle);
  const auto* quota = table->match_reply("any.test", none, "452 4.2.2 Mailbox OVER QUOTA");
  ASSERT_NE(quota, nullptr) << "every destination, case-insensitive";
  EXPECT_EQ(quota->action, config::reply_action::bounce);
  EXPECT_EQ(table->match_reply("any.test", none, "250 2.0.0 ok"), nullptr);

  try {
    build_shaping_table(parse("\n[[reply_rule]]\npattern = '(unclosed'\n"));
    ADD_FAILURE() << "a bad RE2 pattern must not load";
  } catch (const config::error& problem) {
    EXPECT_EQ(std::string(problem.what()).rfind("shaping.toml:2: reply_rule.pattern: ", 0), 0u)
        << problem.what();
  }
  EXPECT_EQ(error_of("[[reply_rule]]\npattern = 'x'\naction = \"throttle\"\n"),
            "shaping.toml:1: reply_rule: throttle needs max_connections or "
            "max_messages_per_second");
  const auto flags = parse("", {"--reply-rule", "mx:*.yahoodns.net throttle:1:0.5 30m ^421 4"});
  ASSERT_EQ(flags.reply_rules.size(), 1u);
  EXPECT_EQ(flags.reply_rules[0].pattern, "^421 4");
  EXPECT_EQ(flags.reply_rules[0].connections_max, 1u);
  EXPECT_EQ(flags.reply_rules[0].messages_per_second_max, 0.5);
  EXPECT_EQ(flags.reply_rules[0].duration_s, 1800u);
}

// The examples shipped in conf/shaping.toml load and compile.
TEST(shaping, shipped_examples_load) {
  const char* argv[] = {"ringmta", "--config", RINGMTA_SOURCE_ROOT "/conf/shaping.toml"};
  const auto settings = config::load(3, argv);
  EXPECT_GE(settings.shaping.size(), 3u);
  EXPECT_GE(settings.reply_rules.size(), 4u);
  const auto table = build_shaping_table(settings);
  const std::vector<std::string_view> yahoo = {"mta5.am0.yahoodns.net"};
  ASSERT_NE(table->match_reply("yahoo.com", yahoo,
                               "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred"),
            nullptr);
}

}  // namespace
}  // namespace ringmta::server
