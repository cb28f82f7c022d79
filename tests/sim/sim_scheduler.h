// sim::scheduler: the simulated clock and the queue of things that happen at a simulated time.
//
// Time is nanoseconds since the start of the run and moves only when the next action is taken
// from the queue: nothing in a simulated run reads the wall clock. Actions due at the same
// time run in the order they were scheduled (a sequence number breaks ties), so the order of
// events is a function of the seed alone.
// Cost (issue 16: the relay benchmark runs millions of these): an action is a move-only
// callable whose captures live inline when small (no allocation for the host's events), and
// the heap orders 24-byte keys while the actions stay put in a slot table, built there and run
// there (no move per action).
// Never: run an action before its time, or run two at once (one thread).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <new>
#include <queue>
#include <type_traits>
#include <utility>
#include <vector>

namespace ringmta::sim {

// A move-only `void()` callable. Captures up to inline_bytes are stored in place; larger ones
// on the heap. Unlike std::function it needs no copyable target and no allocation for the
// common capture (this, a descriptor, a string).
class action {
 public:
  static constexpr std::size_t inline_bytes = 64;

  action() noexcept = default;
  template <class F>
    requires(!std::same_as<std::decay_t<F>, action> && std::invocable<std::decay_t<F>&>)
  action(F&& target) {  // NOLINT(google-explicit-constructor): any lambda is an action
    construct(std::forward<F>(target));
  }
  action(action&& other) noexcept : _ops(other._ops) {
    if (_ops != nullptr) _ops->move(other._storage, _storage);
    other._ops = nullptr;
  }
  action& operator=(action&& other) noexcept {
    if (this != &other) {
      reset();
      _ops = other._ops;
      if (_ops != nullptr) _ops->move(other._storage, _storage);
      other._ops = nullptr;
    }
    return *this;
  }
  action(const action&) = delete;
  action& operator=(const action&) = delete;
  ~action() { reset(); }

  // Replaces the target in place (the scheduler's slot: no temporary, no move of the capture).
  template <class F>
  void assign(F&& target) {
    if constexpr (std::same_as<std::decay_t<F>, action>) {
      *this = std::forward<F>(target);
    } else {
      reset();
      construct(std::forward<F>(target));
    }
  }
  explicit operator bool() const noexcept { return _ops != nullptr; }
  void operator()() { _ops->call(_storage); }
  void reset() noexcept {
    if (_ops != nullptr) _ops->destroy(_storage);
    _ops = nullptr;
  }

 private:
  struct operations {
    void (*call)(void* storage);
    void (*move)(void* from, void* to) noexcept;  // leaves `from` destroyed
    void (*destroy)(void* storage) noexcept;
  };
  template <class T>
  static constexpr bool fits_inline() {
    return sizeof(T) <= inline_bytes && alignof(T) <= alignof(std::max_align_t) &&
           std::is_nothrow_move_constructible_v<T>;
  }
  template <class T>
  static constexpr operations inline_ops{
      [](void* storage) { (*std::launder(static_cast<T*>(storage)))(); },
      [](void* from, void* to) noexcept {
        T* source = std::launder(static_cast<T*>(from));
        ::new (to) T(std::move(*source));
        source->~T();
      },
      [](void* storage) noexcept { std::launder(static_cast<T*>(storage))->~T(); }};
  template <class T>
  static constexpr operations heap_ops{
      [](void* storage) { (**std::launder(static_cast<T**>(storage)))(); },
      [](void* from, void* to) noexcept {
        ::new (to) T*(*std::launder(static_cast<T**>(from)));
      },
      [](void* storage) noexcept { delete *std::launder(static_cast<T**>(storage)); }};

  template <class F>
  void construct(F&& target) {
    using T = std::decay_t<F>;
    if constexpr (fits_inline<T>()) {
      ::new (static_cast<void*>(_storage)) T(std::forward<F>(target));
      _ops = &inline_ops<T>;
    } else {
      ::new (static_cast<void*>(_storage)) T*(new T(std::forward<F>(target)));
      _ops = &heap_ops<T>;
    }
  }

  alignas(std::max_align_t) unsigned char _storage[inline_bytes];
  const operations* _ops = nullptr;
};

class scheduler {
 public:
  std::int64_t now_ns() const noexcept { return _now_ns; }

  // The action is built in its slot (no temporary `action`, no move of its capture).
  template <class F>
  void at(std::int64_t when_ns, F&& what) {
    std::uint32_t slot;
    if (_free.empty()) {
      slot = static_cast<std::uint32_t>(_actions.size());
      _actions.emplace_back();
    } else {
      slot = _free.back();
      _free.pop_back();
    }
    _actions[slot].assign(std::forward<F>(what));
    if (when_ns <= _now_ns) {
      _due.push_back(entry{_now_ns, _sequence++, slot});
    } else {
      _queue.push(entry{when_ns, _sequence++, slot});
    }
  }
  template <class F>
  void after(std::int64_t delay_ns, F&& what) {
    at(_now_ns + delay_ns, std::forward<F>(what));
  }
  bool empty() const noexcept { return _queue.empty() && _due_head == _due.size(); }
  // Actions run so far (the relay bench reports them per message).
  std::uint64_t actions_run() const noexcept { return _ran; }
  // Advances the clock to the earliest action and runs it. False when nothing is queued.
  bool run_one() {
    if (empty()) return false;
    const entry next = take_next();
    _now_ns = next.when_ns;
    ++_ran;
    // Runs in its slot: the table is a deque, so actions queued meanwhile never move it, and
    // the slot is freed (captures destroyed) only after it ran.
    action& now = _actions[next.slot];
    now();
    now.reset();
    _free.push_back(next.slot);
    return true;
  }
  // Not from inside an action (the running one's slot would go).
  void clear() {
    _queue = {};
    _due.clear();
    _due_head = 0;
    _actions.clear();
    _free.clear();
  }

 private:
  struct entry {
    std::int64_t when_ns;
    std::uint64_t sequence;
    std::uint32_t slot;  // in _actions
    bool operator>(const entry& other) const noexcept {
      return when_ns != other.when_ns ? when_ns > other.when_ns : sequence > other.sequence;
    }
  };
  // The earlier of the heap's top and the first action due now, by (time, sequence): the
  // same order as one heap, but the many actions queued for the current time (a host's
  // completions) skip the heap. The due list is empty before the clock moves on.
  entry take_next() noexcept {
    if (_due_head < _due.size() && (_queue.empty() || _queue.top() > _due[_due_head])) {
      const entry next = _due[_due_head++];
      if (_due_head == _due.size()) {
        _due.clear();
        _due_head = 0;
      }
      return next;
    }
    const entry next = _queue.top();
    _queue.pop();
    return next;
  }

  std::int64_t _now_ns = 0;
  std::uint64_t _sequence = 0;
  std::uint64_t _ran = 0;
  std::priority_queue<entry, std::vector<entry>, std::greater<>> _queue;  // later than now
  std::vector<entry> _due;  // at now, in sequence order, from _due_head
  std::size_t _due_head = 0;
  std::deque<action> _actions;  // by slot; a deque: references stay valid while it grows
  std::vector<std::uint32_t> _free;  // slots of _actions that ran
};

}  // namespace ringmta::sim
