// Message ids, envelope encoding and dot-stuffing.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <random>
#include <set>

#include "ringmta/spool/dot_stuffer.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/message_id.h"
#include "../../../src/spool/format.h"

namespace ringmta::spool {
namespace {

TEST(message_id, unique_and_increasing_when_the_clock_steps_back) {
  message_id_generator ids(3, 0);
  message_id previous = 0;
  std::set<message_id> seen;
  const std::int64_t times[] = {1000, 1000, 1001, 500, 500, 999, 1001, 2000, 10};
  for (std::int64_t now : times) {
    for (int i = 0; i < 100; ++i) {
      const message_id id = ids.next(now);
      EXPECT_GT(id, previous);
      EXPECT_EQ(message_id_shard(id), 3u);
      EXPECT_TRUE(seen.insert(id).second);
      previous = id;
    }
  }
}

TEST(message_id, restart_from_floor_never_repeats) {
  message_id_generator first(1, 0);
  message_id last = 0;
  for (int i = 0; i < 1000; ++i) last = first.next(5000);
  message_id_generator restarted(1, last);
  EXPECT_GT(restarted.next(4000), last);  // clock went back across the restart
  message_id_generator other_shard(2, 0);
  EXPECT_NE(other_shard.next(5000), first.next(5000));
}

TEST(message_id, sequence_overflow_spills_into_next_second) {
  message_id_generator ids(0, 0);
  message_id previous = 0;
  for (int i = 0; i < (1 << message_id_sequence_bits) + 10; ++i) {
    const message_id id = ids.next(77);
    ASSERT_GT(id, previous);
    previous = id;
  }
  EXPECT_EQ(message_id_seconds(previous), 78);
}

TEST(message_id, text_round_trip) {
  const message_id id = 0x0123456789abcdefull;
  const auto text = format_message_id(id);
  EXPECT_STREQ(text.data(), "0123456789abcdef");
  EXPECT_EQ(parse_message_id(text.data()), id);
  EXPECT_FALSE(parse_message_id("0123456789abcdeg").has_value());
  EXPECT_FALSE(parse_message_id("0123").has_value());
}

envelope sample_envelope() {
  envelope value;
  value.id = 42;
  value.reverse_path = "a@b.example";
  value.size_declared = 12345;
  value.body = body_type::eight_bit_mime;
  value.smtputf8 = true;
  value.ret = dsn_return::headers;
  value.envid = "QQ314159";
  value.received_seconds = 1'700'000'000;
  value.client_address = "[2001:db8::1]";
  value.helo = "mx.example";
  value.recipients.push_back({"x@y.example", notify_success | notify_failure, "rfc822;x@y"});
  value.recipients.push_back({"z@y.example", 0, ""});
  return value;
}

TEST(envelope, round_trip) {
  const envelope value = sample_envelope();
  std::string bytes;
  encode_envelope(value, bytes);
  auto decoded = decode_envelope(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded.value(), value);
  envelope empty_sender;  // <> and no optional parameters
  empty_sender.recipients.push_back({"p@q", 0, ""});
  bytes.clear();
  encode_envelope(empty_sender, bytes);
  ASSERT_TRUE(decode_envelope(bytes).ok());
  EXPECT_EQ(decode_envelope(bytes).value(), empty_sender);
}

TEST(envelope, garbage_is_rejected_never_crashes) {
  std::string bytes;
  encode_envelope(sample_envelope(), bytes);
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(decode_envelope(std::string_view(bytes).substr(0, cut)).ok()) << cut;
  }
  std::mt19937 random(7);
  int decoded = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string mutated = bytes;
    mutated[random() % mutated.size()] = static_cast<char>(random());
    if (random() % 2) mutated.resize(random() % (mutated.size() + 1));
    decoded += decode_envelope(mutated).ok() ? 1 : 0;  // may decode (a changed letter): no crash
  }
  std::string huge_count(64, '\0');
  huge_count[0] = 1;
  EXPECT_FALSE(decode_envelope(huge_count).ok());
  EXPECT_LT(decoded, 20000);
}

