// The REAL server::relay (src/server/relay*.cc: jobs to connections, outcomes to marks, DSNs,
// the home/owner split across shards) over the real outbound::outbound, each shard a simulated
// host (sim_host.h) with its own real spool::store on a simulated disk (sim_disk.h), the shards
// joined by a simulated shard::mesh: every parcel is an event of the shared simulated clock,
// delivered after a seeded latency in order per (sender, target) pair, and a pair's queue holds
// a seeded 1-4 parcels, so try_send refuses and the relay's backlog carries the rest (issue 16,
// "N shards in one thread"). No #ifdef: the relay is the daemon's, built as the daemon builds it
// from a host and a mesh.
//
// The world per seed: 1-3 shards; 4 destinations dest0..dest3.example plus refuse.example
// (every command 554) and origin.example (the senders' domain: DSNs go there), each routed to one
// remote MTA (a real smtp::server_session: sim_remote_mta.h) that answers 451 to up to 10% of
// commands; 10-40 messages of 1-3 recipients committed on seeded home shards, so jobs and
// outcomes cross shards whenever a destination's owner is not the message's home.
//
// Checks: every recipient of a live destination is delivered exactly once with the message's
// body; every recipient at refuse.example is bounced, and its sender gets a DSN naming the
// message; every spool ends with no queued message (each recipient's final mark made durable:
// the message left the store); nothing waits in a relay (drained), parcels crossed shards and
// some were refused by a full queue (when more than one shard), and a seed replays exactly.
// With a power loss (1-60 ms into the deliveries, once every message is durable; torn or not):
// the spools are recovered (spool::recover on the disks' durable images), new stores and
// relays start from them and route what was queued; then every live recipient is delivered at
// least once, and none whose final state recovery found is delivered again (DUPLICATE).

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ringmta/admin/log.h"
#include "ringmta/server/egress.h"
#include "ringmta/server/relay.h"
#include "ringmta/shard/mesh.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"
#include "sim_disk.h"
#include "sim_host.h"
#include "sim_mesh.h"
#include "sim_random.h"
#include "sim_remote_mta.h"
#include "sim_scheduler.h"

namespace ringmta::sim {
namespace {

constexpr std::uint64_t actions_max = 5'000'000;
constexpr std::int64_t epoch_ms = 1'800'000'000'000;
const std::vector<std::string> live_domains = {"dest0.example", "dest1.example",
                                               "dest2.example", "dest3.example"};
constexpr std::string_view refusing_domain = "refuse.example";
constexpr std::string_view sender_domain = "origin.example";

struct test_message {
  std::string key;
  unsigned home = 0;
  spool::envelope envelope;
  std::string wire;  // the body as the spool holds it (CRLF lines, no dot at a line start)
  bool routed = false;  // durable and handed to the relay
};

// A shard's spool. `busy`: one message in reception at a time and small buffers, so a DSN's
// store::begin meets EAGAIN and its bytes go in over several loop turns.
spool::store_config store_config_for(std::uint64_t seed, unsigned id, bool busy) {
  spool::store_config config;
  config.directory = fmt::format("/sim/shard-{}", id);  // never touched: the disk's names
  config.shard = id;
  config.segment_bytes = 256u << 10;
  config.journal_bytes = 64u << 10;
  config.random_seed = seed | 1;
  if (busy) {
    config.pending_messages_max = 1;
    config.block_bytes = 4096;
    config.batch_bytes_max = 8192;
    config.buffered_bytes_max = 16384;
  }
  return config;
}

// One simulated shard: its host, disk, store and the daemon's relay over them. Its loop hook
// plays the daemon's shard_services: the store's group commit, its operations to the disk,
// its events to the relay (DSN commits, action records) or to the test's own commits.
class sim_shard final : public shard::host_hook {
 public:
  // `spool_disk` outlives the shard (a crash ends the shard, not the disk); `recovered`: what
  // spool::recover found on it (empty at the first start).
  sim_shard(scheduler& clock, std::uint64_t seed, unsigned id, sim_network network,
            shard::mesh& peers, const server::relay_config& config, disk& spool_disk,
            const spool::store_config& store_config, spool::recovered_state recovered)
      : _host(clock, seed * 31 + id, std::move(network), 2'000'000, epoch_ms),
        _disk(spool_disk),
        _log(admin::log_format::json) {
    _store = std::make_unique<spool::store>(store_config, std::move(recovered));
    _host.add_iteration_hook(*this);  // before the relay's, as in the daemon
    _relay = std::make_unique<server::relay>(config, _host, peers, *_store, _metrics, _log);
  }
  void on_disk_done(std::uint64_t token, std::int64_t result) {
    _store->complete(token, result);
    _host.wake();
  }
  ~sim_shard() {
    _relay->stop();
    _relay.reset();
  }

