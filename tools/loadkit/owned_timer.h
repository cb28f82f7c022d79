// loadkit::owned_timer: a core::timer_node that knows its owner, so an expiry callback finds
// the object without offsetof tricks on non-standard-layout types. The node is the first member
// of a standard-layout struct, so the node's address is the struct's (pointer-interconvertible).
#pragma once

#include "ringmta/core/timer_wheel.h"

namespace ringmta::loadkit {

template <typename Owner>
struct owned_timer {
  core::timer_node node;
  Owner* owner = nullptr;

  explicit owned_timer(core::timer_node::expire_fn on_expire) noexcept : node(on_expire) {}
  static Owner& owner_of(core::timer_node& expired) noexcept {
    return *reinterpret_cast<owned_timer*>(&expired)->owner;
  }
};

}  // namespace ringmta::loadkit
