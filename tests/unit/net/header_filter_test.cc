// net::header_filter: X-Ringmta-Pool leaves the header block whole (folded lines too), in any
// case, at any split of the input; every other byte passes unchanged; the body is never looked
// at; the first field's value is kept; the Received: fields are counted in the same walk.
#include "ringmta/net/header_filter.h"

#include <gtest/gtest.h>

#include <string>

namespace ringmta::net {
namespace {

struct filtered {
  std::string out;
  std::string value;
  bool found = false;
  std::uint32_t received = 0;
};

// Feeds `input` in pieces of `step` bytes (0: whole).
filtered run(const std::string& input, std::size_t step = 0,
             std::string_view field = "X-Ringmta-Pool") {
  header_filter filter(field);
  filter.reset();
  filtered result;
  const auto emit = [&](std::string_view kept) { result.out.append(kept); };
  if (step == 0) step = input.size() + 1;
  for (std::size_t at = 0; at < input.size(); at += step)
    filter.feed(std::string_view(input).substr(at, step), emit);
  filter.finish(emit);
  result.value = std::string(filter.value());
  result.found = filter.found();
  result.received = filter.received_fields();
  return result;
}

const std::string kept_head = "From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n";
const std::string body = "\r\nX-Ringmta-Pool: in the body stays\r\nbye\r\n";

TEST(header_filter, removes_the_field_at_every_split) {
  const std::string input =
      "From: a@example.com\r\nX-Ringmta-Pool: bulk \r\nTo: b@example.org\r\nSubject: hi\r\n" + body;
  for (std::size_t step : {0u, 1u, 2u, 3u, 7u, 16u}) {
    const auto r = run(input, step);
    EXPECT_EQ(r.out, kept_head + body) << "step " << step;
    EXPECT_TRUE(r.found);
    EXPECT_EQ(r.value, "bulk") << "step " << step;
  }
}

TEST(header_filter, folded_lines_any_case_and_every_occurrence) {
  const std::string input = "x-ringmta-pool:\r\n\ttenant-7\r\nFrom: a@example.com\r\n"
                            "To: b@example.org\r\nX-RINGMTA-POOL: second\r\n  folded\r\n"
                            "Subject: hi\r\n" + body;
  for (std::size_t step : {0u, 1u, 5u}) {
    const auto r = run(input, step);
    EXPECT_EQ(r.out, kept_head + body) << "step " << step;
    EXPECT_EQ(r.value, "tenant-7");  // the first one
  }
}

TEST(header_filter, near_misses_pass_unchanged) {
  const std::string input = "X-Ringmta-Pools: no\r\nX-Ringmta-Pool-Old: no\r\nX-Ringmta: no\r\n"
                            "X-Ringmta-Pool : obsolete space form is not ours\r\n"
                            " continuation of a kept line\r\n" + body;
  for (std::size_t step : {0u, 1u, 4u}) {
    const auto r = run(input, step);
    EXPECT_EQ(r.out, input) << "step " << step;
    EXPECT_FALSE(r.found);
  }
}

TEST(header_filter, no_header_block_and_truncated_prefix) {
  EXPECT_EQ(run("\r\nX-Ringmta-Pool: body only\r\n").out, "\r\nX-Ringmta-Pool: body only\r\n");
  EXPECT_EQ(run("Subject: x\r\nX-Ringm").out, "Subject: x\r\nX-Ringm");  // finish() gives it back
  const auto last = run("Subject: x\r\nX-Ringmta-Pool: end");  // no CRLF, no body
  EXPECT_EQ(last.out, "Subject: x\r\n");
  EXPECT_EQ(last.value, "end");
}

TEST(header_filter, bare_lf_lines_and_long_values) {
  const std::string input = "X-Ringmta-Pool: a\nSubject: x\n\nX-Ringmta-Pool: b\n";
  EXPECT_EQ(run(input, 1).out, "Subject: x\n\nX-Ringmta-Pool: b\n");
  const auto long_value = run("X-Ringmta-Pool: " + std::string(1000, 'v') + "\r\n\r\n");
  EXPECT_EQ(long_value.out, "\r\n");
  EXPECT_EQ(long_value.value.size(), header_filter::value_bytes_max - 1);  // after the space
}

// RFC 5321 §6.3: lines starting with "Received:" (any case) in the header block only.
TEST(header_filter, counts_received_fields_of_the_header_section_only) {
  const std::string message =
      "Received: from a by b; Sat, 21 Nov 2026 21:55:35 +0000\r\n"
      "X-Received: not one\r\n"
      "RECEIVED: by c\r\n"
      "\tReceived: a folded line, not a field\r\n"
      "Subject: Received: no\r\n"
      "received:x\r\n"
      "Receive: short\r\n"
      "Received\r\n"
      "\r\n"
      "Received: in the body, not counted\r\n";
  for (std::size_t step = 0; step < 12; ++step) {  // pieces split anywhere give the same
    const auto r = run(message, step);
    EXPECT_EQ(r.received, 3u) << step;
    EXPECT_EQ(r.out, message) << step;
  }
  EXPECT_EQ(run("\r\nReceived: body\r\n").received, 0u);  // no header section at all
  EXPECT_EQ(run("Received: a\nreceived: b\n\nReceived: c\n", 1).received, 2u);  // bare LF
}

// Both jobs on the same lines: the field next to, before and after Received: fields, folded,
// and a Received: look-alike inside the dropped field's fold (dropped, not counted).
TEST(header_filter, strips_the_field_and_counts_hops_in_one_walk) {
  const std::string input =
      "Received: by one\r\n\tfolded\r\n"
      "X-Ringmta-Pool: bulk\r\n"
      " Received: fold of the dropped field\r\n"
      "Received: by two\r\n"
      "x-ringmta-pool: second\r\n"
      "RECEIVED: by three\r\n"
      "Subject: s\r\n" + body;
  const std::string expected =
      "Received: by one\r\n\tfolded\r\nReceived: by two\r\nRECEIVED: by three\r\n"
      "Subject: s\r\n" + body;
  for (std::size_t step : {0u, 1u, 2u, 3u, 5u, 9u, 10u, 17u}) {
    const auto r = run(input, step);
    EXPECT_EQ(r.out, expected) << "step " << step;
    EXPECT_EQ(r.received, 3u) << "step " << step;
    EXPECT_EQ(r.value, "bulk Received: fold of the dropped field") << "step " << step;
  }
  // A reset starts the count again.
  header_filter filter("X-Ringmta-Pool");
  filter.reset();
  filter.feed("Received: a\r\n\r\n", [](std::string_view) {});
  EXPECT_EQ(filter.received_fields(), 1u);
  filter.reset();
  EXPECT_EQ(filter.received_fields(), 0u);
}

// A field name sharing Received:'s first letters: both candidates run on the same bytes.
TEST(header_filter, field_names_sharing_a_prefix_with_received) {
  const std::string input = "Received-Via: x\r\nReceived: y\r\nReceivedz: n\r\n" + body;
  for (std::size_t step : {0u, 1u, 4u}) {
    const auto r = run(input, step, "Received-Via");
    EXPECT_EQ(r.out, "Received: y\r\nReceivedz: n\r\n" + body) << step;
    EXPECT_EQ(r.received, 1u) << step;
    EXPECT_EQ(r.value, "x");
    const auto same = run(input, step, "Received");  // dropped and counted
    EXPECT_EQ(same.out, "Received-Via: x\r\nReceivedz: n\r\n" + body) << step;
    EXPECT_EQ(same.received, 1u) << step;
  }
}

}  // namespace
}  // namespace ringmta::net
