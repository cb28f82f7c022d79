// server::session_deadline: when an inbound session is timed out (issue 10, slow senders).
//
// Timeouts used to be idle timers restarted by every byte, so a byte every few seconds held a
// session forever. Now (like Postfix's smtpd_per_request_deadline and smtpd_min_data_rate):
// - a command line must arrive whole within the command timeout of the moment the previous
//   one was handled (bytes that do not complete a line buy no time);
// - inside DATA/BDAT, each block of N octets moves the deadline N / min_data_rate seconds
//   later, never beyond the data-block timeout from now: a client keeping below the rate
//   runs out of time, one that stops is caught by the data-block timeout as before;
// - while the shard is loaded (near its session limit) no deadline lies more than the
//   under-load timeout ahead (Postfix's stress mode: smtpd_timeout 10s), so a slowloris army
//   cannot hold every slot.
// Pure: times are milliseconds of the shard's monotonic clock, given by the caller.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ringmta::server {

struct deadline_limits {
  std::uint32_t command_ms = 300'000;
  std::uint32_t data_block_ms = 180'000;
  std::uint32_t min_data_rate_bytes = 500;  // per second; 0: idle timeout only
  std::uint32_t under_load_ms = 10'000;     // 0: no change under load
};

class session_deadline {
 public:
  explicit session_deadline(const deadline_limits& limits) noexcept : _limits(limits) {}

  // The previous command was handled: the next line is due within the command timeout.
  std::uint64_t expect_command(std::uint64_t now_ms, bool loaded) noexcept {
    _in_data = false;
    return _deadline_ms = now_ms + cap(_limits.command_ms, loaded);
  }

  // `bytes` arrived; `in_data`: the session is inside a message (DATA or between BDAT
  // chunks); `progress`: a command line or a message was completed by them.
  std::uint64_t received(std::uint64_t now_ms, std::uint64_t bytes, bool in_data,
                         bool progress, bool loaded) noexcept {
    if (!in_data) {
      if (progress || _in_data) return expect_command(now_ms, loaded);
      return shorten(now_ms, loaded);  // a partial line buys nothing
    }
    const std::uint64_t ceiling = now_ms + cap(_limits.data_block_ms, loaded);
    if (!_in_data || _limits.min_data_rate_bytes == 0) {  // entering the message / idle only
      _in_data = true;
      return _deadline_ms = ceiling;
    }
    const std::uint64_t earned = bytes * 1000 / _limits.min_data_rate_bytes;
    _deadline_ms = std::min(_deadline_ms + earned, ceiling);  // a passed one stays passed
    return _deadline_ms;
  }

  // Load came: no deadline further than the under-load timeout.
  std::uint64_t shorten(std::uint64_t now_ms, bool loaded) noexcept {
    if (loaded && _limits.under_load_ms != 0)
      _deadline_ms = std::min(_deadline_ms, now_ms + _limits.under_load_ms);
    return _deadline_ms;
  }

  std::uint64_t deadline_ms() const noexcept { return _deadline_ms; }

 private:
  std::uint64_t cap(std::uint32_t timeout_ms, bool loaded) const noexcept {
    return loaded && _limits.under_load_ms != 0 ? std::min(timeout_ms, _limits.under_load_ms)
                                                : timeout_ms;
  }

  deadline_limits _limits;
  std::uint64_t _deadline_ms = 0;
  bool _in_data = false;
};

}  // namespace ringmta::server
