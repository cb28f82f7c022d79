#include "allocation_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<std::uint64_t> counted{0};
std::atomic<bool> counting{true};
thread_local bool counting_here = false;
}  // namespace

namespace ringmta::testing {
std::uint64_t allocations() noexcept { return counted.load(std::memory_order_relaxed); }
void reset_allocations() noexcept { counted.store(0, std::memory_order_relaxed); }
void set_counting_allocations(bool on) noexcept { counting.store(on, std::memory_order_relaxed); }
void set_counting_allocations_on_this_thread(bool on) noexcept { counting_here = on; }
}  // namespace ringmta::testing

// Every replaceable form without an alignment argument, so allocation and release always pair
// up (ASan checks that; std::stable_sort uses the nothrow form).
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (counting_here || counting.load(std::memory_order_relaxed))
    counted.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new(std::size_t size) {
  if (void* block = operator new(size, std::nothrow)) return block;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return operator new(size, std::nothrow);
}
// GCC cannot see that the replaced operator new above is malloc-based.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* block) noexcept { std::free(block); }
void operator delete(void* block, std::size_t) noexcept { std::free(block); }
void operator delete(void* block, const std::nothrow_t&) noexcept { std::free(block); }
void operator delete[](void* block) noexcept { std::free(block); }
void operator delete[](void* block, std::size_t) noexcept { std::free(block); }
void operator delete[](void* block, const std::nothrow_t&) noexcept { std::free(block); }
