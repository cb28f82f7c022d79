// loadkit: the latency histogram (bucket bounds, precision, percentiles, merge), the integrity
// scanner (checksum over the unstuffed body, split at every byte), id tracking across shards and
// the flag parsers.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "loadkit/histogram.h"
#include "loadkit/id_tracker.h"
#include "loadkit/integrity.h"
#include "loadkit/options.h"
#include "loadkit/random.h"

namespace ringmta::loadkit {
namespace {

TEST(histogram, buckets_cover_values_within_one_percent) {
  random r(7);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t value = r.next() >> (r.next() % 64);
    const std::size_t index = histogram::index_of(value);
    ASSERT_LT(index, histogram::bucket_count);
    ASSERT_LE(histogram::lowest_of(index), value);
    ASSERT_GE(histogram::highest_of(index), value);
    const double width = double(histogram::highest_of(index) - histogram::lowest_of(index));
    ASSERT_LE(width, double(value) / 127.0 + 1) << value;
  }
  EXPECT_EQ(histogram::index_of(~std::uint64_t{0}), histogram::bucket_count - 1);
}

TEST(histogram, percentiles_are_monotonic_and_close) {
  histogram h;
  for (std::uint64_t v = 1; v <= 100000; ++v) h.record(v * 1000);
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_EQ(h.min(), 1000u);
  EXPECT_EQ(h.max(), 100000000u);
  std::uint64_t previous = 0;
  for (double p = 0; p <= 100; p += 0.5) {
    const std::uint64_t value = h.percentile(p);
    EXPECT_GE(value, previous) << p;
    previous = value;
  }
  EXPECT_NEAR(double(h.percentile(50)), 50e6, 50e6 * 0.01);
  EXPECT_NEAR(double(h.percentile(99)), 99e6, 99e6 * 0.01);
  EXPECT_NEAR(double(h.percentile(99.9)), 99.9e6, 99.9e6 * 0.01);
  EXPECT_EQ(h.percentile(100), h.max());
}

TEST(histogram, merge_equals_recording_everything_in_one) {
  histogram a, b, all;
  random r(3);
  for (int i = 0; i < 5000; ++i) {
    const std::uint64_t v = r.next() % 10'000'000;
    (i % 2 ? a : b).record(v);
    all.record(v);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9}) EXPECT_EQ(a.percentile(p), all.percentile(p));
  histogram empty;
  EXPECT_EQ(empty.percentile(50), 0u);
}

std::string tagged_message(std::string_view body_unstuffed, std::string_view stuffed_body,
                           std::uint64_t n) {
  char hex[16];
  const std::string_view pieces[] = {body_unstuffed};
  write_hex16(hex, body_checksum(pieces));
  return "Received: from x\r\nX-Blast-Id: run.1-" + std::to_string(n) +
         "\r\nx-blast-checksum: xxh64=" + std::string(hex, 16) + "\r\n\r\n" +
         std::string(stuffed_body);
}

TEST(integrity, checksum_over_unstuffed_body_at_every_split) {
  const std::string body = ".starts with a dot\r\nplain\r\n..two\r\n.\r\n";
  const std::string stuffed = "..starts with a dot\r\nplain\r\n...two\r\n..\r\n";
  const std::string wire = tagged_message(body, stuffed, 42);
  for (std::size_t split = 0; split <= wire.size(); ++split) {
    message_scanner scanner;
    scanner.begin(true);
    scanner.feed(std::string_view(wire).substr(0, split));
    scanner.feed(std::string_view(wire).substr(split));
    const scan_result r = scanner.finish();
    ASSERT_EQ(r.verdict, integrity::ok) << "split at " << split;
    ASSERT_TRUE(r.has_id);
    ASSERT_EQ(r.run, "run.1");
    ASSERT_EQ(r.n, 42u);
    ASSERT_EQ(r.body_bytes, body.size());
  }
}

TEST(integrity, altered_body_and_malformed_tags_are_corrupt) {
  const std::string body = "line one\r\nline two\r\n";
  std::string wire = tagged_message(body, body, 1);
  wire[wire.size() - 5] = 'X';
  message_scanner scanner;
  scanner.begin(true);
  scanner.feed(wire);
  EXPECT_EQ(scanner.finish().verdict, integrity::corrupt);

  scanner.begin(true);
  scanner.feed("X-Blast-Checksum: xxh64=nothex\r\n\r\nbody\r\n");
  EXPECT_EQ(scanner.finish().verdict, integrity::corrupt);

  scanner.begin(true);
  scanner.feed("Subject: none\r\n\r\nbody\r\n");
  const scan_result untagged = scanner.finish();
  EXPECT_EQ(untagged.verdict, integrity::untagged);
  EXPECT_FALSE(untagged.has_id);

  scanner.begin(true);
  scanner.feed("X-Blast-Id: bad id-x\r\n\r\n");
  EXPECT_TRUE(scanner.finish().id_malformed);
}

