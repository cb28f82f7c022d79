// loadkit report helpers: one place that turns a latency histogram into the text line and the
// JSON object both tools print, so their summaries read alike. Reporting only (allocates).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "loadkit/histogram.h"

namespace ringmta::loadkit {

// {"count", "min_us", "mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"}.
nlohmann::json latency_json(const histogram& h);
// "  name      count  p50  p90  p99  p99.9  max" with adaptive units (us / ms / s).
std::string latency_line(std::string_view name, const histogram& h);
std::string latency_header();
// HdrHistogram's percentile distribution text ("Value Percentile TotalCount 1/(1-Percentile)",
// values in milliseconds, 5 ticks per halving distance to 100 %, the #[Mean ...] footer), which
// HdrHistogram's plotter and HistogramLogAnalyzer read. Returns false if the file cannot be
// written.
std::string percentile_table(const histogram& h);
bool write_percentile_table(const std::string& path, const histogram& h);
// "1.25 ms", "830 us", "2.10 s".
std::string format_ns(std::uint64_t ns);

}  // namespace ringmta::loadkit
