// packed_message (src/server/relay_internal.h): what a queued message keeps of its envelope
// and body location must unpack to exactly what was packed.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "relay_internal.h"

namespace ringmta::server {
namespace {

spool::envelope sample() {
  spool::envelope e;
  e.id = 0x0123456789abcdefULL;
  e.reverse_path = "bounces+x@sender.example";
  e.size_declared = 123456;
  e.body = spool::body_type::eight_bit_mime;
  e.smtputf8 = true;
  e.ret = spool::dsn_return::headers;
  e.envid = "env-42";
  e.recipients = {{"a@one.example", spool::notify_failure | spool::notify_delay,
                   "rfc822;a@one.example"},
                  {"b@two.example", 0, ""},
                  {"ü@drei.example", spool::notify_never, ""}};
  e.received_seconds = 1'765'000'000;
  e.client_address = "[2001:db8::1]:5000";
  e.helo = "client.example";
  return e;
}

TEST(packed_message, unpacks_the_envelope_and_body_slices_it_packed) {
  const spool::envelope envelope = sample();
  // Offsets past 4 GiB, a length near the 32-bit limit and a negative fd survive the
  // 16-byte slice encoding.
  const std::vector<spool::body_slice> body = {
      {7, 5'000'000'000ULL, 4096}, {12, 0, 0xfffffff0u}, {-1, 1, 2}};
  packed_message packed;
  packed.pack(envelope, body);
  EXPECT_EQ(packed.envelope(), envelope);
  const auto unpacked = packed.body();
  ASSERT_EQ(unpacked.size(), body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    EXPECT_EQ(unpacked[i].fd, body[i].fd) << i;
    EXPECT_EQ(unpacked[i].offset, body[i].offset) << i;
    EXPECT_EQ(unpacked[i].length, body[i].length) << i;
  }
}

TEST(packed_message, an_empty_body_and_null_reverse_path) {
  spool::envelope envelope = sample();
  envelope.reverse_path.clear();  // <>: a DSN
  envelope.recipients.resize(1);
  packed_message packed;
  packed.pack(envelope, {});
  EXPECT_EQ(packed.envelope(), envelope);
  EXPECT_TRUE(packed.body().empty());
}

}  // namespace
}  // namespace ringmta::server