  sim_host& host() noexcept { return _host; }
  server::relay& relay() noexcept { return *_relay; }
  const server::relay_metrics& metrics() const noexcept { return _metrics; }
  spool::store& store() noexcept { return *_store; }
  admin::log_buffer& log() noexcept { return _log; }
  void submit(test_message& message) { _to_commit.push_back(&message); }
  bool idle() const noexcept {
    return _to_commit.empty() && !_open && _tickets.empty() && _store->idle() &&
           _disk.in_flight() == 0;
  }

  void before_wait() noexcept override {
    while (commit_next()) {
    }
    _store->flush();
    spool::operation op;
    while (_store->next_operation(op)) _disk.submit(op);
    spool::event event;
    while (_store->next_event(event)) {
      if (event.kind == spool::event_kind::marked) {
        _relay->on_marked(event.ticket, event.error);
        continue;
      }
      if (_relay->on_committed(event.ticket, event.error)) continue;  // a DSN being spooled
      const auto mine = _tickets.find(event.ticket);
      if (mine == _tickets.end()) continue;
      EXPECT_EQ(event.error, 0) << "commit failed on a disk without faults";
      _relay->route(mine->second.message->envelope, mine->second.body);
      mine->second.message->routed = true;
      _tickets.erase(mine);
    }
  }

 private:
  struct committing {
    test_message* message = nullptr;
    std::vector<spool::body_slice> body;
  };

  // One message at a time through begin/append/commit, as a session does; EAGAIN and short
  // appends wait for the next completion (false: nothing more this turn).
  bool commit_next() {
    if (!_open) {
      if (_to_commit.empty()) return false;
      auto handle = _store->begin(_host.wall_ms() / 1000);
      if (!handle) return false;
      _handle = handle.value();
      _appended = 0;
      _open = true;
    }
    test_message& message = *_to_commit.front();
    if (_appended < message.wire.size()) {
      auto taken = _store->append(_handle, std::string_view(message.wire).substr(_appended));
      EXPECT_TRUE(taken.ok());
      if (!taken) return false;
      _appended += taken.value();
      if (_appended < message.wire.size()) return false;
    }
    message.envelope.id = _store->id_of(_handle);
    message.envelope.received_seconds = _host.wall_ms() / 1000;  // as a session stamps it
    committing pending{&message, {}};
    auto ticket = _store->commit(_handle, message.envelope, &pending.body);
    if (!ticket) {
      EXPECT_EQ(ticket.error(), EAGAIN);
      return false;
    }
    _tickets.emplace(ticket.value(), std::move(pending));
    _to_commit.pop_front();
    _open = false;
    return true;
  }

