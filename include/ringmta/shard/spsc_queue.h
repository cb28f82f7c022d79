// spsc_queue<T>: a bounded, lock-free single-producer single-consumer ring of T.
//
// One per ordered pair of shards (Seastar's smp queues): shard A is the only producer of the
// A->B queue, shard B its only consumer. The producer's and the consumer's indices live on
// separate cache lines, each side keeps a private copy of the other's index and re-reads the
// shared one only when its copy says full/empty, so steady traffic costs no cache-line
// ping-pong per message.
//
// Invariants: capacity is a power of two fixed at construction; try_push never overwrites an
// unconsumed element (it returns false when full: the caller keeps the element, nothing is
// lost); elements are consumed in push order.
// Never: blocks, allocates after construction, or is used by two producers or two consumers.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ringmta/core/assert.h"

namespace ringmta::shard {

inline constexpr std::size_t cache_line_bytes = 64;

template <typename T>
class spsc_queue {
 public:
  explicit spsc_queue(std::uint32_t capacity)
      : _slots(std::make_unique<T[]>(capacity)), _mask(capacity - 1) {
    RINGMTA_ASSERT(capacity >= 2 && std::has_single_bit(capacity));
  }
  spsc_queue(const spsc_queue&) = delete;
  spsc_queue& operator=(const spsc_queue&) = delete;

  // Producer only. False when full.
  bool try_push(const T& value) noexcept {
    const std::uint64_t tail = _producer.tail.load(std::memory_order_relaxed);
    if (tail - _producer.cached_head > _mask) {
      _producer.cached_head = _consumer.head.load(std::memory_order_acquire);
      if (tail - _producer.cached_head > _mask) return false;
    }
    _slots[tail & _mask] = value;
    _producer.tail.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer only. False when empty.
  bool try_pop(T& out) noexcept {
    const std::uint64_t head = _consumer.head.load(std::memory_order_relaxed);
    if (head == _consumer.cached_tail) {
      _consumer.cached_tail = _producer.tail.load(std::memory_order_acquire);
      if (head == _consumer.cached_tail) return false;
    }
    out = _slots[head & _mask];
    _consumer.head.store(head + 1, std::memory_order_release);
    return true;
  }

  // Consumer only: calls fn(const T&) for up to `limit` elements, freeing their slots once at the
  // end (one release store per batch). Returns how many were consumed.
  template <typename Fn>
  std::size_t drain(Fn&& fn, std::size_t limit) noexcept {
    const std::uint64_t head = _consumer.head.load(std::memory_order_relaxed);
    _consumer.cached_tail = _producer.tail.load(std::memory_order_acquire);
    std::uint64_t available = _consumer.cached_tail - head;
    if (available > limit) available = limit;
    for (std::uint64_t i = 0; i < available; ++i) {
      fn(static_cast<const T&>(_slots[(head + i) & _mask]));
    }
    if (available > 0) _consumer.head.store(head + available, std::memory_order_release);
    return static_cast<std::size_t>(available);
  }

  // Consumer side: whether anything is waiting (reads the producer's index).
  bool empty_for_consumer() const noexcept {
    return _consumer.head.load(std::memory_order_relaxed) ==
           _producer.tail.load(std::memory_order_acquire);
  }
  // Approximate from any thread (for metrics).
  std::size_t size_approx() const noexcept {
    return static_cast<std::size_t>(_producer.tail.load(std::memory_order_relaxed) -
                                    _consumer.head.load(std::memory_order_relaxed));
  }
  std::uint32_t capacity() const noexcept { return _mask + 1; }

 private:
  struct alignas(cache_line_bytes) producer_side {
    std::atomic<std::uint64_t> tail{0};
    std::uint64_t cached_head = 0;  // the producer's last look at head
  };
  struct alignas(cache_line_bytes) consumer_side {
    std::atomic<std::uint64_t> head{0};
    std::uint64_t cached_tail = 0;  // the consumer's last look at tail
  };

  producer_side _producer;
  consumer_side _consumer;
  alignas(cache_line_bytes) std::unique_ptr<T[]> _slots;
  std::uint32_t _mask;
};

}  // namespace ringmta::shard
