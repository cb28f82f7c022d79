#include "loadkit/report.h"

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

}  // namespace ringmta::loadkit
