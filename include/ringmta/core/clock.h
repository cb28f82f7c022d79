// Time sources. Pure engines never read a clock: their embedder passes time in. Only the
// reactor, the tools and start-up code call these.
#pragma once

#include <cstdint>
#include <ctime>

namespace ringmta::core {

// Monotonic nanoseconds since an arbitrary point: for timeouts and latency measurement.
inline std::uint64_t monotonic_ns() noexcept {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(now.tv_nsec);
}

// Wall-clock seconds since the epoch: for Received: headers, queue ids and retry schedules that
// must survive a restart.
inline std::int64_t wall_seconds() noexcept {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec;
}

// Wall-clock milliseconds since the epoch: for log record time stamps.
inline std::int64_t wall_milliseconds() noexcept {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000;
}

}  // namespace ringmta::core
