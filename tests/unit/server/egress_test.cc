// [[source]], [[pool]] and the sender_domain shaping key: parsing and start-up errors naming
// FILE:LINE and the key, pool choice (sender exact, suffix, default), smooth weighted round
// robin, queue names, and the bind check of source addresses.
#include "ringmta/server/egress.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "ringmta/config/settings.h"

namespace ringmta::server {
namespace {

config::settings parse(const std::string& toml, std::vector<std::string> flags = {}) {
  return config::load_from(toml, "egress.toml", flags);
}

std::string error_of(const std::string& toml, bool bind = false) {
  try {
    egress_table table(parse(toml), bind);
  } catch (const config::error& problem) {
    return problem.what();
  }
  return "no error";
}

constexpr const char* pools = R"([[source]]
name = "a"
address = "127.0.0.2"
ehlo_name = "out-a.example.net"

[[source]]
name = "b"
address = "127.0.0.3"

[[source]]
name = "c"
address = "127.0.0.4"

[[pool]]
name = "default"
sources = ["a"]

[[pool]]
name = "bulk"
sources = ["a:5", "b", "c:1"]

[[shaping]]
sender_domain = "news.example.com"
pool = "bulk"

[[shaping]]
sender_domain = ".example.org"
pool = "bulk"
)";

TEST(egress, parses_sources_pools_and_sender_entries) {
  const auto settings = parse(pools);
  ASSERT_EQ(settings.sources.size(), 3u);
  EXPECT_EQ(settings.sources[0].address.address_string(), "127.0.0.2");
  EXPECT_EQ(settings.sources[0].ehlo_name, "out-a.example.net");
  EXPECT_EQ(settings.sources[0].origin, "egress.toml:1");
  ASSERT_EQ(settings.pools.size(), 2u);
  EXPECT_EQ(settings.pools[1].sources,
            (std::vector<std::pair<std::string, std::uint32_t>>{{"a", 5}, {"b", 1}, {"c", 1}}));
  const egress_table table(settings);  // binds 127.0.0.2-4: loopback, always local
  EXPECT_EQ(table.pools().size(), 2u);
  EXPECT_EQ(table.pool_for_sender("news.example.com"), table.pool_named("bulk"));
  EXPECT_EQ(table.pool_for_sender("a.b.example.org"), table.pool_named("bulk"));
  EXPECT_EQ(table.pool_for_sender("example.org"), table.pool_named("default"));  // .x: below
  EXPECT_EQ(table.pool_for_sender("other.net"), table.pool_named("default"));
  EXPECT_EQ(table.pool_for_sender(""), table.pool_named("default"));  // null sender
}

TEST(egress, flags_match_tables_and_render_back) {
  const auto flags = parse("", {"--source", "a 127.0.0.2 out-a.example.net", "--source",
                                "b 127.0.0.3", "--pool", "bulk a:5 b", "--shaping",
                                "from:news.example.com pool=bulk"});
  ASSERT_EQ(flags.sources.size(), 2u);
  EXPECT_EQ(flags.sources[0].ehlo_name, "out-a.example.net");
  EXPECT_EQ(flags.pools[0].sources.size(), 2u);
  EXPECT_EQ(flags.shaping[0].sender_domain, "news.example.com");
  EXPECT_EQ(flags.shaping[0].pool, "bulk");
  // check-config's rendering loads back to the same values
  const auto again = parse(config::render(flags));
  EXPECT_EQ(config::show(again, "source"), config::show(flags, "source"));
  EXPECT_EQ(config::show(again, "pool"), config::show(flags, "pool"));
  EXPECT_EQ(config::show(again, "shaping"), config::show(flags, "shaping"));
}

TEST(egress, bad_config_names_file_line_and_key) {
  EXPECT_EQ(error_of("[[pool]]\nname = \"p\"\nsources = [\"nope\"]\n"),
            "egress.toml:1: pool.sources: unknown source 'nope'");
  EXPECT_EQ(error_of("[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\n"
                     "[[source]]\nname = \"a\"\naddress = \"127.0.0.3\"\n"),
            "egress.toml:4: source.name: 'a' is defined twice");
  EXPECT_EQ(error_of("[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\n"
                     "[[pool]]\nname = \"p\"\nsources = [\"a\"]\n"
                     "[[pool]]\nname = \"p\"\nsources = [\"a\"]\n"),
            "egress.toml:7: pool.name: 'p' is defined twice");
  EXPECT_EQ(error_of("[[source]]\nname = \"a\"\naddress = \"127.0.0.2\"\n"
                     "[[pool]]\nname = \"p\"\nsources = [\"a\", \"a:2\"]\n"),
            "egress.toml:4: pool.sources: 'a' is listed twice");
  EXPECT_EQ(error_of("[[shaping]]\nsender_domain = \"x.example\"\npool = \"p\"\n"),
            "egress.toml:1: shaping.pool: unknown pool 'p'");
  // 192.0.2.1 (TEST-NET-1) is on no interface here: the bind check refuses it
  const auto unbindable = error_of("[[source]]\nname = \"a\"\naddress = \"192.0.2.1\"\n", true);
  EXPECT_NE(unbindable.find("egress.toml:1: source.address: cannot bind 192.0.2.1"),
            std::string::npos)
      << unbindable;
}

TEST(egress, bad_fields_are_parse_errors) {
  const auto load_error = [](const std::string& toml) {
    try {
      parse(toml);
    } catch (const config::error& problem) {
      return std::string(problem.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(load_error("[[source]]\nname = \"A b\"\naddress = \"127.0.0.2\"\n")
                .find("egress.toml:2: source.name: expected a name"),
            std::string::npos);
  EXPECT_NE(load_error("[[source]]\nname = \"a\"\naddress = \"127.0.0.2:25\"\n")
                .find("egress.toml:3: source.address: expected a local address"),
            std::string::npos);
  EXPECT_NE(load_error("[[source]]\nname = \"a\"\n").find("egress.toml:1: source: missing address"),
            std::string::npos);
  EXPECT_NE(load_error("[[pool]]\nname = \"p\"\nsources = [\"a:0\"]\n")
                .find("egress.toml:3: pool.sources: expected a whole number from 1 to 10000"),
            std::string::npos);
  EXPECT_NE(load_error("[[shaping]]\nsender_domain = \"x.example\"\npool = \"p\"\n"
                       "max_connections = 3\n")
                .find("egress.toml:1: shaping: a sender_domain entry sets only pool"),
            std::string::npos);
  EXPECT_NE(load_error("[[shaping]]\ndomain = \"x.example\"\npool = \"p\"\n")
                .find("pool is chosen per sender"),
            std::string::npos);
}

TEST(egress, smooth_weighted_round_robin_is_exact_and_interleaved) {
  const egress_table table(parse(pools), false);
  egress_picker picker;
  picker.reset(table);
  const auto bulk = *table.pool_named("bulk");
  std::string order;
  for (int i = 0; i < 7; ++i) order += table.sources()[picker.pick(table, bulk)].name;
  EXPECT_EQ(order, "aabacaa");  // nginx's sequence for 5:1:1, never a run of five
  std::map<std::string, int> counts;
  for (int i = 0; i < 700; ++i) ++counts[table.sources()[picker.pick(table, bulk)].name];
  EXPECT_EQ(counts, (std::map<std::string, int>{{"a", 500}, {"b", 100}, {"c", 100}}));
}

TEST(egress, queue_names_carry_the_source) {
  EXPECT_EQ(egress_destination("example.com", "ip2"), "example.com@ip2");
  EXPECT_EQ(egress_destination("example.com", ""), "example.com");
  EXPECT_EQ(split_egress("example.com@ip2").first, "example.com");
  EXPECT_EQ(split_egress("example.com@ip2").second, "ip2");
  EXPECT_EQ(split_egress("mx1.g.test,mx2.g.test@ip2").first, "mx1.g.test,mx2.g.test");
  EXPECT_TRUE(split_egress("example.com").second.empty());
}

// An operator naming a domain reaches every source's queue of exactly that domain; a name
// with its source reaches that queue only.
TEST(egress, operator_names_reach_every_source_of_the_domain) {
  using names = std::vector<std::string>;
  const names sources{"s1", "s2"};
  const names existing{"example.com@s1",    "example.com@gone",    "example.com.au@s1",
                       "mail.example.com@s2", "other.test@s1",     "example.com",
                       "[192.0.2.1]@s1"};
  EXPECT_EQ(queues_of("example.com", sources, existing),
            (names{"example.com", "example.com@gone", "example.com@s1", "example.com@s2"}));
  EXPECT_EQ(queues_of("example.com@s2", sources, existing), (names{"example.com@s2"}));
  EXPECT_EQ(queues_of("example.com@gone", sources, existing), (names{"example.com@gone"}));
  EXPECT_EQ(queues_of("example", sources, existing), (names{"example", "example@s1",
                                                            "example@s2"}));
  EXPECT_EQ(queues_of("[192.0.2.1]", {}, existing), (names{"[192.0.2.1]", "[192.0.2.1]@s1"}));
  EXPECT_EQ(queues_of("example.com", {}, {}), (names{"example.com"}));  // no pools: as before
}

}  // namespace
}  // namespace ringmta::server
