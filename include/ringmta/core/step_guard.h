// step_guard<T>: checks an object's invariants at the entry and the exit of one step (a
// completion handler, a timer, a callback), however the step returns.
//
// T provides `void check_invariants() const noexcept` (RINGMTA_ASSERT inside: a failure is a
// programmer error and aborts, in release builds too). The object must outlive the guard
// (connection slots do: they are reused, never freed while their shard runs).
#pragma once

namespace ringmta::core {

template <typename T>
class step_guard {
 public:
  explicit step_guard(const T& checked) noexcept : _checked(checked) {
    _checked.check_invariants();
  }
  ~step_guard() { _checked.check_invariants(); }
  step_guard(const step_guard&) = delete;
  step_guard& operator=(const step_guard&) = delete;

 private:
  const T& _checked;
};

}  // namespace ringmta::core
