#include "loadkit/histogram.h"

#include <cmath>

namespace ringmta::loadkit {

histogram::histogram() : _counts(bucket_count, 0) {}

void histogram::merge(const histogram& other) noexcept {
  for (std::size_t i = 0; i < bucket_count; ++i) _counts[i] += other._counts[i];
  _count += other._count;
  _sum += other._sum;
  _sum_squares += other._sum_squares;
  if (other._count != 0) {
    if (other._min < _min) _min = other._min;
    if (other._max > _max) _max = other._max;
  }
}

void histogram::clear() noexcept {
  for (auto& c : _counts) c = 0;
  _count = 0;
  _sum = 0;
  _sum_squares = 0;
  _min = ~std::uint64_t{0};
  _max = 0;
}

std::uint64_t histogram::lowest_of(std::size_t index) noexcept {
  if (index < sub_bucket_count) return index;
  const std::uint64_t shift = index / sub_bucket_count - 1;
  const std::uint64_t sub = index % sub_bucket_count;
  return (sub_bucket_count + sub) << shift;
}

std::uint64_t histogram::highest_of(std::size_t index) noexcept {
  if (index < sub_bucket_count) return index;
  const std::uint64_t shift = index / sub_bucket_count - 1;
  return lowest_of(index) + ((std::uint64_t{1} << shift) - 1);
}

std::uint64_t histogram::percentile(double percent) const noexcept {
  if (_count == 0) return 0;
  if (percent <= 0) return min();
  if (percent >= 100) return _max;
  // Rank of the value asked for, 1-based: the smallest value with at least that many at or below.
  auto rank = static_cast<std::uint64_t>(std::ceil(percent / 100.0 * double(_count)));
  if (rank == 0) rank = 1;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bucket_count; ++i) {
    seen += _counts[i];
    if (seen >= rank) {
      const std::uint64_t low = lowest_of(i);
      const std::uint64_t mid = low + (highest_of(i) - low) / 2;
      if (mid < min()) return min();
      if (mid > _max) return _max;
      return mid;
    }
  }
  return _max;
}

}  // namespace ringmta::loadkit
