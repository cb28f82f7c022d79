// sim::scheduler: the simulated clock and the queue of things that happen at a simulated time.
//
// Time is nanoseconds since the start of the run and moves only when the next action is taken
// from the queue: nothing in a simulated run reads the wall clock. Actions due at the same
// time run in the order they were scheduled (a sequence number breaks ties), so the order of
// events is a function of the seed alone.
// Never: run an action before its time, or run two at once (one thread).
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <utility>
#include <vector>

namespace ringmta::sim {

class scheduler {
 public:
  std::int64_t now_ns() const noexcept { return _now_ns; }

  void at(std::int64_t when_ns, std::function<void()> action) {
    _queue.push(entry{when_ns < _now_ns ? _now_ns : when_ns, _sequence++, std::move(action)});
  }
  void after(std::int64_t delay_ns, std::function<void()> action) {
    at(_now_ns + delay_ns, std::move(action));
  }
  bool empty() const noexcept { return _queue.empty(); }
  // Advances the clock to the earliest action and runs it. False when nothing is queued.
  bool run_one() {
    if (_queue.empty()) return false;
    entry next = std::move(const_cast<entry&>(_queue.top()));
    _queue.pop();
    _now_ns = next.when_ns;
    next.action();
    return true;
  }
  void clear() { _queue = {}; }

 private:
  struct entry {
    std::int64_t when_ns;
    std::uint64_t sequence;
    std::function<void()> action;
    bool operator>(const entry& other) const noexcept {
      return when_ns != other.when_ns ? when_ns > other.when_ns : sequence > other.sequence;
    }
  };
  std::int64_t _now_ns = 0;
  std::uint64_t _sequence = 0;
  std::priority_queue<entry, std::vector<entry>, std::greater<>> _queue;
};

}  // namespace ringmta::sim