// Issue 15 (restart): recovery reads only the summary. It must accept exactly what the full
// decode accepts (else a commit would be queued that store::read later rejects) and agree on
// the fields, for intact, cut and mutated input, with and without the pool field.
TEST(envelope, summary_agrees_with_the_full_decode) {
  std::string plain;
  encode_envelope(sample_envelope(), plain);
  std::string pooled;
  encode_envelope(sample_envelope(), pooled, "bulk-pool");
  std::mt19937 random(11);
  int accepted = 0;
  for (int round = 0; round < 40000; ++round) {
    std::string bytes = round % 2 ? plain : pooled;
    if (round >= 2) bytes[random() % bytes.size()] = static_cast<char>(random());
    if (round >= 2 && random() % 2) bytes.resize(random() % (bytes.size() + 1));
    const auto full = decode_envelope(bytes);
    const auto summary = decode_envelope_summary(bytes);
    ASSERT_EQ(full.ok(), summary.ok()) << round;
    if (!full.ok()) continue;
    ++accepted;
    EXPECT_EQ(summary.value().id, full.value().id);
    EXPECT_EQ(summary.value().received_seconds, full.value().received_seconds);
    EXPECT_EQ(summary.value().recipients, full.value().recipients.size());
  }
  EXPECT_GE(accepted, 2);  // the two intact encodings at least
  EXPECT_EQ(decode_envelope_summary(plain).value().recipients, 2u);
  EXPECT_EQ(decode_envelope_summary(plain).value().received_seconds, 1'700'000'000);
}

// Issue 15: the pool an X-Ringmta-Pool header chose is stored as an optional trailing field.
// A record without it (as written before the field existed: the same bytes) still decodes.
TEST(envelope, optional_pool_field_is_backward_compatible) {
  const envelope value = sample_envelope();
  std::string old_bytes;
  encode_envelope(value, old_bytes);
  std::string bytes;
  encode_envelope(value, bytes, "bulk-pool");
  // The new record is the old one followed by the tagged field.
  ASSERT_EQ(bytes.substr(0, old_bytes.size()), old_bytes);
  EXPECT_EQ(bytes.substr(old_bytes.size()), std::string("\x01\x09\x00", 3) + "bulk-pool");
  std::string pool = "stale";
  ASSERT_TRUE(decode_envelope(bytes, &pool).ok());
  EXPECT_EQ(decode_envelope(bytes, &pool).value(), value);
  EXPECT_EQ(pool, "bulk-pool");
  EXPECT_TRUE(decode_envelope(bytes).ok());  // not asked for: checked, dropped
  ASSERT_TRUE(decode_envelope(old_bytes, &pool).ok());
  EXPECT_EQ(pool, "");
  // Cut inside the field, an unknown tag, the field twice, an empty value: rejected.
  for (std::size_t cut = old_bytes.size() + 1; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(decode_envelope(std::string_view(bytes).substr(0, cut)).ok()) << cut;
  }
  std::string unknown = bytes;
  unknown[old_bytes.size()] = 2;
  EXPECT_FALSE(decode_envelope(unknown).ok());
  EXPECT_FALSE(decode_envelope(bytes + bytes.substr(old_bytes.size())).ok());
  EXPECT_FALSE(decode_envelope(old_bytes + std::string("\x01\x00\x00", 3)).ok());
}

std::string stuff(dot_stuffer& stuffer, std::string_view input) {
  std::string out;
  stuffer.feed(input, [&](std::string_view piece) { out.append(piece); });
  return out;
}

TEST(dot_stuffer, stuffs_line_starts_across_chunks) {
  dot_stuffer stuffer;
  EXPECT_EQ(stuff(stuffer, ".a\r\nb.\r\n.."), "..a\r\nb.\r\n...");
  stuffer.reset();
  std::string out;
  for (char c : std::string(".x\r\n.\r\n\r\n..y\n.z")) out += stuff(stuffer, std::string(1, c));
  EXPECT_EQ(out, "..x\r\n..\r\n\r\n...y\n..z");
  dot_stuffer sizing;
  EXPECT_EQ(sizing.stuffed_size(".a\r\n.b"), 8u);
  EXPECT_TRUE(sizing.at_line_start());
}

TEST(dot_stuffer, undo_is_the_inverse_of_stuffing) {
  for (const std::string& raw : {std::string(".x\r\n.\r\n\r\n..y\n.z"), std::string("plain\r\n"),
                                std::string(""), std::string("."), std::string("a\r\n.\r\n..\r\n")}) {
    dot_stuffer stuffer;
    std::string wire = stuff(stuffer, raw);
    wire.resize(undo_dot_stuffing(wire.data(), wire.size()));
    EXPECT_EQ(wire, raw);
  }
  std::string wire = "..leading\r\nmid.dot\r\n...three\r\n";
  wire.resize(undo_dot_stuffing(wire.data(), wire.size()));
  EXPECT_EQ(wire, ".leading\r\nmid.dot\r\n..three\r\n");
}

// The checksum is part of the file format (format.h: XXH3-64 of the payload, then header bytes
// 0..24, seeded): short records take a one-shot path, longer ones stream; both must give the
// value the format defines, at every length around the switch, and verify must agree.
TEST(record_checksum, is_xxh3_of_payload_then_header_at_every_length) {
  std::mt19937_64 rng(16);
  for (std::size_t length = 0; length <= 600; ++length) {
    std::string payload(length, '\0');
    for (auto& c : payload) c = static_cast<char>(rng());
    const std::uint64_t seed = format::seed(rng(), length * 4096);
    std::string record(format::header_bytes + length, '\0');
    format::encode_record(record.data(), format::record_type::data, rng(), payload, seed);
    std::string hashed = payload + record.substr(0, 24);
    const std::uint64_t want = XXH3_64bits_withSeed(hashed.data(), hashed.size(), seed);
    ASSERT_EQ(format::load_le<std::uint64_t>(record.data() + 24), want) << "length " << length;
    ASSERT_TRUE(format::verify(record.data(), payload, seed)) << "length " << length;
    if (length == 0) continue;
    payload[rng() % length] ^= 1;
    ASSERT_FALSE(format::verify(record.data(), payload, seed)) << "length " << length;
  }
}

}  // namespace
}  // namespace ringmta::spool