  sim_host _host;
  disk& _disk;
  std::unique_ptr<spool::store> _store;
  server::relay_metrics _metrics;
  admin::log_buffer _log;
  std::unique_ptr<server::relay> _relay;
  std::deque<test_message*> _to_commit;
  spool::message_handle _handle{};
  std::size_t _appended = 0;
  bool _open = false;
  std::map<std::uint64_t, committing> _tickets;
};

std::vector<std::string> every_domain() {
  std::vector<std::string> out = live_domains;
  out.emplace_back(refusing_domain);
  out.emplace_back(sender_domain);
  return out;
}

server::relay_config relay_config_for(std::uint64_t seed, std::vector<server::relay*>& relays) {
  server::relay_config config;
  config.hostname = "mx.sim.example";
  const auto domains = every_domain();
  for (std::size_t i = 0; i < domains.size(); ++i)
    config.routes.push_back({domains[i], fmt::format("10.0.0.{}", i + 1), 25});
  config.tls_default = outbound::tls_policy::none;
  config.scheduler.retry_delays_ms = {2'000, 5'000, 10'000};
  config.scheduler.lifetime_max_ms = 3'600'000;
  config.scheduler.delay_warning_ms = 0;
  config.scheduler.random_seed = seed | 1;
  config.egress = std::make_shared<const server::egress_table>(config::settings{});
  config.outbound = outbound_config_for_sim(64);  // > connections_max, as the daemon has it
  config.dns.resolver.servers.push_back(dns::server_address{dns::ip_address::v4(192, 0, 2, 53), 53});
  config.dns.resolver.ipv6 = false;
  config.dns.random = [dns_rng = random(seed ^ 0xd115)]() mutable { return dns_rng.next(); };
  config.shards = &relays;
  return config;
}

// Every recipient's final state is recorded (the store keeps a final entry until its segment
// goes, or has already forgotten it).
bool left_the_queue(const spool::store& store, const test_message& m) {
  const spool::message_entry* entry = store.find(m.envelope.id);
  return entry == nullptr || entry->status == spool::message_status::final;
}

struct run_result {
  world_record record;
  std::vector<std::unique_ptr<test_message>> messages;
  bool finished = false;
  bool drained = false;
  std::size_t queued_left = 0;
  std::uint64_t crossed = 0;
  std::uint64_t refused = 0;
  std::uint64_t dsn_retries = 0;  // DSNs the (last) relays built again (ringmta_dsn_retries_total)
  unsigned shards = 0;
  std::int64_t simulated_ns = 0;
  bool crashed = false;
  std::size_t recovered_queued = 0;  // queued messages the restart found (DSNs included)
  // Deliveries counted at the crash of recipients whose final state recovery found: none of
  // them may be delivered again (a recipient not final may: its delivery was in flight).
  std::map<std::pair<std::string, std::string>, std::uint32_t> final_at_crash;
};

// One process of 1-3 simulated shards, their disks (which outlive a crash), the mesh between
// them, and the remote MTAs.
class relay_world {
 public:
  relay_world(std::uint64_t seed, unsigned shards, bool busy_spool)
      : _seed(seed), _busy_spool(busy_spool), _rng(seed), _fault_rng(seed * 0x9e3779b97f4a7c15ull + 0xfa17),
        _relays(shards, nullptr), _config(relay_config_for(seed, _relays)),
        _hub(_clock, _rng, shards) {
    _result.shards = shards;
    _faults.temporary = static_cast<double>(_rng.between(0, 100)) / 1000;
    _refusing.permanent = 1;
    _extensions.pipelining = _rng.chance(0.5);
    _extensions.chunking = _rng.chance(0.5);
    _nodes.resize(shards);
    for (unsigned i = 0; i < shards; ++i) {
      _disks.push_back(std::make_unique<disk>(
          _clock, _rng, disk_profile{}, disk_bug::none,
          [this, i](std::uint64_t token, std::int64_t result) {
            if (_nodes[i]) _nodes[i]->on_disk_done(token, result);
          },
          [](std::string_view) {}));
    }
    _hub.set_turn([this](unsigned target) { _nodes[target]->host().wake(); });
    for (unsigned i = 0; i < shards; ++i) start_shard(i, spool::recovered_state{});
    start_relays();
  }
  ~relay_world() { _nodes.clear(); }

  run_result run(bool with_crash) {
    add_messages();
    if (with_crash) arm_crash();
    _result.finished = run_until([this] { return settled(); });
    _result.simulated_ns = _clock.now_ns();
    for (auto& node : _nodes) _result.queued_left += node->store().stats().queued_messages;
    // The daemon's shutdown: no more connections; each relay drains (its idle ones close).
    _shutting_down = true;
    for (auto& node : _nodes) node->relay().begin_shutdown();
    _result.drained = run_until([this] {
      return std::all_of(_nodes.begin(), _nodes.end(),
                         [](const auto& node) { return node->relay().drained(); });
    });
    for (auto& node : _nodes) _result.dsn_retries += node->metrics().dsn_retries.read();
    _result.crossed = _hub.crossed();
    _result.refused = _hub.refused();
    _nodes.clear();
    return std::move(_result);
  }

 private:
  sim_network network() {
    sim_network out;
    out.connect = [this](const core::endpoint& address) -> std::unique_ptr<stream_peer> {
      const auto domains = every_domain();
      for (std::size_t i = 0; i < domains.size(); ++i) {
        if (address.to_string() != fmt::format("10.0.0.{}:25", i + 1)) continue;
        const bool refuses = domains[i] == refusing_domain;
        return std::make_unique<remote_mta>(_result.record, domains[i], _extensions, false,
                                            refuses ? _refusing : _faults, _fault_rng);
      }
      return nullptr;
    };
    out.datagram = [](const core::endpoint&, std::string_view) {
      return std::vector<std::string>{};
    };
    return out;
  }

  void start_shard(unsigned i, spool::recovered_state recovered) {
    _nodes[i] = std::make_unique<sim_shard>(_clock, _seed, i, network(), _hub.at(i), _config,
                                            *_disks[i], store_config_for(_seed, i, _busy_spool),
                                            std::move(recovered));
    _relays[i] = &_nodes[i]->relay();
    // One process, one descriptor table: an owner shard reads the body of a message from its
    // home shard's segment files (the daemon's shards share the spool's fds the same way).
    _nodes[i]->host().set_file_reader(
        [this](int fd, std::uint64_t offset, void* into, std::uint32_t n) {
          for (const auto& spool_disk : _disks) {
            const std::int64_t got = spool_disk->read(fd, offset, into, n);
            if (got != -EBADF) return got;
          }
          return std::int64_t{-EBADF};
        });
  }

  // Every relay is registered before any starts (a started relay may send to any other).
  void start_relays() {
    for (auto& node : _nodes) EXPECT_TRUE(node->relay().start().ok());
    for (auto& node : _nodes) node->host().wake();
  }

  void add_messages() {
    const auto message_count = _rng.between(10, 40);
    const unsigned shards = _result.shards;
    for (std::uint64_t i = 0; i < message_count; ++i) {
      auto m = std::make_unique<test_message>();
      m->key = fmt::format("key.{}.{}", _seed, i);
      m->home = static_cast<unsigned>(_rng.below(shards));
      m->envelope.reverse_path = fmt::format("sender{}@{}", i, sender_domain);
      m->envelope.helo = "client.sim.example";
      m->envelope.client_address = "192.0.2.1";
      m->envelope.body = spool::body_type::seven_bit;
      const bool refused = _rng.chance(0.15);
      const std::string domain = refused ? std::string(refusing_domain)
                                         : live_domains[_rng.below(live_domains.size())];
      const auto rcpts = _rng.between(1, 3);
      for (std::uint64_t r = 0; r < rcpts; ++r)
        m->envelope.recipients.push_back({fmt::format("user{}@{}", r, domain), 0, {}});
      m->wire = fmt::format("Message-ID: <{}@sim.example>\r\nSubject: {}\r\n\r\n", m->key, i);
      const auto lines = _rng.between(1, 120);
      for (std::uint64_t l = 0; l < lines; ++l)
        m->wire += fmt::format("line {} of {} ....................\r\n", l, i);
      _result.messages.push_back(std::move(m));
    }
    for (const auto& m : _result.messages) _nodes[m->home]->submit(*m);
    for (auto& node : _nodes) node->host().wake();
  }

  bool run_until(const std::function<bool()>& done) {
    for (auto& node : _nodes) node->host().wake();
    for (std::uint64_t actions = 0; !done(); ++actions) {
      if (actions >= actions_max || !_clock.run_one()) return done();
    }
    return true;
  }

  bool settled() const {
    return _hub.idle() &&
           std::all_of(_nodes.begin(), _nodes.end(),
                       [](const auto& node) { return node->idle(); }) &&
           std::all_of(_result.messages.begin(), _result.messages.end(),
                       [this](const auto& m) {
                         return m->routed && left_the_queue(_nodes[m->home]->store(), *m);
                       }) &&
           std::all_of(_nodes.begin(), _nodes.end(), [](const auto& node) {
             return node->store().stats().queued_messages == 0;  // the DSNs too
           });
  }

  // Power loss once every test message is durable (a message whose commit was in flight has
  // the inbound sessions' rules, which the world checks), 1-60 ms into the deliveries.
  void arm_crash() {
    _clock.after(static_cast<std::int64_t>(_rng.between(1'000'000, 60'000'000)), [this] {
      const bool all_routed = std::all_of(_result.messages.begin(), _result.messages.end(),
                                          [](const auto& m) { return m->routed; });
      if (!all_routed) return arm_crash();
      crash_and_restart();
    });
  }

  void crash_and_restart() {
    _result.crashed = true;
    const auto counts = _result.record.deliveries;
    for (auto& node : _nodes) node.reset();  // relays, stores, hosts: their actions do nothing
    _hub.crash();
    std::vector<spool::recovered_state> states;
    for (unsigned i = 0; i < _disks.size(); ++i) {
      _disks[i]->crash(_rng.chance(0.5));
      states.push_back(recover(*_disks[i], i));
    }
    for (unsigned i = 0; i < _nodes.size(); ++i) start_shard(i, std::move(states[i]));
    for (const auto& m : _result.messages) note_final_recipients(*m, counts);
    for (auto& node : _nodes) _result.recovered_queued += node->store().stats().queued_messages;
    start_relays();  // each routes what its spool recovered
    // The power loss came during the shutdown (the crash is armed until every message is
    // routed, which may be after the queues settled): the restarted relays are shut down too.
    if (_shutting_down)
      for (auto& node : _nodes) node->relay().begin_shutdown();
  }

  // The real recovery over the disk's durable image (disk::image(): no real files).
  static spool::recovered_state recover(disk& spool_disk, unsigned shard) {
    auto recovered = spool::recover(fmt::format("/sim/shard-{}", shard), shard,
                                    spool_disk.image());
    EXPECT_TRUE(recovered.ok());
    if (!recovered) return {};
    return std::move(recovered.value());
  }

  void note_final_recipients(
      const test_message& m,
      const std::map<std::pair<std::string, std::string>, std::uint32_t>& counts) {
    const spool::message_entry* entry = _nodes[m.home]->store().find(m.envelope.id);
    for (std::size_t r = 0; r < m.envelope.recipients.size(); ++r) {
      // Not recovered: every recipient was final and the spool reclaimed it.
      if (entry != nullptr && !spool::is_final(entry->recipients[r].state)) continue;
      const std::pair<std::string, std::string> key{m.key, m.envelope.recipients[r].address};
      const auto counted = counts.find(key);
      _result.final_at_crash[key] = counted == counts.end() ? 0 : counted->second;
    }
  }

  std::uint64_t _seed;
  bool _busy_spool = false;
  bool _shutting_down = false;  // begin_shutdown was called: a restart is shut down as well
  scheduler _clock;
  random _rng;
  random _fault_rng;
  fault_rates _faults;
  fault_rates _refusing;
  smtp::extension_set _extensions;
  run_result _result;
  std::vector<server::relay*> _relays;
  server::relay_config _config;
  sim_mesh_hub _hub;
  std::vector<std::unique_ptr<disk>> _disks;
  std::vector<std::unique_ptr<sim_shard>> _nodes;
};

run_result run_world(std::uint64_t seed, unsigned shards, bool with_crash = false,
                     bool busy_spool = false) {
  relay_world world(seed, shards, busy_spool);
  return world.run(with_crash);
}

void expect_every_recipient_settled(const run_result& r) {
  ASSERT_TRUE(r.finished) << "the queues did not drain";
  EXPECT_EQ(r.queued_left, 0u);
  EXPECT_TRUE(r.drained) << "a relay did not drain after begin_shutdown";
  for (const auto& m : r.messages) {
    const bool refused = m->envelope.recipients.front().address.ends_with(refusing_domain);
    for (const auto& to : m->envelope.recipients) {
      const auto got = r.record.deliveries.find({m->key, to.address});
      const std::uint32_t count = got == r.record.deliveries.end() ? 0 : got->second;
      const auto final_before = r.final_at_crash.find({m->key, to.address});
      if (refused || !r.crashed) {
        EXPECT_EQ(count, refused ? 0u : 1u) << m->key << " to " << to.address;
      } else if (final_before != r.final_at_crash.end()) {  // DUPLICATE
        EXPECT_EQ(count, final_before->second) << m->key << " to " << to.address
                                               << " delivered again after its final mark";
      } else {  // in flight at the crash: at least once
        EXPECT_GE(count, 1u) << m->key << " to " << to.address;
      }
    }
    if (!refused) {
      const auto body = r.record.bodies.find(m->key);
      ASSERT_NE(body, r.record.bodies.end()) << m->key;
      EXPECT_EQ(body->second, m->wire) << m->key;
      continue;
    }
    // The DSN quotes the original's header (RFC 3464 §2: text/rfc822-headers): its key.
    const auto dsn = r.record.deliveries.find({m->key, m->envelope.reverse_path});
    EXPECT_TRUE(dsn != r.record.deliveries.end() && dsn->second >= 1)
        << "no DSN for " << m->key << " to " << m->envelope.reverse_path;
  }
}

TEST(SimRelay, OneShardDeliversEveryRecipientAndBouncesTheRefusedWithADsn) {
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE(seed);
    const run_result r = run_world(seed, 1);
    expect_every_recipient_settled(r);
    EXPECT_EQ(r.crossed, 0u);
  }
}

TEST(SimRelay, ShardsHandJobsAndOutcomesAcrossASimulatedMesh) {
  std::uint64_t refused = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    const run_result r = run_world(seed, 2 + static_cast<unsigned>(seed % 2));
    expect_every_recipient_settled(r);
    EXPECT_GT(r.crossed, 0u) << "no job or outcome crossed shards";
    refused += r.refused;
  }
  EXPECT_GT(refused, 0u) << "no full queue: the relay's backlog was never used";
}

// Power loss during the deliveries (torn or not), then recovery and the relays' restart: each
// routes what its spool recovered (relay::start), outcomes and DSNs cross shards again.
TEST(SimRelay, APowerLossMidDeliveryLosesNoRecipientAndRedeliversNoFinalOne) {
  std::uint64_t recovered = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    const run_result r = run_world(seed, 1 + static_cast<unsigned>(seed % 3), true);
    ASSERT_TRUE(r.crashed);
    expect_every_recipient_settled(r);
    recovered += r.recovered_queued;
  }
  EXPECT_GT(recovered, 0u) << "no crash found a queued message to route again";
}

