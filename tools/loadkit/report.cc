#include "loadkit/report.h"

#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace ringmta::loadkit {

namespace {
double us(std::uint64_t ns) { return double(ns) / 1000.0; }
}  // namespace

nlohmann::json latency_json(const histogram& h) {
  return nlohmann::json{
      {"count", h.count()},
      {"min_us", us(h.min())},
      {"mean_us", h.mean() / 1000.0},
      {"p50_us", us(h.percentile(50))},
      {"p90_us", us(h.percentile(90))},
      {"p99_us", us(h.percentile(99))},
      {"p99_9_us", us(h.percentile(99.9))},
      {"max_us", us(h.max())},
  };
}

std::string format_ns(std::uint64_t ns) {
  if (ns < 10'000) return fmt::format("{:.1f}us", double(ns) / 1e3);
  if (ns < 1'000'000) return fmt::format("{:.0f}us", double(ns) / 1e3);
  if (ns < 1'000'000'000) return fmt::format("{:.2f}ms", double(ns) / 1e6);
  return fmt::format("{:.2f}s", double(ns) / 1e9);
}

std::string latency_header() {
  return fmt::format("  {:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}", "latency", "count", "p50",
                     "p90", "p99", "p99.9", "max");
}

std::string latency_line(std::string_view name, const histogram& h) {
  return fmt::format("  {:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}", name, h.count(),
                     format_ns(h.percentile(50)), format_ns(h.percentile(90)),
                     format_ns(h.percentile(99)), format_ns(h.percentile(99.9)),
                     format_ns(h.max()));
}


std::string percentile_table(const histogram& h) {
  std::string out = fmt::format("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile",
                                "TotalCount", "1/(1-Percentile)");
  const auto count = h.count();
  for (int tick = 0; count > 0; ++tick) {
    const double fraction = 1.0 - std::pow(0.5, tick / 5.0);  // 5 ticks per halving
    const bool last = fraction >= 1.0 - 1.0 / double(count) || tick > 200;
    const double shown = last ? 1.0 : fraction;
    const auto value = h.percentile(shown * 100.0);
    const auto total = static_cast<std::uint64_t>(std::ceil(shown * double(count)));
    if (last) {
      out += fmt::format("{:12.3f} {:14.12f} {:10} {:>14}\n", double(value) / 1e6, 1.0, count,
                         "");
      break;
    }
    out += fmt::format("{:12.3f} {:14.12f} {:10} {:14.2f}\n", double(value) / 1e6, fraction,
                       total, 1.0 / (1.0 - fraction));
  }
  out += fmt::format("#[Mean    = {:12.3f}, StdDeviation   = {:12.3f}]\n", h.mean() / 1e6,
                     h.standard_deviation() / 1e6);
  out += fmt::format("#[Max     = {:12.3f}, Total count    = {:12}]\n", double(h.max()) / 1e6,
                     count);
  out += fmt::format("#[Buckets = {:12}, SubBuckets     = {:12}]\n",
                     histogram::bucket_count / histogram::sub_bucket_count,
                     histogram::sub_bucket_count);
  return out;
}

bool write_percentile_table(const std::string& path, const histogram& h) {
  const std::string text = percentile_table(h);
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  return std::fclose(f) == 0 && ok;
}

}  // namespace ringmta::loadkit
