// Typed cross-shard messages: an object whose ownership moves with the message, delivered to a
// handler that takes it by type (Seastar's submit_to, minus futures). The 32-byte
// shard::message carries the pointer; the handler's type is checked at compile time, so no
// caller casts words to pointers, and an object that could not be posted is freed here.
//
//   struct new_limits { ... };
//   void on_new_limits(shard::shard& target, std::unique_ptr<new_limits> m) noexcept;
//   shard::post_owned<new_limits, &on_new_limits>(runtime, shard_id, std::move(limits));
//
// From threads that are not shards (runtime::post, control plane). Never on the hot path.
#pragma once

#include <cstdint>
#include <memory>

#include "ringmta/shard/runtime.h"

namespace ringmta::shard {

template <typename T, void (*Handler)(shard&, std::unique_ptr<T>) noexcept>
bool post_owned(runtime& target_runtime, unsigned to, std::unique_ptr<T> object) {
  message m{};
  m.handler = [](shard& target, const message& received) noexcept {
    Handler(target, std::unique_ptr<T>(reinterpret_cast<T*>(received.words[0])));
  };
  m.words[0] = reinterpret_cast<std::uintptr_t>(object.get());
  if (!target_runtime.post(to, m)) return false;  // `object` is freed by its unique_ptr
  [[maybe_unused]] T* owned_by_message = object.release();
  return true;
}

}  // namespace ringmta::shard