TEST(integrity, raw_form_keeps_dots_and_observer_sees_unstuffed_message) {
  struct collect final : scan_observer {
    std::string bytes;
    void on_message_bytes(std::string_view b) noexcept override { bytes.append(b); }
  } seen;
  message_scanner scanner;
  scanner.begin(true, &seen);
  scanner.feed("A: b\r\n\r\n..x\r\n");
  (void)scanner.finish();
  EXPECT_EQ(seen.bytes, "A: b\r\n\r\n.x\r\n");
  scanner.begin(false);
  const std::string body = "..x\r\n";
  scanner.feed(tagged_message(body, body, 5));
  EXPECT_EQ(scanner.finish().verdict, integrity::ok);
}

TEST(integrity, parsers_and_writers) {
  std::string_view run;
  std::uint64_t n = 0;
  EXPECT_TRUE(parse_id_value(" abc-0000000012 ", run, n));
  EXPECT_EQ(run, "abc");
  EXPECT_EQ(n, 12u);
  EXPECT_TRUE(parse_id_value("a-b-7", run, n) == false);  // '-' is not a run character
  EXPECT_FALSE(parse_id_value("abc-", run, n));
  EXPECT_FALSE(parse_id_value("-5", run, n));
  std::uint64_t checksum = 0;
  EXPECT_TRUE(parse_checksum_value("xxh64=00000000000000fF", checksum));
  EXPECT_EQ(checksum, 255u);
  EXPECT_FALSE(parse_checksum_value("xxh64=ff", checksum));
  char out[24];
  EXPECT_EQ(std::string(out, write_decimal(out, 42, 5)), "00042");
  EXPECT_EQ(std::string(out, write_decimal(out, 123456, 3)), "123456");
}

TEST(id_tracker, duplicates_across_shards_and_missing) {
  id_tracker a, b;
  EXPECT_EQ(a.note("r", 1), id_tracker::outcome::first);
  EXPECT_EQ(a.note("r", 1), id_tracker::outcome::duplicate);
  EXPECT_EQ(a.note("r", 100000), id_tracker::outcome::first);
  EXPECT_EQ(b.note("r", 2), id_tracker::outcome::first);
  EXPECT_EQ(b.note("r", 100000), id_tracker::outcome::first);  // also seen on shard a
  EXPECT_EQ(b.note("r", id_tracker::id_limit), id_tracker::outcome::untracked);
  id_tracker merged;
  merged.merge(a);
  merged.merge(b);
  EXPECT_EQ(merged.duplicates(), 2u);
  EXPECT_EQ(merged.distinct(), 3u);
  EXPECT_EQ(merged.untracked(), 1u);
  EXPECT_EQ(merged.missing("r", 0, 9), 8u);
  EXPECT_EQ(merged.missing("other", 0, 9), 10u);
  id_range range;
  EXPECT_TRUE(parse_id_range("run:0-99", range));
  EXPECT_EQ(range.last, 99u);
  EXPECT_FALSE(parse_id_range("run:9-1", range));
  EXPECT_FALSE(parse_id_range("run", range));
}

TEST(options, sizes_durations_and_rates) {
  EXPECT_EQ(parse_bytes("1k"), 1024u);
  EXPECT_EQ(parse_bytes("2M"), 2u << 20);
  EXPECT_FALSE(parse_bytes("k"));
  EXPECT_FALSE(parse_bytes("-1"));
  EXPECT_EQ(parse_duration_ms("250ms"), 250u);
  EXPECT_EQ(parse_duration_ms("1.5s"), 1500u);
  EXPECT_EQ(parse_duration_ms("2m"), 120000u);
  EXPECT_FALSE(parse_duration_ms("soon"));
  auto range = parse_size_distribution("1k:64k");
  ASSERT_TRUE(range);
  EXPECT_EQ(range->size(), 64u);
  EXPECT_EQ(range->front().bytes, 1024u);
  EXPECT_EQ(range->back().bytes, 65536u);
  auto list = parse_size_distribution("1k@9,64k@1");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 2u);
  EXPECT_DOUBLE_EQ((*list)[0].weight, 9.0);
  EXPECT_FALSE(parse_size_distribution("0"));
  EXPECT_FALSE(parse_size_distribution("1k@-1"));
  auto rates = parse_fault_rates("rcpt=0.1,data=0.05");
  ASSERT_TRUE(rates);
  EXPECT_DOUBLE_EQ(rates->rcpt, 0.1);
  EXPECT_DOUBLE_EQ(rates->data, 0.05);
  EXPECT_DOUBLE_EQ(parse_fault_rates("0.2")->data, 0.2);
  EXPECT_FALSE(parse_fault_rates("rcpt=1.5"));
  EXPECT_FALSE(parse_fault_rates("helo=0.1"));
}

TEST(random, seeded_sequences_repeat_and_look_uniform) {
  random a(11), b(11);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    ASSERT_EQ(a.next(), b.next());
    sum += a.uniform();
    b.uniform();
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

}  // namespace
}  // namespace ringmta::loadkit
