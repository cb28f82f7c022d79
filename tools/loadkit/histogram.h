// loadkit::histogram: a latency histogram with HdrHistogram's log-linear layout, for the load
// tools (ringmta-blast records every connect, EHLO, end-of-data and session latency in one).
//
// Values are nanoseconds (any unsigned 64-bit value is accepted). Values below 2^precision_bits
// get a bucket each; above, every power-of-two range [2^k, 2^(k+1)) is split into
// 2^precision_bits equal buckets, so a bucket is never wider than 1/128 of its values
// (precision better than 0.8 %) and the whole 64-bit range fits in 7,424 counters (58 KiB).
// Exact count, min, max and sum are kept beside the buckets.
//
// Invariants: memory is fixed at construction (no allocation in record()); merge() adds two
// histograms exactly; percentile() is monotonic in its argument and never exceeds max().
// Never: allocates after construction, loses a recorded value, or is shared between threads
// without an external hand-over (each shard records into its own, the reporter merges).
#pragma once

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ringmta::loadkit {

class histogram {
 public:
  static constexpr unsigned precision_bits = 7;
  static constexpr std::uint64_t sub_bucket_count = std::uint64_t{1} << precision_bits;
  static constexpr std::size_t bucket_count = (64 - precision_bits + 1) * sub_bucket_count;

  histogram();

  void record(std::uint64_t value) noexcept {
    ++_counts[index_of(value)];
    ++_count;
    _sum += value;
    _sum_squares += double(value) * double(value);
    if (value < _min) _min = value;
    if (value > _max) _max = value;
  }
  void merge(const histogram& other) noexcept;
  void clear() noexcept;

  std::uint64_t count() const noexcept { return _count; }
  std::uint64_t min() const noexcept { return _count == 0 ? 0 : _min; }
  std::uint64_t max() const noexcept { return _max; }
  double mean() const noexcept { return _count == 0 ? 0.0 : double(_sum) / double(_count); }
  double standard_deviation() const noexcept {
    if (_count == 0) return 0.0;
    const double m = mean();
    const double variance = _sum_squares / double(_count) - m * m;
    return variance > 0 ? std::sqrt(variance) : 0.0;
  }
  // The value at or below which `percent` (0..100) of the recorded values lie: the midpoint of
  // the bucket holding that rank, clamped to [min, max]. 0 when empty.
  std::uint64_t percentile(double percent) const noexcept;

  // Bucket arithmetic (public for tests).
  static std::size_t index_of(std::uint64_t value) noexcept {
    if (value < sub_bucket_count) return static_cast<std::size_t>(value);
    const unsigned msb = 63u - static_cast<unsigned>(std::countl_zero(value));
    const unsigned shift = msb - precision_bits;
    return static_cast<std::size_t>((shift + 1) * sub_bucket_count +
                                    ((value >> shift) - sub_bucket_count));
  }
  static std::uint64_t lowest_of(std::size_t index) noexcept;
  static std::uint64_t highest_of(std::size_t index) noexcept;

 private:
  std::vector<std::uint64_t> _counts;  // bucket_count entries, allocated once
  std::uint64_t _count = 0;
  std::uint64_t _sum = 0;
  double _sum_squares = 0;
  std::uint64_t _min = ~std::uint64_t{0};
  std::uint64_t _max = 0;
};

}  // namespace ringmta::loadkit
