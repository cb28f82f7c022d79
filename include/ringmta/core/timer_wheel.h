// timer_wheel: a hierarchical timing wheel for the many per-connection timeouts of one shard.
//
// Five levels of 64 slots; level l holds timers due in [64^l, 64^(l+1)) ticks. Scheduling and
// cancelling are O(1) on intrusive nodes (no allocation per timer); advancing jumps from one
// tick with work to the next (found through per-level occupancy bitmaps), so an idle stretch
// costs nothing and each timer is moved at most once per level. The reactor advances the wheel
// once per loop iteration and sleeps until next_tick() (one kernel wait per shard, whatever the
// number of timers).
//
// Invariants: a node is in at most one wheel list; a node's deadline is always > now() while it
// is armed; a node fires at the first advance() whose tick reaches its deadline, never earlier.
// Deadlines beyond 64^5 ticks (12 days at 1 ms) are parked at the top level and re-placed on
// each cascade until they come into range.
// Never: allocates, throws, reads a clock (the caller passes ticks in), or is shared between
// threads (one wheel per shard).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace ringmta::core {

class timer_wheel;

// Embed one in the object that owns the timeout; recover the object in the callback (e.g. with
// a static member function that knows the node's offset).
class timer_node {
 public:
  using expire_fn = void (*)(timer_node& node) noexcept;

  explicit timer_node(expire_fn on_expire) noexcept : _on_expire(on_expire) {}
  timer_node(const timer_node&) = delete;
  timer_node& operator=(const timer_node&) = delete;
  ~timer_node();  // asserts the node is not armed: cancel before destroying the owner

  bool armed() const noexcept { return _prev != nullptr; }
  std::uint64_t deadline_tick() const noexcept { return _deadline_tick; }

 private:
  friend class timer_wheel;
  timer_node* _next = nullptr;
  timer_node* _prev = nullptr;  // non-null exactly while armed
  std::uint64_t _deadline_tick = 0;
  expire_fn _on_expire;
  std::uint8_t _level = 0;
  std::uint8_t _slot = 0;
};

// The usual way to embed a timeout: a timer_node that calls owner.*Method() when it expires.
//   core::member_timer<connection, &connection::on_timeout> timer{*this};
template <typename Owner, void (Owner::*Method)() noexcept>
class member_timer : public timer_node {
 public:
  explicit member_timer(Owner& owner) noexcept : timer_node(&expire), _owner(owner) {}

 private:
  static void expire(timer_node& node) noexcept {
    auto& self = static_cast<member_timer&>(node);
    (self._owner.*Method)();
  }
  Owner& _owner;
};

class timer_wheel {
 public:
  static constexpr unsigned level_bits = 6;
  static constexpr unsigned slots_per_level = 1u << level_bits;  // 64: one bitmap word per level
  static constexpr unsigned level_count = 5;
  static constexpr std::uint64_t range_ticks = std::uint64_t{1} << (level_bits * level_count);

  explicit timer_wheel(std::uint64_t start_tick = 0) noexcept;
  timer_wheel(const timer_wheel&) = delete;
  timer_wheel& operator=(const timer_wheel&) = delete;
  ~timer_wheel();  // asserts no timer is still armed

  // Arms (or re-arms, if already armed) `node` to fire at `deadline_tick`. A deadline at or
  // before now() fires at the next tick: a callback that re-arms itself with delay 0 cannot
  // loop inside one advance().
  void schedule_at(timer_node& node, std::uint64_t deadline_tick) noexcept;
  void schedule_after(timer_node& node, std::uint64_t delay_ticks) noexcept {
    schedule_at(node, _now + (delay_ticks == 0 ? 1 : delay_ticks));
  }
  // No-op when the node is not armed (a timer that already fired may be cancelled safely).
  void cancel(timer_node& node) noexcept;

  // Moves time forward to `now_tick` (earlier values are ignored: the clock is monotonic) and
  // runs the callback of every timer due, in deadline order. Callbacks may schedule and cancel
  // any timer, including other due ones. Returns how many fired.
  std::size_t advance(std::uint64_t now_tick) noexcept;

  // Earliest tick at which advance() can have work: an exact deadline for level 0, else the
  // next cascade of an occupied slot. `no_timer` when nothing is armed. Remembered between
  // calls: a loop asks after every turn, and most turns change no slot's occupancy.
  static constexpr std::uint64_t no_timer = ~std::uint64_t{0};
  std::uint64_t next_tick() const noexcept;

  std::uint64_t now() const noexcept { return _now; }
  std::size_t size() const noexcept { return _armed_count; }

 private:
  struct slot_list {
    timer_node head{nullptr};  // sentinel of a circular doubly-linked list
  };

  void place(timer_node& node) noexcept;
  void unlink(timer_node& node) noexcept;
  void cascade(unsigned level) noexcept;
  std::size_t fire_slot(unsigned slot) noexcept;
  // The tick at which advance() reaches `slot` of `level` (its deadline at level 0, its
  // cascade above), seen from now().
  std::uint64_t slot_tick(unsigned level, unsigned slot) const noexcept;
  std::uint64_t compute_next_tick() const noexcept;

  std::uint64_t _now;
  std::size_t _armed_count = 0;
  // next_tick()'s answer while _next_known: the minimum of slot_tick() over occupied slots, so
  // a newly occupied slot can only lower it, an emptied one only raise it (if it was that
  // minimum), and moving now() changes every slot's tick.
  mutable std::uint64_t _next = no_timer;
  mutable bool _next_known = false;
  std::array<std::uint64_t, level_count> _occupied{};  // bit s set: slot s of that level non-empty
  std::array<std::array<slot_list, slots_per_level>, level_count> _slots;
};

}  // namespace ringmta::core
