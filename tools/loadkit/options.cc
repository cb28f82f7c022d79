#include "loadkit/options.h"

#include <charconv>
#include <cmath>

namespace ringmta::loadkit {

namespace {

std::optional<double> parse_double(std::string_view text) {
  if (text.empty()) return std::nullopt;
  // std::from_chars for double is in libstdc++ 11+.
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::uint64_t> parse_unsigned(std::string_view text) {
  std::uint64_t value = 0;
  if (text.empty()) return std::nullopt;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    const std::size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

std::optional<std::uint64_t> parse_bytes(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::uint64_t multiplier = 1;
  switch (text.back()) {
    case 'k': case 'K': multiplier = 1ull << 10; break;
    case 'm': case 'M': multiplier = 1ull << 20; break;
    case 'g': case 'G': multiplier = 1ull << 30; break;
    default: break;
  }
  if (multiplier != 1) text.remove_suffix(1);
  const auto value = parse_unsigned(text);
  if (!value || *value > (~0ull) / multiplier) return std::nullopt;
  return *value * multiplier;
}

std::optional<std::uint64_t> parse_duration_ms(std::string_view text) {
  std::uint64_t multiplier = 1000;
  if (text.size() > 2 && text.substr(text.size() - 2) == "ms") {
    multiplier = 1;
    text.remove_suffix(2);
  } else if (!text.empty()) {
    switch (text.back()) {
      case 's': multiplier = 1000; text.remove_suffix(1); break;
      case 'm': multiplier = 60'000; text.remove_suffix(1); break;
      case 'h': multiplier = 3'600'000; text.remove_suffix(1); break;
      default: break;
    }
  }
  const auto value = parse_double(text);
  if (!value || *value < 0 || *value > 1e9) return std::nullopt;
  return static_cast<std::uint64_t>(std::llround(*value * double(multiplier)));
}

std::optional<std::vector<size_choice>> parse_size_distribution(std::string_view text) {
  constexpr std::uint64_t size_min = 2;
  constexpr std::uint64_t size_max = 64ull << 20;
  std::vector<size_choice> choices;
  const std::size_t colon = text.find(':');
  if (colon != std::string_view::npos) {
    const auto low = parse_bytes(text.substr(0, colon));
    const auto high = parse_bytes(text.substr(colon + 1));
    if (!low || !high || *low > *high || *low < size_min || *high > size_max) return std::nullopt;
    const std::uint64_t span = *high - *low;
    const std::uint64_t steps = span < 63 ? span : 63;
    for (std::uint64_t i = 0; i <= steps; ++i) {
      choices.push_back({*low + (steps == 0 ? 0 : span * i / steps), 1.0});
    }
    return choices;
  }
  for (const std::string_view item : split(text, ',')) {
    const std::size_t at = item.find('@');
    const auto bytes = parse_bytes(item.substr(0, at));
    double weight = 1.0;
    if (at != std::string_view::npos) {
      const auto parsed = parse_double(item.substr(at + 1));
      if (!parsed || *parsed <= 0) return std::nullopt;
      weight = *parsed;
    }
    if (!bytes || *bytes < size_min || *bytes > size_max) return std::nullopt;
    choices.push_back({*bytes, weight});
  }
  if (choices.empty() || choices.size() > 64) return std::nullopt;
  return choices;
}

std::optional<fault_rates> parse_fault_rates(std::string_view text) {
  fault_rates rates;
  const auto valid = [](std::optional<double> p) { return p && *p >= 0 && *p <= 1; };
  if (text.find('=') == std::string_view::npos) {
    const auto p = parse_double(text);
    if (!valid(p)) return std::nullopt;
    rates.data = *p;
    return rates;
  }
  for (const std::string_view item : split(text, ',')) {
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    const auto p = parse_double(item.substr(eq + 1));
    if (!valid(p)) return std::nullopt;
    const std::string_view step = item.substr(0, eq);
    if (step == "rcpt") {
      rates.rcpt = *p;
    } else if (step == "data") {
      rates.data = *p;
    } else {
      return std::nullopt;
    }
  }
  return rates;
}

}  // namespace ringmta::loadkit
