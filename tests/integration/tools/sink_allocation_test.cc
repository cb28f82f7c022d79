// ringmta-sink's message path in steady state (pipelined MAIL, RCPT, DATA, 1 KiB tagged body,
// end of data, checksum verified, id recorded) performs no heap allocation: operator new is
// counted for this whole test binary. Drives one pooled connection of a sink_shard directly,
// without sockets or rings.
#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "allocation_counter.h"

#include "loadkit/integrity.h"
#include "sink/sink.h"


namespace ringmta::sink {
namespace {

std::string transaction(std::uint64_t n) {
  std::string body;
  for (int line = 0; line < 13; ++line) body += std::string(76, char('a' + line)) + "\r\n";
  const std::string_view pieces[] = {body};
  char hex[16];
  loadkit::write_hex16(hex, loadkit::body_checksum(pieces));
  return "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
         "Subject: t\r\nX-Blast-Id: run-" + std::to_string(n) +
         "\r\nX-Blast-Checksum: xxh64=" + std::string(hex, 16) + "\r\n\r\n" + body + ".\r\n";
}

TEST(sink_allocation, steady_state_message_path_allocates_nothing) {
  sink_config config;
  config.server.hostname = config.hostname;
  sink_shard shard(config, 0, {});
  shard.reserve_ids(loadkit::id_range{"run", 0, 2000});
  std::vector<std::string> inputs;
  for (std::uint64_t n = 0; n < 1100; ++n) inputs.push_back(transaction(n));
  auto c = std::make_unique<connection>();
  c->owner = &shard;
  c->session.emplace(config.server, *c);
  c->session->start();
  const auto feed = [&](std::string_view bytes) {
    while (!bytes.empty()) {
      const std::size_t used = c->session->feed(bytes);
      bytes.remove_prefix(used);
      c->session->consume_output(c->session->output().size());
      ASSERT_FALSE(c->session->awaiting_verdict());
    }
  };
  feed("EHLO client.test\r\n");
  for (std::size_t n = 0; n < 100; ++n) feed(inputs[n]);  // warm-up
  const long before = static_cast<long>(::ringmta::testing::allocations());
  for (std::size_t n = 100; n < inputs.size(); ++n) feed(inputs[n]);
  EXPECT_EQ(static_cast<long>(::ringmta::testing::allocations()) - before, 0);
  EXPECT_EQ(shard.counters().accepted.get(), 1100u);
  EXPECT_EQ(shard.counters().integrity_ok.get(), 1100u);
  EXPECT_EQ(shard.counters().duplicates.get(), 0u);
}

}  // namespace
}  // namespace ringmta::sink
