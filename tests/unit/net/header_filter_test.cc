// net::header_filter: X-Ringmta-Pool leaves the header block whole (folded lines too), in any
// case, at any split of the input; every other byte passes unchanged; the body is never looked
// at; the first field's value is kept.
#include "ringmta/net/header_filter.h"

#include <gtest/gtest.h>

#include <string>

namespace ringmta::net {
namespace {

struct filtered {
  std::string out;
  std::string value;
  bool found = false;
};

// Feeds `input` in pieces of `step` bytes (0: whole).
filtered run(const std::string& input, std::size_t step = 0) {
  header_filter filter("X-Ringmta-Pool");
  filter.reset();
  filtered result;
  const auto emit = [&](std::string_view kept) { result.out.append(kept); };
  if (step == 0) step = input.size() + 1;
  for (std::size_t at = 0; at < input.size(); at += step)
    filter.feed(std::string_view(input).substr(at, step), emit);
  filter.finish(emit);
  result.value = std::string(filter.value());
  result.found = filter.found();
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

}  // namespace
}  // namespace ringmta::net
