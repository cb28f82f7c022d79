// shard::mesh: what glue needs from the runtime to reach the other shards (issue 16 item 1,
// "cross-shard messages" of the narrow interface): its own shard id, the number of shards, and
// posting a typed message to shard N. shard::shard implements it over the runtime's SPSC queues;
// tests/sim implements it over the simulator's event queue, so glue holding a mesh& and a
// host& (server::relay) runs in both with no #ifdef SIM.
//
// A parcel is a shard::message with two entry points for one typed handler: the runtime's
// queues carry shard::messages and call on_shard with the target shard, a simulated mesh calls
// on_mesh with its own mesh. make_parcel (typed_message.h) fills both from one handler taking
// (mesh&, ...), so the handler never sees which kind delivered it, and no caller casts words.
// `drop` frees the payload of a parcel that will never be delivered: a simulated mesh at a
// simulated power loss (the runtime delivers every message it accepted).
//
// Invariants: like shard::try_send — a parcel runs on the target's loop, never inside
// try_send, in the order sent per (sender, target) pair; false means the target's queue is
// full and the sender keeps the parcel (nothing is dropped).
// Never: called from another thread than the sender shard's loop.
#pragma once

#include <cstdint>

namespace ringmta::shard {

class shard;
class mesh;
struct message;

struct parcel {
  void (*on_shard)(shard& target, const message& received) noexcept = nullptr;
  void (*on_mesh)(mesh& target, const parcel& received) noexcept = nullptr;
  void (*drop)(const parcel& unsent) noexcept = nullptr;
  std::uint64_t words[2] = {};
};

class mesh {
 public:
  // This shard's id, in [0, count()).
  virtual unsigned id() const noexcept = 0;
  virtual unsigned count() const noexcept = 0;
  // Queues `p` for shard `to` (may be this one). False when that queue is full: back-pressure.
  virtual bool try_send(unsigned to, const parcel& p) noexcept = 0;

 protected:
  ~mesh() = default;
};

}  // namespace ringmta::shard
