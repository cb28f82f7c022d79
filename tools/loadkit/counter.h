// loadkit::counter: a statistics counter with one writer (its shard's thread) and any number of
// readers (the reporter thread printing progress once a second). A relaxed load+store instead
// of an atomic read-modify-write: no lock prefix on the hot path, and no torn reads.
// Never: written by two threads.
#pragma once

#include <atomic>
#include <cstdint>

namespace ringmta::loadkit {

class counter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    _value.store(_value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void set(std::uint64_t value) noexcept { _value.store(value, std::memory_order_relaxed); }
  std::uint64_t get() const noexcept { return _value.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> _value{0};
};

}  // namespace ringmta::loadkit
