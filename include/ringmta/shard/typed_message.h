// Typed cross-shard messages (Seastar's submit_to and foreign_ptr, minus futures).
//
// A shard::message is 32 raw bytes; these helpers are the only code that turns its words into
// pointers and back. The handler is a template argument, so its parameter types are checked at
// compile time against what the sender passes, and no caller casts words:
//
//   void on_job(shard::shard& target, std::unique_ptr<job> j) noexcept;
//   shard::try_post<&on_job>(self, to, j);            // shard to shard; j kept when full
//   shard::post<&on_job>(runtime, to, j);             // from a thread that is not a shard
//   shard::make_message<&on_job>(std::move(j));       // for a sender's own backlog
//   shard::make_parcel<&on_job>(std::move(j), registry);  // for glue holding a shard::mesh
//
// Three payloads:
//   - an owned object (std::unique_ptr<T>): ownership moves with the message and the handler
//     receives it; a parcel (`make_parcel<&h>(std::move(j), registry)`) also gives the handler
//     a context by reference: h(mesh&, C&, std::unique_ptr<T>);
//   - a small value (trivially copyable, at most 16 bytes) copied into the words:
//     h(shard&, V);
//   - a home_ptr<T> is such a value: a pointer that may only be followed on its home shard.
//
// Invariants: a message made by make_message owns its object until its handler runs (a message
// never delivered, e.g. still in a sender's backlog at exit, leaks it: the process is ending);
// post/try_post leave the object with the caller when the target's queue is full.
// Never: blocks, or copies an owned object.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "ringmta/core/assert.h"
#include "ringmta/shard/runtime.h"

namespace ringmta::shard {

// A pointer to an object that lives on one shard (its home) and is handed to others only to be
// passed back: following it (*, ->, get) anywhere but on the home shard's thread is a
// programmer error (RINGMTA_ASSERT, on in release). Copyable, 16 bytes: fits in a message.
template <typename T>
class home_ptr {
 public:
  home_ptr() noexcept = default;
  home_ptr(T* object, unsigned home) noexcept : _object(object), _home(home) {}
  // A pointer to an object of the calling shard.
  static home_ptr here(T* object) noexcept {
    const shard* current = shard::current();
    RINGMTA_ASSERT(current != nullptr);
    return home_ptr(object, current->id());
  }

  unsigned home() const noexcept { return _home; }
  bool at_home() const noexcept {
    const shard* current = shard::current();
    return current != nullptr && current->id() == _home;
  }
  explicit operator bool() const noexcept { return _object != nullptr; }
  T* get() const noexcept {
    RINGMTA_ASSERT(at_home());
    return _object;
  }
  T& operator*() const noexcept { return *get(); }
  T* operator->() const noexcept { return get(); }

 private:
  T* _object = nullptr;
  unsigned _home = 0;
};

namespace detail {
inline std::uint64_t to_word(const void* pointer) noexcept {
  return reinterpret_cast<std::uintptr_t>(pointer);
}
template <typename T>
T* from_word(std::uint64_t word) noexcept {
  return reinterpret_cast<T*>(static_cast<std::uintptr_t>(word));
}
}  // namespace detail

// An owned object for Handler(shard&, std::unique_ptr<T>) on the target shard.
template <auto Handler, typename T>
message make_message(std::unique_ptr<T> object) noexcept {
  static_assert(std::is_nothrow_invocable_v<decltype(Handler), shard&, std::unique_ptr<T>>,
                "handler must be void(shard&, std::unique_ptr<T>) noexcept");
  message m{};
  m.handler = [](shard& target, const message& received) noexcept {
    Handler(target, std::unique_ptr<T>(detail::from_word<T>(received.words[0])));
  };
  m.words[0] = detail::to_word(object.release());
  return m;
}

namespace detail {
template <auto Handler, typename T, typename C>
void deliver_parcel(mesh& target, const std::uint64_t (&words)[2]) noexcept {
  Handler(target, *from_word<C>(words[1]), std::unique_ptr<T>(from_word<T>(words[0])));
}
}  // namespace detail

// An owned object and a context for Handler(mesh&, C&, std::unique_ptr<T>), as a parcel
// (shard/mesh.h): the same handler runs whether the runtime's queues or a simulated mesh
// deliver it. Ownership moves as with make_message; the context must outlive the parcel (a
// registry every shard shares, set before the shards start).
template <auto Handler, typename T, typename C>
parcel make_parcel(std::unique_ptr<T> object, C& context) noexcept {
  static_assert(std::is_nothrow_invocable_v<decltype(Handler), mesh&, C&, std::unique_ptr<T>>,
                "handler must be void(mesh&, C&, std::unique_ptr<T>) noexcept");
  parcel p{};
  p.on_shard = [](shard& target, const message& received) noexcept {
    detail::deliver_parcel<Handler, T, C>(target, received.words);
  };
  p.on_mesh = [](mesh& target, const parcel& received) noexcept {
    detail::deliver_parcel<Handler, T, C>(target, received.words);
  };
  p.drop = [](const parcel& unsent) noexcept { delete detail::from_word<T>(unsent.words[0]); };
  p.words[0] = detail::to_word(object.release());
  p.words[1] = detail::to_word(&context);
  return p;
}

// A small value copied into the message, for Handler(shard&, V).
template <auto Handler, typename V>
  requires(std::is_trivially_copyable_v<V> && sizeof(V) <= sizeof(message::words))
message make_message(const V& value) noexcept {
  static_assert(std::is_nothrow_invocable_v<decltype(Handler), shard&, V>,
                "handler must be void(shard&, V) noexcept");
  message m{};
  m.handler = [](shard& target, const message& received) noexcept {
    V copy;
    std::memcpy(static_cast<void*>(&copy), received.words, sizeof(V));
    Handler(target, copy);
  };
  std::memcpy(m.words, static_cast<const void*>(&value), sizeof(V));
  return m;
}

// Takes back the object of a message made by make_message that could not be sent.
template <typename T>
std::unique_ptr<T> reclaim(const message& unsent) noexcept {
  return std::unique_ptr<T>(detail::from_word<T>(unsent.words[0]));
}

// Shard to shard (from the calling shard's loop). False when the queue is full: `object` is
// still the caller's.
template <auto Handler, typename T>
bool try_post(shard& from, unsigned to, std::unique_ptr<T>& object) noexcept {
  const message m = make_message<Handler>(std::move(object));
  if (from.try_send(to, m)) return true;
  object = reclaim<T>(m);
  return false;
}

// From a thread that is not a shard (workers, the control plane; runtime::post). False when the
// target's queue is full: `object` is still the caller's.
template <auto Handler, typename T>
bool post(runtime& target_runtime, unsigned to, std::unique_ptr<T>& object) {
  const message m = make_message<Handler>(std::move(object));
  if (target_runtime.post(to, m)) return true;
  object = reclaim<T>(m);
  return false;
}

// A value from a thread that is not a shard.
template <auto Handler, typename V>
  requires(std::is_trivially_copyable_v<V> && sizeof(V) <= sizeof(message::words))
bool post_value(runtime& target_runtime, unsigned to, const V& value) {
  return target_runtime.post(to, make_message<Handler>(value));
}

}  // namespace ringmta::shard
