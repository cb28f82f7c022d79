#include "ringmta/admin/metrics.h"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "ringmta/core/assert.h"

namespace ringmta::admin {

void histogram::record_us(std::uint64_t microseconds) noexcept {
  // Bucket i holds values <= 2^i units; std::bit_width(v - 1) is the smallest such i.
  const std::uint64_t units = (microseconds + _unit_us - 1) / _unit_us;
  const std::size_t index = units <= 1 ? 0 : static_cast<std::size_t>(std::bit_width(units - 1));
  auto& slot = _buckets[index < bucket_count ? index : bucket_count];
  slot.store(slot.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  _count.add();
  _sum_us.add(microseconds);
}

registry::entry& registry::find_or_add(std::string name, std::string help, entry::kind type) {
  for (auto& e : _entries) {
    if (e.name == name) {
      RINGMTA_ASSERT(e.type == type);
      return e;
    }
  }
  _entries.push_back(entry{std::move(name), std::move(help), type, {}, {}});
  return _entries.back();
}

void registry::add(std::string name, std::string help, const counter& value) {
  find_or_add(std::move(name), std::move(help), entry::kind::counter).instances.push_back(&value);
}

void registry::add(std::string name, std::string help, const gauge& value) {
  find_or_add(std::move(name), std::move(help), entry::kind::gauge).instances.push_back(&value);
}

void registry::add(std::string name, std::string help, const histogram& value) {
  find_or_add(std::move(name), std::move(help), entry::kind::histogram)
      .instances.push_back(&value);
}

void registry::add_callback(std::string name, std::string help, std::function<double()> read) {
  find_or_add(std::move(name), std::move(help), entry::kind::callback).read = std::move(read);
}

namespace {

std::string_view base_name(std::string_view name) { return name.substr(0, name.find('{')); }

// "name{a=\"b\"}" + extra label "le=\"4\"" → "name_bucket{a=\"b\",le=\"4\"}".
std::string with_suffix_and_label(std::string_view name, std::string_view suffix,
                                  std::string_view label) {
  const auto brace = name.find('{');
  std::string out(name.substr(0, brace));
  out += suffix;
  std::string labels = brace == std::string_view::npos
                           ? std::string()
                           : std::string(name.substr(brace + 1, name.size() - brace - 2));
  if (!label.empty()) labels += (labels.empty() ? "" : ",") + std::string(label);
  if (!labels.empty()) out += "{" + labels + "}";
  return out;
}

}  // namespace

std::string registry::render_prometheus() const {
  // Label sets of one family must be adjacent in the output, whatever the registration order.
  std::vector<const entry*> ordered;
  for (const auto& e : _entries) ordered.push_back(&e);
  std::stable_sort(ordered.begin(), ordered.end(), [](const entry* a, const entry* b) {
    return base_name(a->name) < base_name(b->name);
  });
  std::string out;
  std::string_view last_family;
  for (const entry* each : ordered) {
    const entry& e = *each;
    const auto family = base_name(e.name);
    if (family != last_family) {  // HELP/TYPE once per family, even with several label sets
      const char* type = e.type == entry::kind::counter     ? "counter"
                         : e.type == entry::kind::histogram ? "histogram"
                                                            : "gauge";
      out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", family, e.help, family, type);
      last_family = family;
    }
    switch (e.type) {
      case entry::kind::counter: {
        std::uint64_t sum = 0;
        for (const void* p : e.instances) sum += static_cast<const counter*>(p)->read();
        out += fmt::format("{} {}\n", e.name, sum);
        break;
      }
      case entry::kind::gauge: {
        std::int64_t sum = 0;
        for (const void* p : e.instances) sum += static_cast<const gauge*>(p)->read();
        out += fmt::format("{} {}\n", e.name, sum);
        break;
      }
      case entry::kind::callback:
        out += fmt::format("{} {}\n", e.name, e.read());
        break;
      case entry::kind::histogram: {
        std::uint64_t cumulative = 0, count = 0, sum_us = 0;
        for (std::size_t i = 0; i <= histogram::bucket_count; ++i) {
          for (const void* p : e.instances)
            cumulative += static_cast<const histogram*>(p)->bucket(i);
          const std::string le =
              i < histogram::bucket_count
                  ? fmt::format("le=\"{}\"",
                                static_cast<const histogram*>(e.instances.front())
                                        ->bucket_upper_us(i) / 1e6)
                  : std::string("le=\"+Inf\"");
          out += fmt::format("{} {}\n", with_suffix_and_label(e.name, "_bucket", le), cumulative);
        }
        for (const void* p : e.instances) {
          count += static_cast<const histogram*>(p)->count();
          sum_us += static_cast<const histogram*>(p)->sum_us();
        }
        out += fmt::format("{} {}\n", with_suffix_and_label(e.name, "_sum", ""), sum_us / 1e6);
        out += fmt::format("{} {}\n", with_suffix_and_label(e.name, "_count", ""), count);
        break;
      }
    }
  }
  return out;
}

}  // namespace ringmta::admin
