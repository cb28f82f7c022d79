// Metrics: counters, gauges and histograms written by exactly one shard thread and read by the
// metrics endpoint. A single writer means increments need no atomic read-modify-write (no
// lock prefix on the hot path): the writer does a relaxed load and store, readers do relaxed
// loads and may see a value a few increments old, which Prometheus scraping tolerates.
//
// The registry is filled at start-up (names, help, one instance per shard) and rendered in the
// Prometheus text exposition format (version 0.0.4), summed over shards.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ringmta::admin {

class counter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    _value.store(_value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t read() const noexcept { return _value.load(std::memory_order_relaxed); }
  // Mirrors a running total kept elsewhere by the same (single) writer.
  void set_total(std::uint64_t total) noexcept { _value.store(total, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> _value{0};
};

class gauge {
 public:
  void set(std::int64_t value) noexcept { _value.store(value, std::memory_order_relaxed); }
  void add(std::int64_t delta) noexcept {
    _value.store(_value.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }
  std::int64_t read() const noexcept { return _value.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> _value{0};
};

// Latency histogram with fixed power-of-two buckets of `unit_us` microseconds: with the default
// unit 1µs … ~33 s, then +Inf; with a unit of 1 ms (delivery latency) 1 ms … ~9.3 h.
// Instances summed under one name share their unit.
class histogram {
 public:
  static constexpr std::size_t bucket_count = 26;
  explicit histogram(std::uint64_t unit_us = 1) noexcept : _unit_us(unit_us) {}
  void record_us(std::uint64_t microseconds) noexcept;
  std::uint64_t bucket(std::size_t i) const noexcept {
    return _buckets[i].load(std::memory_order_relaxed);
  }
  std::uint64_t bucket_upper_us(std::size_t i) const noexcept {
    return (std::uint64_t{1} << i) * _unit_us;
  }
  std::uint64_t count() const noexcept { return _count.read(); }
  std::uint64_t sum_us() const noexcept { return _sum_us.read(); }

 private:
  std::array<std::atomic<std::uint64_t>, bucket_count + 1> _buckets{};  // last: above the top
  counter _count;
  counter _sum_us;
  std::uint64_t _unit_us;
};

class registry {
 public:
  // `name` may carry labels: "ringmta_replies_total{class=\"2xx\"}". One call per shard
  // instance; instances of the same name are summed when rendered.
  void add(std::string name, std::string help, const counter& value);
  void add(std::string name, std::string help, const gauge& value);
  void add(std::string name, std::string help, const histogram& value);
  // A value computed at scrape time (e.g. queue length read from a shard-published gauge).
  void add_callback(std::string name, std::string help, std::function<double()> read);

  std::string render_prometheus() const;

 private:
  struct entry {
    std::string name;
    std::string help;
    enum class kind : std::uint8_t { counter, gauge, histogram, callback } type;
    std::vector<const void*> instances;
    std::function<double()> read;
  };
  entry& find_or_add(std::string name, std::string help, entry::kind type);
  std::vector<entry> _entries;
};

}  // namespace ringmta::admin
