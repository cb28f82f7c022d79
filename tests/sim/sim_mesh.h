// sim::sim_mesh_hub: the cross-shard queues of simulated shards (issue 16, "N shards in one
// thread"): a shard::mesh per shard, one FIFO per (sender, target) pair with a seeded capacity
// (a full one refuses: the relay's backlog), each parcel delivered by a clock event after a
// seeded latency, in order per pair. Shared by sim_relay_test and ringmta-sim's world.
// Never: delivers a parcel inside try_send, or one posted before a crash().
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "ringmta/shard/mesh.h"
#include "sim_random.h"
#include "sim_scheduler.h"

namespace ringmta::sim {

class sim_mesh_hub {
 public:
  class endpoint final : public shard::mesh {
   public:
    endpoint(sim_mesh_hub& hub, unsigned id) : _hub(hub), _id(id) {}
    unsigned id() const noexcept override { return _id; }
    unsigned count() const noexcept override { return _hub.count(); }
    bool try_send(unsigned to, const shard::parcel& p) noexcept override {
      return _hub.post(_id, to, p);
    }

   private:
    sim_mesh_hub& _hub;
    unsigned _id;
  };

  sim_mesh_hub(scheduler& clock, random& rng, unsigned shards)
      : _clock(clock), _rng(rng), _lanes(shards * shards) {
    for (unsigned i = 0; i < shards; ++i)
      _endpoints.push_back(std::make_unique<endpoint>(*this, i));
    _capacity = static_cast<std::size_t>(_rng.between(1, 4));
  }
  unsigned count() const noexcept { return static_cast<unsigned>(_endpoints.size()); }
  endpoint& at(unsigned id) noexcept { return *_endpoints[id]; }
  // The target's loop turns after its parcels ran (as a shard runs its hooks after draining).
  void set_turn(std::function<void(unsigned target)> turn) { _turn = std::move(turn); }
  std::uint64_t crossed() const noexcept { return _crossed; }
  std::uint64_t refused() const noexcept { return _refused; }
  bool idle() const noexcept {
    return std::all_of(_lanes.begin(), _lanes.end(), [](const auto& lane) { return lane.empty(); });
  }
  // Power loss: the parcels on their way are gone (their payloads freed), and the deliveries
  // already scheduled find nothing to deliver.
  void crash() {
    for (auto& lane : _lanes) {
      for (const shard::parcel& p : lane) p.drop(p);
      lane.clear();
    }
    ++_generation;
  }

 private:
  bool post(unsigned from, unsigned to, const shard::parcel& p) {
    auto& lane = _lanes[from * count() + to];
    if (lane.size() >= _capacity) {
      ++_refused;
      return false;
    }
    lane.push_back(p);
    if (from != to) ++_crossed;
    // Each delivery takes its lane's oldest parcel: the order per pair is kept whatever the
    // latencies drawn.
    _clock.after(static_cast<std::int64_t>(_rng.between(1'000, 2'000'000)),
                 [this, from, to, generation = _generation] {
      if (generation != _generation) return;  // posted before a crash
      auto& waiting = _lanes[from * count() + to];
      const shard::parcel next = waiting.front();
      waiting.pop_front();
      next.on_mesh(at(to), next);
      _turn(to);
      // The sender's backlog may fit now: a shard whose queue to `to` was full retries on its
      // next loop turn, which the daemon takes within a second (idle_wait_ms_max) and a
      // simulated host only when something wakes it.
      if (from != to) _turn(from);
    });
    return true;
  }

  scheduler& _clock;
  random& _rng;
  std::vector<std::deque<shard::parcel>> _lanes;  // [from * count + to]
  std::vector<std::unique_ptr<endpoint>> _endpoints;
  std::function<void(unsigned)> _turn;
  std::size_t _capacity = 1;
  std::uint64_t _crossed = 0;
  std::uint64_t _refused = 0;
  std::uint64_t _generation = 0;
};

}  // namespace ringmta::sim