// A busy spool (store::begin's EAGAIN at pending_messages_max) and power loss against the
// DSNs: every refused recipient's sender gets a DSN. Until session 9 the relay marked a bounced
// recipient final when its DSN was started, not once it was durable, and lost the DSN of 12 of
// these 20 worlds (docs/notes.md, s9-relaysim; RFC 5321 §6.1). World 8's power loss comes
// during the shutdown: the restarted relays are shut down too (relay_world::crash_and_restart).
TEST(SimRelay, ABusySpoolOrAPowerLossLosesNoDsn) {
  std::uint64_t retries = 0;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    const run_result r =
        run_world(seed, 1 + static_cast<unsigned>(seed % 3), seed % 2 == 0, true);
    expect_every_recipient_settled(r);
    retries += r.dsn_retries;
  }
  EXPECT_GT(retries, 0u) << "the busy spool never refused a DSN: the retry path did not run";
}

TEST(SimRelay, ASeedReplaysToTheSameTranscript) {
  const run_result first = run_world(7, 3);
  const run_result second = run_world(7, 3);
  const run_result other = run_world(8, 3);
  EXPECT_FALSE(first.record.transcript.empty());
  EXPECT_EQ(first.record.transcript, second.record.transcript);
  EXPECT_EQ(first.simulated_ns, second.simulated_ns);
  EXPECT_NE(first.record.transcript, other.record.transcript);
}

}  // namespace
}  // namespace ringmta::sim
