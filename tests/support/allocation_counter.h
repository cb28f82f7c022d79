// Counting heap allocations in a test binary: link allocation_counter.cc (meson:
// allocation_counter_dep), which replaces every non-aligned form of operator new/delete.
// Counting is on from the start; a test that wants a window turns it off, resets, turns it on.
// Only operator new is counted (our engines never call malloc directly).
#pragma once

#include <cstdint>

namespace ringmta::testing {

std::uint64_t allocations() noexcept;  // operator new calls counted so far
void reset_allocations() noexcept;
void set_counting_allocations(bool on) noexcept;  // every thread (on by default)
// Counts this thread's allocations even while counting is off for every thread.
void set_counting_allocations_on_this_thread(bool on) noexcept;

}  // namespace ringmta::testing
