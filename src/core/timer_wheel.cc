#include "ringmta/core/timer_wheel.h"

#include <algorithm>
#include <bit>

#include "ringmta/core/assert.h"

namespace ringmta::core {

namespace {
constexpr std::uint64_t slot_mask = timer_wheel::slots_per_level - 1;

constexpr bool low_bits_zero(std::uint64_t value, unsigned bits) {
  return (value & ((std::uint64_t{1} << bits) - 1)) == 0;
}
}  // namespace

timer_node::~timer_node() { RINGMTA_ASSERT(!armed()); }

timer_wheel::timer_wheel(std::uint64_t start_tick) noexcept : _now(start_tick) {
  for (auto& level : _slots) {
    for (auto& slot : level) slot.head._next = slot.head._prev = &slot.head;
  }
}

timer_wheel::~timer_wheel() {
  RINGMTA_ASSERT(_armed_count == 0);
  for (auto& level : _slots) {
    for (auto& slot : level) slot.head._next = slot.head._prev = nullptr;
  }
}

void timer_wheel::schedule_at(timer_node& node, std::uint64_t deadline_tick) noexcept {
  if (node.armed()) {
    unlink(node);
  } else {
    ++_armed_count;
  }
  node._deadline_tick = std::max(deadline_tick, _now + 1);
  place(node);
}

void timer_wheel::cancel(timer_node& node) noexcept {
  if (!node.armed()) return;
  unlink(node);
  --_armed_count;
}

// Puts an armed-to-be node in the level whose span covers its distance from now. Used by
// schedule_at and by cascades; does not touch _armed_count.
void timer_wheel::place(timer_node& node) noexcept {
  const std::uint64_t deadline = node._deadline_tick;
  std::uint64_t delta = deadline > _now ? deadline - _now : 0;
  std::uint64_t placed = deadline;
  if (delta >= range_ticks) {  // park at the top level; re-placed on its cascade
    delta = range_ticks - 1;
    placed = _now + delta;
  }
  unsigned level = 0;
  while (level + 1 < level_count && delta >= (std::uint64_t{1} << (level_bits * (level + 1)))) {
    ++level;
  }
  const auto slot = static_cast<unsigned>((placed >> (level_bits * level)) & slot_mask);
  timer_node& head = _slots[level][slot].head;
  node._level = static_cast<std::uint8_t>(level);
  node._slot = static_cast<std::uint8_t>(slot);
  node._prev = head._prev;  // append: FIFO among equal deadlines
  node._next = &head;
  head._prev->_next = &node;
  head._prev = &node;
  const std::uint64_t bit = std::uint64_t{1} << slot;
  if ((_occupied[level] & bit) == 0 && _next_known) {
    _next = std::min(_next, slot_tick(level, slot));
  }
  _occupied[level] |= bit;
}

void timer_wheel::unlink(timer_node& node) noexcept {
  RINGMTA_ASSERT(node.armed());
  node._prev->_next = node._next;
  node._next->_prev = node._prev;
  node._next = node._prev = nullptr;
  const timer_node& head = _slots[node._level][node._slot].head;
  if (head._next != &head) return;
  _occupied[node._level] &= ~(std::uint64_t{1} << node._slot);
  if (_next_known && slot_tick(node._level, node._slot) == _next) _next_known = false;
}

void timer_wheel::cascade(unsigned level) noexcept {
  const auto slot = static_cast<unsigned>((_now >> (level_bits * level)) & slot_mask);
  timer_node& head = _slots[level][slot].head;
  while (head._next != &head) {
    timer_node& node = *head._next;
    unlink(node);
    place(node);  // now closer: lands in a lower level (or the top again if parked)
  }
}

std::size_t timer_wheel::fire_slot(unsigned slot) noexcept {
  timer_node& head = _slots[0][slot].head;
  std::size_t fired = 0;
  // Nodes added by callbacks have deadlines > _now, so they never land in this slot.
  while (head._next != &head) {
    timer_node& node = *head._next;
    RINGMTA_ASSERT(node._deadline_tick <= _now);
    unlink(node);
    --_armed_count;
    ++fired;
    node._on_expire(node);
  }
  return fired;
}

std::size_t timer_wheel::advance(std::uint64_t now_tick) noexcept {
  std::size_t fired = 0;
  while (_now < now_tick) {
    _next_known = false;  // every slot's tick is seen from a new now (a callback may ask)
    if (_armed_count == 0) {
      _now = now_tick;
      break;
    }
    // Jump straight to the next tick with work (a level-0 deadline or the cascade of an occupied
    // slot): empty stretches cost nothing, whatever their length. Never past now_tick.
    _now = std::min(compute_next_tick(), now_tick);
    if ((_now & slot_mask) == 0) {
      // Highest level first: its nodes may land in the lower slots cascaded next.
      unsigned top = 1;
      while (top + 1 < level_count && low_bits_zero(_now, level_bits * (top + 1))) ++top;
      for (unsigned level = top; level >= 1; --level) cascade(level);
    }
    fired += fire_slot(static_cast<unsigned>(_now & slot_mask));
  }
  return fired;
}

std::uint64_t timer_wheel::next_tick() const noexcept {
  if (!_next_known) {
    _next = compute_next_tick();
    _next_known = true;
  }
  return _next;
}

std::uint64_t timer_wheel::compute_next_tick() const noexcept {
  if (_armed_count == 0) return no_timer;
  std::uint64_t best = no_timer;
  for (unsigned level = 0; level < level_count; ++level) {
    if (_occupied[level] == 0) continue;
    const unsigned shift = level_bits * level;
    const auto position = static_cast<int>((_now >> shift) & slot_mask);
    // Bit k of `rotated` is slot position+1+k: the first set bit is the nearest slot ahead.
    const std::uint64_t rotated = std::rotr(_occupied[level], position + 1);
    const auto nearest = static_cast<unsigned>((position + 1 + std::countr_zero(rotated)));
    best = std::min(best, slot_tick(level, nearest & slot_mask));
  }
  return best;
}

std::uint64_t timer_wheel::slot_tick(unsigned level, unsigned slot) const noexcept {
  const unsigned shift = level_bits * level;
  const auto position = static_cast<unsigned>((_now >> shift) & slot_mask);
  const std::uint64_t distance = ((slot - position - 1) & slot_mask) + 1;  // 1..64 slots ahead
  return level == 0 ? _now + distance : ((_now >> shift) + distance) << shift;
}

}  // namespace ringmta::core
