// The messages ringmta-blast generates: for every size variant of a distribution, header block +
// body prefix + tail is a message whose X-Blast tags loadkit's scanner verifies (the checksum
// computed at start-up matches the body as sent), whose body has exactly the requested size, no
// bare CR/LF and no line needing dot-stuffing; rendering a message's header and addresses
// allocates nothing.
#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include <gtest/gtest.h>

#include "allocation_counter.h"

#include "blast/blast.h"
#include "loadkit/integrity.h"


namespace ringmta::blast {
namespace {

blast_config make_config(std::string_view sizes) {
  blast_config config;
  config.run = "unit.run";
  config.date = "Sat, 21 Nov 2026 22:00:00 +0000";
  config.from = address_pattern::parse("s{n}@blast.test");
  config.to = address_pattern::parse("r{r}-{s}@{domain}");
  prepare_bodies(config, *loadkit::parse_size_distribution(sizes));
  return config;
}

TEST(blast_message, every_size_variant_verifies_and_has_the_requested_size) {
  for (const std::string_view sizes : {"2:300", "1k:64k", "1k@9,64k@1", "79", "80", "81"}) {
    const blast_config config = make_config(sizes);
    std::uint64_t id = 0;
    for (const body_variant& body : config.bodies) {
      char header[1024];
      const std::size_t header_bytes =
          render_header(config, id, "s1@blast.test", "r0@d0.test", body, header, sizeof header);
      const std::string body_text =
          config.body_text.substr(0, body.prefix_bytes) + std::string(body.tail);
      ASSERT_EQ(body_text.size(), body.bytes) << sizes;
      ASSERT_EQ(body_text.find("\r\n."), std::string::npos);  // no dot-stuffing needed
      for (std::size_t i = 0; i < body_text.size(); ++i) {   // CRLF only
        if (body_text[i] == '\r') {
          ASSERT_EQ(body_text[i + 1], '\n') << body.bytes;
        }
        if (body_text[i] == '\n') {
          ASSERT_EQ(body_text[i - 1], '\r') << body.bytes;
        }
      }
      loadkit::message_scanner scanner;
      scanner.begin(true);
      scanner.feed({header, header_bytes});
      scanner.feed(body_text);
      const loadkit::scan_result r = scanner.finish();
      ASSERT_EQ(r.verdict, loadkit::integrity::ok) << sizes << " " << body.bytes;
      ASSERT_EQ(r.run, "unit.run");
      ASSERT_EQ(r.n, id);
      ASSERT_EQ(r.body_bytes, body.bytes);
      ++id;
    }
  }
}

TEST(blast_message, addresses_and_header_render_without_allocation) {
  const blast_config config = make_config("1k");
  char from[256], to[256], header[1024];
  const std::size_t to_bytes = config.to->render(to, sizeof to, 7, 2, 3, "example", 1);
  EXPECT_EQ(std::string_view(to, to_bytes), "r2-1@d3.example");
  const long before = static_cast<long>(::ringmta::testing::allocations());
  std::size_t total = 0;
  for (std::uint64_t id = 0; id < 1000; ++id) {
    const std::size_t n = config.from->render(from, sizeof from, id, 0, 0, "test", 0);
    total += render_header(config, id, {from, n}, {to, to_bytes}, config.bodies[0], header,
                           sizeof header);
  }
  EXPECT_EQ(static_cast<long>(::ringmta::testing::allocations()) - before, 0);
  EXPECT_GT(total, 1000u * 200u);
  EXPECT_FALSE(address_pattern::parse("{nope}@x"));
  EXPECT_FALSE(address_pattern::parse("{n@x"));
}

}  // namespace
}  // namespace ringmta::blast
