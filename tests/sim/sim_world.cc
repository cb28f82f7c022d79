#include "sim_world.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <stdlib.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ringmta/auth/credentials.h"
#include "ringmta/auth/sasl.h"
#include "ringmta/admin/log.h"
#include "ringmta/net/received_header.h"
#include "ringmta/server/inbound.h"
#include "ringmta/server/inbound_acceptor.h"
#include "ringmta/server/inbound_sessions.h"
#include "ringmta/server/relay.h"
#include "ringmta/server/spool_ring_driver.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"

#include "sim_host.h"
#include "sim_delivery.h"
#include "sim_tls.h"
#include "sim_world_internal.h"

namespace ringmta::sim {
namespace internal {


// ---- the inbound process: src/server's sessions on a sim_host of their own

namespace {

constexpr std::string_view our_hostname = "mx.sim.example";

// The client's HELO name, which the session records: it names the client in commit events.
std::string helo_of(std::uint32_t client) { return fmt::format("client{}.sim.example", client); }

std::uint32_t client_of_helo(std::string_view helo) {
  return helo.substr(0, 6) == "client" ? static_cast<std::uint32_t>(std::atoi(helo.data() + 6))
                                       : 0;
}

// settle() runs after every action what a shard runs at the end of each loop iteration
// (store flush, operations, events, retry_waiting): the kick after a commit has nothing to add.
class settle_pump final : public server::spool_pump {
 public:
  void pump() noexcept override {}
};

// A simulated client as the far end of its session's socket.
class client_peer final : public stream_peer {
 public:
  client_peer(world& owner, std::uint32_t number) : _world(owner), _number(number) {}
  void on_connected(sim_host&, int) override {}
  void on_bytes(sim_host&, int, std::string_view bytes) override {
    _world.client_receive(_number, std::string(bytes));
  }
  // The session shut the socket down: its close follows (sim_host's close listener).
  void on_client_gone(sim_host&, int) override {}

 private:
  world& _world;
  const std::uint32_t _number;
};

// AUTH (RFC 4954): one login, and its sender map lets it send as anyone @sender.example (the
// simulated senders); a wrong password is refused 535 after the throttle's delay.
constexpr std::string_view sim_login = "submitter";
constexpr std::string_view sim_password = "pw-submitter";

// The credentials back-end the sessions hand to the verifier (no hashing: the daemon's
// workers do that off the shards; what is simulated here is the sessions' pending verdict).
class sim_credentials final : public auth::backend {
 public:
  auth::check_result check(std::string_view user, std::string_view password,
                           std::string_view) const noexcept override {
    return user == sim_login && password == sim_password ? auth::check_result::accepted
                                                         : auth::check_result::refused;
  }
};

// The verifier's place in the simulation: requests go to the world's clock, not a thread.
class sim_verifier final : public auth::verify_service {
 public:
  sim_verifier(world& owner, unsigned shard) : _world(owner), _shard(shard) {}
  bool submit(std::unique_ptr<auth::verify_request> request) noexcept override {
    return _world.submit_auth(_shard, std::move(request));
  }

 private:
  world& _world;
  const unsigned _shard;  // the answer goes back to this shard's sessions
};

// The simulated load balancer's address (the peer of every socket when PROXY is on) and the
// clients' own addresses behind it (TEST-NET-3, RFC 5737).
constexpr std::string_view balancer_address = "192.0.2.254";

// The daemon's inbound settings where the simulation needs them: clients outside mynetworks
// may send to rcpt0..2.example only (so "bad-" recipients at mx1.rcptN.example are refused
// 554 5.7.1 at RCPT by the real relay policy), STARTTLS, with `proxy` the PROXY protocol
// from a trusted balancer, else XCLIENT (Postfix's) for every client; no AUTH or DKIM.
std::shared_ptr<const server::inbound_config> inbound_settings(
    server::client_counters& clients, std::uint32_t buffer_bytes, std::uint32_t buffer_count,
    bool proxy, auth::verify_service& verifier, unsigned shard, int listener,
    std::uint32_t sessions_max) {
  server::inbound_config config;
  config.listen = {*core::endpoint::parse("192.0.2.1:25")};  // the process's one listener
  config.listener_fds.assign(shard + 1, {});
  config.listener_fds[shard] = {listener};
  config.implicit_tls = {false};
  config.submission = {false};
  config.hostname = std::string(our_hostname);
  config.greeting_text = "ESMTP ringmta-sim";
  config.engine.limits.message_bytes_max = 4u << 20;
  config.relay.relay_domains = {"rcpt0.example", "rcpt1.example", "rcpt2.example"};
  config.recipients.hostname = std::string(our_hostname);
  config.sessions_per_shard_max = sessions_max;
  config.receive_buffer_bytes = buffer_bytes;
  config.receive_buffer_count = buffer_count;
  config.clients = &clients;
  config.tls = simulated_server_context();  // STARTTLS offered (RFC 3207): sim_tls.h
  config.engine.starttls_offered = true;
  config.auth_credentials = std::make_shared<sim_credentials>();
  config.auth_senders = auth::sender_map::from_text(
      fmt::format("@sender.example {}\n", sim_login), "sim");
  config.auth_verifier = &verifier;
  config.engine.auth_offered = true;  // after TLS (auth_requires_tls), PLAIN and LOGIN
  if (proxy) {
    config.proxy_protocol = true;
    config.proxy_trusted = {*core::cidr::parse(fmt::format("{}/32", balancer_address))};
  } else {
    config.xclient_trusted = {*core::cidr::parse("192.0.2.0/24")};
  }
  return server::freeze(std::move(config));
}

}  // namespace

// The daemon's file worker (server::spool_file_thread) in the simulation: the store's file
// creations and removals go to the shard's simulated disk, which runs their real steps with
// latencies and faults; the results come back to the driver as the thread's message would.
class disk_file_worker final : public server::spool_file_worker {
 public:
  disk_file_worker(world& owner, unsigned shard) noexcept : _world(owner), _shard(shard) {}
  void submit(const spool::operation& op) noexcept override { _world.submit_file_op(_shard, op); }

 private:
  world& _world;
  unsigned _shard;
};

// One simulated MTA process, as a daemon shard runs it: the inbound sessions and the relay
// (server::relay, the daemon's delivery side: jobs, connections, marks, DSNs) over the
// process's store, on one host whose network reaches the remote MTAs and the DNS server
// (sim_delivery.cc) and whose stream peers are the clients. The relay reads spool bodies from
// the simulated disk (its page cache). A crash destroys it (relay, sessions, then the host,
// whose queued actions then do nothing).
struct process {
  // `peers.id()` 0 is the shard the clients reach (the world hears of its sessions).
  process(world& owner, scheduler& clock, std::uint64_t seed, std::int64_t net_ns_max,
          sim_network network, spool::store& store, std::uint32_t buffer_bytes,
          std::uint32_t buffer_count, bool proxy,
          std::unique_ptr<const server::relay_config> relay_config, shard::mesh& peers,
          bool unsafe_no_fsync)
      : host(clock, seed, std::move(network), net_ns_max, epoch_seconds * 1000),
        files(owner, peers.id()),
        driver(host, store, files, unsafe_no_fsync),
        listener(host.add_listener()),
        inbound(inbound_settings(clients, buffer_bytes, buffer_count, proxy,
                                 owner.verifier(peers.id()), peers.id(), listener,
                                 owner.sessions_max())),
        sessions(inbound, host, peers.id(), store, pump, metrics, log),
        acceptor(*inbound, host, peers.id(), sessions, metrics, log),
        relay_settings(std::move(relay_config)) {
    sessions.set_release_listener([this] { acceptor.on_session_released(); });
    // The spool's ring driver first, as shard_services starts it before the sessions.
    host.set_file_writer([&owner, shard = peers.id()](const sim_host::file_op& op) {
      owner.submit_ring_op(shard, op);
    });
    if (auto started = driver.start(); !started) std::abort();  // a fresh host has op kinds
    driver.set_listener([&owner, shard = peers.id()](const spool::event& event) {
      owner.on_store_event(shard, event);
    });
    host.set_close_listener([&owner, shard = peers.id()](int fd) {
      owner.on_session_closed(shard, fd);
    });
    host.set_file_reader([&owner](int fd, std::uint64_t offset, void* into,
                                  std::uint32_t length) {
      return owner.read_any_disk(fd, offset, into, length);
    });
    sessions.set_commit_observer(
        [&owner, shard = peers.id()](std::uint64_t ticket, const spool::envelope& e) {
          owner.on_commit_issued(shard, ticket, e);
        });
    sessions.set_accepted_listener([&owner](const spool::envelope& e,
                                            std::span<const spool::body_slice> body,
                                            std::string_view) { owner.on_accepted(e, body); });
    if (relay_settings != nullptr) {
      relay = std::make_unique<server::relay>(*relay_settings, host, peers, store,
                                              relay_metrics, log);
    }
  }
  ~process() {
    if (relay) relay->stop();
    relay.reset();
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  sim_host host;
  disk_file_worker files;
  server::spool_ring_driver driver;  // the daemon's, over the host and the shard's disk
  // The disk's tokens of this process's driver ops in flight: a ring op's user_data, or a file
  // worker op's store token.
  struct disk_op {
    bool ring = false;
    std::uint64_t id = 0;
  };
  std::map<std::uint64_t, disk_op> disk_ops;
  server::client_counters clients;
  server::inbound_metrics metrics;
  admin::log_buffer log{admin::log_format::json, 256 << 10};  // read by world::read_log
  settle_pump pump;
  int listener;  // the clients connect here (sim_host::connect_client)
  std::shared_ptr<const server::inbound_config> inbound;
  server::inbound_sessions sessions;
  server::inbound_acceptor acceptor;  // the daemon's: accept, getpeername, the session limit
  server::relay_metrics relay_metrics;
  std::unique_ptr<const server::relay_config> relay_settings;  // the relay keeps a reference
  std::unique_ptr<server::relay> relay;  // null with --no-outbound
};

// ---- world: set-up and the event loop

world::world(const options& settings)
    : _options(settings),
      _random(settings.seed),
      _mesh_random(settings.seed * 0x9e3779b97f4a7c15ull + 0x3e54),
      _verifiers{std::make_unique<sim_verifier>(*this, 0), std::make_unique<sim_verifier>(*this, 1),
                 std::make_unique<sim_verifier>(*this, 2)} {
  seed_openssl(settings.seed);
  disk_profile profile;
  if (settings.faults && _random.chance(0.7)) {
    profile.write_error = static_cast<double>(_random.between(1, 20)) / 1000;
    profile.sync_error = static_cast<double>(_random.between(1, 20)) / 1000;
    profile.step_error = static_cast<double>(_random.between(0, 30)) / 1000;
  }
  profile.write_ns_max = latency_ns(100'000, 3'000'000);
  profile.sync_ns_max = latency_ns(profile.sync_ns_min + 1, 20'000'000);
  _disk_profile = profile;
  // no-fsync is the daemon's --unsafe-no-fsync, the real driver's switch (every shard's).
  _unsafe_no_fsync = settings.bug == disk_bug::no_fsync;
  _disk = std::make_unique<disk>(
      _clock, _random, profile, _unsafe_no_fsync ? disk_bug::none : settings.bug,
      [this](std::uint64_t token, std::int64_t result) { on_disk_done(0, token, result); },
      [this](std::string_view text) { note(text); });
  _net_ns_max = latency_ns(100'000, 5'000'000);
  _arrival_mean_ns = latency_ns(2'000'000, 200'000'000);
  if (settings.arrival_ms > 0) _arrival_mean_ns = std::int64_t{settings.arrival_ms} * 1'000'000;
  _crash_mean_ns = latency_ns(300'000'000, 5'000'000'000);
  _deliver_mean_ns = latency_ns(1'000'000, 50'000'000);
  _disconnect_chance = static_cast<double>(_random.between(0, 100)) / 1000;
  _transactions_left = settings.messages;
  _store_config = make_store_config();
  // A feed asks the store for twice a receive buffer (inbound_server::spool_has_room): the
  // buffers must leave that room within the store's buffering, or input would wait forever.
  _receive_buffer_bytes = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(16384, std::bit_floor(_store_config.buffered_bytes_max / 4)));
  _receive_buffer_count = 1u << _random.between(4, 8);  // 16..256: ENOBUFS under load
  _proxy = _random.chance(0.3);
  // In a tenth of the seeds a shard takes 2-6 sessions at once (sessions_per_shard_max), so
  // the acceptor refuses clients with its 421 (a stream of its own: no other draw moves).
  random limit_draw(settings.seed * 0x9e3779b97f4a7c15ull + 0x5e55);
  if (limit_draw.chance(0.1)) _sessions_max = static_cast<std::uint32_t>(limit_draw.between(2, 6));
  random cache_draw(settings.seed * 0x9e3779b97f4a7c15ull + 0xcac4e);
  if (settings.outbound && cache_draw.chance(0.5))
    _cache_miss = static_cast<double>(cache_draw.between(1, 30)) / 100;
  note(fmt::format("seed {} faults w{} s{} c{} net<{}us arrivals~{}ms crashes~{}ms{}{}",
                   settings.seed, profile.write_error, profile.sync_error, profile.step_error,
                   _net_ns_max / 1000, _arrival_mean_ns / 1'000'000, _crash_mean_ns / 1'000'000,
                   _proxy ? " proxy" : "",
                   _cache_miss > 0 ? fmt::format(" page cache misses {}", _cache_miss) : ""));
}

world::~world() {
  _process.reset();
  _others.clear();
  if (_hub) _hub->crash();  // parcels still queued free their payloads
  _delivery.reset();
  _connections.clear();
  _store.reset();
}

spool::store_config world::make_store_config() {
  spool::store_config config;
  config.directory = "/sim/shard-0";  // never touched: the simulated disk uses its basenames
  config.shard = 0;
  static constexpr std::uint64_t segments[] = {64u << 10, 128u << 10, 256u << 10, 1u << 20};
  config.segment_bytes = segments[_random.below(4)];
  config.preallocate = _random.chance(0.8);
  config.journal_bytes = _random.between(8, 256) << 10;
  config.block_bytes = static_cast<std::uint32_t>(_random.between(1, 8) * 4096);
  config.batch_bytes_max = _random.between(2, 32) * config.block_bytes;
  config.buffered_bytes_max = config.batch_bytes_max * _random.between(2, 8);
  config.data_record_bytes_max = static_cast<std::uint32_t>(_random.between(1, 64) << 10);
  config.journal_buffered_bytes_max = _random.between(4, 64) << 10;
  config.pending_messages_max = static_cast<std::uint32_t>(_random.between(4, 64));
  config.journal_lag_flights_max = static_cast<std::uint32_t>(_random.between(1, 8));
  config.random_seed = _random.next() | 1;
  return config;
}

void world::note(std::string_view text) {
  const std::string line = fmt::format("{:>11.6f} {}", static_cast<double>(_clock.now_ns()) / 1e9,
                                       text);
  for (const char c : line) {
    _digest = (_digest ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  }
  _digest = (_digest ^ '\n') * 0x100000001b3ull;
  ++_outcome.events;
  if (_options.verbose) fmt::print("{}\n", line);
  for (const auto& token : _options.trace_filter) {
    if (line.find(token) != std::string::npos) {
      _outcome.filtered_events.push_back(line);
      break;
    }
  }
  if (_trace.size() == trace_lines) _trace.pop_front();
  _trace.push_back(line);
}

void world::fail(std::string message) {
  if (_failed) return;
  _failed = true;
  note("VIOLATION: " + message);
  _outcome.ok = false;
  _outcome.violation = std::move(message);
  _outcome.last_events.assign(_trace.begin(), _trace.end());
}

outcome world::run() {
  if (_options.outbound) _delivery = std::make_unique<delivery>(*this, _options.seed);
  // deliver-refused hands the relay recipients its spool does not have: one shard, where the
  // first delivery shows it (several shards read the envelope back first, out of range).
  const unsigned shards = _delivery && _options.glue == glue_bug::none
                              ? 1 + static_cast<unsigned>(_mesh_random.below(_options.shards_max))
                              : 1;
  _hub = std::make_unique<sim_mesh_hub>(_clock, _mesh_random, shards);
  _hub->set_turn([this](unsigned) { wake_process(); });
  _relays.assign(shards, nullptr);
  for (unsigned k = 1; k < shards; ++k) {
    other_shard other;
    other.config = _store_config;
    other.config.shard = k;
    other.config.directory = fmt::format("/sim/shard-{}", k);
    other.spool_disk = std::make_unique<disk>(
        _clock, _mesh_random, _disk_profile, disk_bug::none,
        [this, k](std::uint64_t token, std::int64_t result) { on_disk_done(k, token, result); },
        [](std::string_view) {});
    _others.push_back(std::move(other));
  }
  if (shards > 1) note(fmt::format("{} shards", shards));
  if (!recover_and_check()) return _outcome;  // an empty spool, through the real recovery
  _clock.after(0, [this] { spawn_client(); });
  if (!_delivery) {
    _delivery_ticking = true;
    _clock.after(exponential_ns(_deliver_mean_ns), [this] { deliver_tick(); });
  }
  if (_options.crashes) _clock.after(exponential_ns(_crash_mean_ns), [this] { crash_tick(); });
  while (!_failed && _clock.run_one()) {
    settle();
    if (quiescent()) break;
    if (_delivery && !_healed && !_heal_scheduled && !active()) {
      // Faults go on a while after the clients are done (crashes among deliveries), then heal.
      _heal_scheduled = true;
      _clock.after(exponential_ns(60'000'000'000), [this] { heal(); });
    }
    if (_healed && _clock.now_ns() - _healed_ns > liveness_bound_ns && _delivery) {
      if (auto busy = _delivery->busy_reason(stores()); !busy.empty()) {
        fail(fmt::format("LIVENESS: two simulated days after faults were healed, the queue has "
                         "not drained: {}", busy));
      }
    }
  }
  if (!_failed && !_connections.empty()) {
    fail(fmt::format("{} session(s) never finished: first is client {} (awaiting {} replies, "
                     "{} stages left)", _connections.size(), _connections.begin()->first,
                     _connections.begin()->second->awaited,
                     _connections.begin()->second->stages.size()));
  }
  for (unsigned k = 0; k < _relays.size() && !_failed; ++k) {
    if (process_at(k) != nullptr && process_at(k)->sessions.sessions() != 0) {
      fail(fmt::format("{} inbound session(s) of shard {} still open after every client left",
                       process_at(k)->sessions.sessions(), k));
    }
    if (!_failed && store_at(k) != nullptr && !store_at(k)->idle())
      fail(fmt::format("shard {}'s store is not idle after the run drained", k));
  }
  if (!_failed && _delivery) {
    if (auto busy = _delivery->busy_reason(stores()); !busy.empty()) {
      fail(fmt::format("LIVENESS: the event queue ran dry with work left: {}", busy));
    }
  }
  if (!_failed) {
    note("final restart: every acknowledged message must be recovered");
    crash(false);
  }
  if (!_failed && _delivery) _delivery->check_final(stores());
  _outcome.simulated_ns = _clock.now_ns();
  _outcome.shards = static_cast<std::uint32_t>(_relays.size());
  _outcome.parcels_crossed = _hub->crossed();
  _outcome.parcels_refused = _hub->refused();
  _outcome.digest = _digest;
  _outcome.disk = _disk->stats();
  return _outcome;
}

// Clients are done: the faults stop (disk, remotes, DNS, operator holds; no more crashes) and
// everything queued must drain (liveness).
void world::heal() {
  _healed = true;
  _healed_ns = _clock.now_ns();
  note("faults healed: the queue must drain");
  _disk->set_faults(false);
  for (auto& other : _others) other.spool_disk->set_faults(false);
  if (_delivery) _delivery->heal();
  wake_process();
}

spool::message_id world::random_queued_message(random& rng) const {
  for (int tries = 0; tries < 4 && _store && !_undelivered.empty(); ++tries) {
    const spool::message_id id = _undelivered[rng.below(_undelivered.size())];
    const spool::store* home = store_at(spool::message_id_shard(id));
    const spool::message_entry* entry = home == nullptr ? nullptr : home->find(id);
    if (entry != nullptr && entry->status == spool::message_status::queued) return id;
  }
  return 0;
}

void world::wake_process() {
  if (_process) _process->host.wake();
  for (auto& other : _others)
    if (other.proc) other.proc->host.wake();
}

std::int64_t world::read_any_disk(int fd, std::uint64_t offset, void* into,
                                  std::uint32_t n) const {
  const std::int64_t got = _disk->read(fd, offset, into, n);
  if (got != -EBADF) return got;
  for (const auto& other : _others) {
    const std::int64_t there = other.spool_disk->read(fd, offset, into, n);
    if (there != -EBADF) return there;
  }
  return -EBADF;
}

// After every event, as the reactor at the end of a loop iteration: flush the store, give
// its operations to the disk, hand out its events, wake what waits for the spool.
void world::settle() {
  if (!_store) return;
  for (int round = 0; round < 1000 && !_failed; ++round) {
    bool progress = false;
    for (unsigned k = 0; k < _relays.size() && !_failed; ++k) progress |= settle_store(k);
    // A completion wakes the shard's loop: its hooks run (the relay's DSNs waiting for room).
    if (_completions || _other_completions) {
      _completions = _other_completions = false;
      progress = true;
      wake_process();
    }
    if (!progress) break;
  }
  read_log();
  check_bounds();
}

// One shard's loop end: its sessions' waiting input, the store's flush, operations to its
// disk, its events — a commit ticket to the relay first (its DSNs), the sessions' otherwise.
bool world::settle_store(unsigned shard) {
  spool::store* store = store_at(shard);
  process* proc = process_at(shard);
  if (store == nullptr || proc == nullptr) return false;
  proc->sessions.retry_waiting();  // input held for spool room
  store->flush();
  const std::uint64_t before = _store_activity;
  proc->driver.pump();
  return _store_activity != before;
}

// The driver's ring op (a write or a datasync, maybe linked) to the shard's disk, in the order
// the driver submitted it (the disk keeps chains in that order).
void world::submit_ring_op(unsigned shard, const sim_host::file_op& op) {
  spool::operation io;
  io.kind = op.datasync ? spool::operation_kind::datasync : spool::operation_kind::write;
  io.fd = op.fd;
  io.offset = op.offset;
  io.iovecs = op.pieces;
  io.iovec_count = op.piece_count;
  for (unsigned i = 0; i < op.piece_count; ++i) io.bytes += op.pieces[i].iov_len;
  io.link_next = op.linked;
  io.token = ++_disk_serial;
  process_at(shard)->disk_ops[io.token] = process::disk_op{true, op.user_data};
  ++_store_activity;
  disk_at(shard).submit(io);
}

void world::submit_file_op(unsigned shard, const spool::operation& op) {
  spool::operation io = op;
  io.token = ++_disk_serial;
  process_at(shard)->disk_ops[io.token] = process::disk_op{false, op.token};
  ++_store_activity;
  disk_at(shard).submit(io);
}

// A disk op of the shard's process finished (a crash forgets the ops in flight, so the process
// is the one that submitted it): a ring op completes on the host (reaped in a loop turn); a
// file op goes to the driver as the daemon's file thread hands it over, then a pump.
void world::on_disk_done(unsigned shard, std::uint64_t token, std::int64_t result) {
  (shard == 0 ? _completions : _other_completions) = true;
  process* proc = process_at(shard);
  if (proc == nullptr) return;
  const auto found = proc->disk_ops.find(token);
  if (found == proc->disk_ops.end()) return;
  const process::disk_op op = found->second;
  proc->disk_ops.erase(found);
  if (op.ring) {
    proc->host.complete_file_op(op.id, static_cast<std::int32_t>(result));
    return;
  }
  proc->driver.file_done(op.id, result);
  proc->driver.pump();
}

// The driver's listener, as shard_services': a mark ticket to the relay (or, with
// --no-outbound, the world's own), a commit ticket to the relay first (its DSNs), the
// sessions' otherwise.
void world::on_store_event(unsigned shard, const spool::event& event) {
  ++_store_activity;
  process* proc = process_at(shard);
  if (_failed || proc == nullptr) return;
  if (event.kind == spool::event_kind::marked) {
    on_marked(*proc, event);
  } else if (proc->relay && proc->relay->on_committed(event.ticket, event.error)) {
    on_dsn_committed(event);
  } else {
    on_committed(shard, event);
  }
}

spool::store* world::store_at(unsigned shard) const {
  return shard == 0 ? _store.get() : _others.at(shard - 1).store.get();
}

disk& world::disk_at(unsigned shard) const {
  return shard == 0 ? *_disk : *_others.at(shard - 1).spool_disk;
}

process* world::process_at(unsigned shard) const {
  return shard == 0 ? _process.get() : _others.at(shard - 1).proc.get();
}

std::vector<const spool::store*> world::stores() const {
  std::vector<const spool::store*> out;
  for (unsigned k = 0; k < _relays.size(); ++k) out.push_back(store_at(k));
  return out;
}

// A mark ticket: the relay's (its journal buffer has room again; an operator action's record),
// or, with --no-outbound, the world's own.
void world::on_marked(process& proc, const spool::event& event) {
  if (proc.relay) {
    const bool action = proc.relay->on_marked(event.ticket, event.error);
    if (!action && event.error == 0) ++_outcome.delivered_marks;
    if (action && _delivery) _delivery->on_action_durable();
    return;
  }
  const auto found = _mark_tickets.find(event.ticket);
  if (found == _mark_tickets.end()) return;
  const auto [id, recipient] = found->second;
  _mark_tickets.erase(found);
  note(fmt::format("mark {:016x}/{} durable: {}", id, recipient, event.error));
  const auto message = _expected.find(id);
  if (event.error == 0 && message != _expected.end()) {
    message->second.marks[recipient] = mark_state::delivered;
    ++_outcome.delivered_marks;
  }
}

// A DSN the relay spooled: durable (then delivered like a client's message, and checked
// across crashes), or failed (the relay builds it again; this one may still be recovered).
void world::on_dsn_committed(const spool::event& event) {
  note(fmt::format("dsn {:016x} committed: {}", event.id, event.error));
  expected_message want;
  want.origin = fmt::format("DSN {:016x}", event.id);
  if (event.error != 0) {
    want.state = fate::failed;
    want.content_known = false;
    _expected[event.id] = std::move(want);
    return;
  }
  if (!read_stored(event.id, want)) {
    return fail(fmt::format("DSN {:016x} reported durable but unreadable", event.id));
  }
  want.state = fate::acknowledged;
  _refused.erase(event.id);
  _undelivered.push_back(event.id);
  _delivery->on_message(event.id, want);
  _expected[event.id] = std::move(want);
}

// The records the process logged since the last look (the relay's outcomes among them).
void world::read_log() {
  if (!_delivery) return;
  auto read = [this](admin::log_buffer& log) {
    const std::string_view text = log.pending();
    for (std::size_t at = 0; at < text.size();) {
      const std::size_t end = std::min(text.find('\n', at), text.size());
      _delivery->on_log_record(text.substr(at, end - at));
      at = end + 1;
    }
    log.consume(text.size());
    // The outcomes come from these records: none may be lost (read after every event).
    if (log.dropped_records() != 0) fail("a shard's log buffer dropped records");
  };
  if (_process) read(_process->log);
  for (auto& other : _others)
    if (other.proc) read(other.proc->log);
}

bool world::read_stored(spool::message_id id, expected_message& out) {
  const unsigned home = spool::message_id_shard(id);
  if (home >= _relays.size() || store_at(home) == nullptr) return false;
  spool::store& store = *store_at(home);
  disk& spool_disk = disk_at(home);
  const auto where = store.locate(id);
  if (!where) return false;
  std::string record(where.value().bytes, '\0');
  if (spool_disk.read(where.value().fd, where.value().offset, record.data(), where.value().bytes) !=
      static_cast<std::int64_t>(record.size())) {
    return false;
  }
  const auto stored = store.parse_commit(id, where.value(), record);
  if (!stored) return false;
  const spool::envelope& envelope = stored.value().envelope;
  out.reverse_path = envelope.reverse_path;
  out.recipients.clear();
  out.notify.clear();
  for (const auto& r : envelope.recipients) {
    out.recipients.push_back(r.address);
    out.notify.push_back(r.notify);
  }
  out.helo = envelope.helo;
  out.client_address = envelope.client_address;
  out.body_wire.clear();
  for (const auto& slice : stored.value().body) {
    const std::size_t at = out.body_wire.size();
    out.body_wire.resize(at + slice.length);
    if (spool_disk.read(slice.fd, slice.offset, out.body_wire.data() + at, slice.length) !=
        static_cast<std::int64_t>(slice.length)) {
      return false;
    }
  }
  out.marks.assign(out.recipients.size(), mark_state::none);
  out.content_known = true;
  return true;
}

void world::check_bounds() {
  for (unsigned k = 0; k < _relays.size() && !_failed; ++k) {
    const spool::store* store = store_at(k);
    const process* proc = process_at(k);
    if (store == nullptr) continue;
    if (proc != nullptr && proc->metrics.spool_short_appends.read() != 0) {
      fail(fmt::format("the store took fewer body bytes than can_append allowed (buffered {} of "
                       "{}): the session answers 452", store->buffered_bytes(),
                       store->config().buffered_bytes_max));
    }
    // append() pushes back at buffered_bytes_max; commit records and the void/prefix records
    // of one flush may go beyond it by at most a batch.
    const std::uint64_t bound = _store_config.buffered_bytes_max + _store_config.batch_bytes_max;
    if (store->buffered_bytes() > bound) {
      fail(fmt::format("store buffers {} bytes, over its bound {}", store->buffered_bytes(),
                       bound));
    }
  }
}

// ---- clients

void world::spawn_client() {
  if (_transactions_left == 0 || _failed) return;
  const std::uint32_t number = _next_client++;
  const auto count = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(_transactions_left, _random.between(1, 4)));
  _transactions_left -= count;
  // With several shards, each client reaches a drawn one (a stream of its own: one-shard runs
  // keep their draws), so messages and their DSNs have homes on every shard.
  const auto shard = static_cast<unsigned>(_relays.size() > 1 ? _mesh_random.below(_relays.size())
                                                              : 0);
  client_plan plan;
  plan.xclient = !_proxy && _random.chance(0.2);
  plan.starttls = _random.chance(0.15);
  plan.auth = plan.starttls && _random.chance(0.5);
  plan.wrong_password = plan.auth && _random.chance(0.2);
  const bool relays = plan.auth && !plan.wrong_password;
  std::vector<transaction> transactions;
  for (std::uint32_t i = 0; i < count; ++i) {
    transactions.push_back(make_transaction(number, i, relays));
  }
  auto owned = std::make_unique<connection>(number, std::move(transactions));
  connection& c = *owned;
  c.shard = shard;
  _connections.emplace(number, std::move(owned));
  ++_outcome.sessions;
  // Behind the balancer the client's address is the one its PROXY header names; a client
  // that sends XCLIENT (a trusted front end, Postfix's XCLIENT_README) names it there.
  c.client_address = _proxy || plan.xclient ? fmt::format("203.0.113.{}", number % 250 + 1)
                                            : fmt::format("192.0.2.{}", number % 250 + 1);
  build_stages(c, plan);
  note(fmt::format("client {} connects: {} transaction(s), {} stages{}", number, count,
                   c.stages.size(), shard == 0 ? "" : fmt::format(" (shard {})", shard)));
  c.awaited = 1;  // the greeting
  c.current = stage{};
  // Accepted: a socket whose far end is the client, handed to the real sessions.
  const auto address = *core::endpoint::parse(
      _proxy ? fmt::format("{}:{}", balancer_address, 1024 + number % 60000)
             : fmt::format("192.0.2.{}:{}", number % 250 + 1, 1024 + number % 60000));
  // The connection waits in the listener's backlog until the daemon's acceptor takes it (a
  // session at the limit gets the acceptor's 421 and a close).
  process& proc = *process_at(shard);
  c.fd = proc.host.connect_client(proc.listener, std::make_unique<client_peer>(*this, number),
                                  address);
  _by_fd[{shard, c.fd}] = number;
  if (_proxy) client_send(c, proxy_header(c));  // the balancer speaks first, split like any input
  _clock.after(greeting_bound_ns, [this, number, serial = _process_serial] {
    check_greeted(number, serial);
  });
  if (_transactions_left > 0) _clock.after(exponential_ns(_arrival_mean_ns), [this] {
    spawn_client();
  });
}

std::string world::make_body(std::string_view key) {
  // The Message-ID names the transaction at the remote MTAs (and inside DSNs about it).
  // (Without the delivery side, the first slice's bodies: its seeds replay the same runs.)
  std::string body = fmt::format("Subject: sim {}\r\nFrom: <a@sim.example>\r\n{}\r\n",
                                 _random.next() % 100000,
                                 _delivery ? fmt::format("Message-ID: <{}@sim.example>\r\n", key)
                                           : std::string());
  const bool big = _random.chance(0.03);
  const std::uint64_t lines = big ? _random.between(500, 4000) : _random.between(0, 40);
  for (std::uint64_t i = 0; i < lines; ++i) {
    if (_random.chance(0.1)) body.push_back('.');  // dot-stuffing, and "." alone
    const std::uint64_t length = _random.chance(0.05) ? _random.between(200, 990)
                                                       : _random.below(78);
    for (std::uint64_t left = length; left > 0;) {  // random runs of the alphabet
      const std::size_t from = _random.below(letters.size() - 1);
      const std::size_t run = std::min<std::size_t>(left, letters.size() - from);
      body.append(letters.substr(from, run));
      left -= run;
    }
    body.append("\r\n");
  }
  return body;
}

transaction world::make_transaction(std::uint32_t client, std::uint32_t index, bool relays) {
  transaction t;
  if (!_random.chance(0.1)) t.reverse_path = fmt::format("s{}.{}@sender.example", client, index);
  const std::uint64_t recipients = _random.between(1, 4);
  for (std::uint64_t r = 0; r < recipients; ++r) {
    // A "bad-" one is at mx1.rcptN.example: outside relay_domains (554 5.7.1 at RCPT), yet a
    // name the simulated DNS answers, so a glue that delivered it would reach a remote MTA.
    const bool bad = _random.chance(0.1) && !relays;
    t.recipients.push_back(fmt::format("{}r{}@{}rcpt{}.example", bad ? "bad-" : "", r,
                                       bad ? "mx1." : "", _random.below(3)));
    const std::uint64_t notify = _delivery ? _random.below(20) : 2;  // 5% NEVER, 5% FAILURE
    t.notify.push_back(notify == 0 ? smtp::notify_never : notify == 1 ? smtp::notify_failure : 0);
  }
  t.key = fmt::format("sim.c{}.t{}", client, index);
  t.body = make_body(t.key);
  t.bdat = _random.chance(0.3);
  if (t.bdat) {
    std::size_t left = t.body.size();
    while (left > 0) {
      const std::size_t chunk = std::min<std::size_t>(left, _random.between(1, 70000));
      t.chunks.push_back(chunk);
      left -= chunk;
    }
    if (t.chunks.empty() || _random.chance(0.1)) t.chunks.push_back(0);  // BDAT 0 LAST
  }
  return t;
}

void world::build_stages(connection& c, const client_plan& plan) {
  const bool pipelining = _random.chance(0.7);
  const std::string ehlo = fmt::format("EHLO client{}.sim.example\r\n", c.number);
  c.stages.push_back(stage{ehlo, 1, stage_kind::plain});
  if (plan.xclient) {  // answered with a new greeting (220); the session starts over: EHLO again
    c.stages.push_back(stage{fmt::format("XCLIENT ADDR={} NAME=client{}.front.example\r\n",
                                         c.client_address, c.number),
                             1, stage_kind::plain});
    c.stages.push_back(stage{ehlo, 1, stage_kind::plain});
  }
  if (plan.starttls) {  // RFC 3207: STARTTLS, then EHLO again over TLS (§4.2)
    c.stages.push_back(stage{"STARTTLS\r\n", 1, stage_kind::starttls});
    c.stages.push_back(stage{ehlo, 1, stage_kind::plain});
  }
  if (plan.auth) {  // RFC 4954 with RFC 4616 PLAIN's initial response
    const std::string credentials =
        fmt::format("{}{}{}{}", '\0', sim_login, '\0',
                    plan.wrong_password ? "guessed" : sim_password);
    char encoded[128];
    const auto length = auth::encode_base64(credentials, encoded);
    c.stages.push_back(stage{fmt::format("AUTH PLAIN {}\r\n",
                                         std::string_view(encoded, length.value_or(0))),
                             1, stage_kind::auth});
  }
  for (const auto& t : c.transactions) {
    std::vector<stage> units;
    // A refused DATA leaves the transaction open (RFC 5321 §4.1.1.4): RSET before the next.
    if (&t != &c.transactions.front()) units.push_back(stage{"RSET\r\n", 1, stage_kind::plain});
    units.push_back(stage{fmt::format("MAIL FROM:<{}>\r\n", t.reverse_path), 1,
                          stage_kind::plain});
    for (std::size_t r = 0; r < t.recipients.size(); ++r) {
      const std::uint8_t notify = t.notify[r];
      units.push_back(stage{fmt::format("RCPT TO:<{}>{}\r\n", t.recipients[r],
                                        notify == smtp::notify_never     ? " NOTIFY=NEVER"
                                        : notify == smtp::notify_failure ? " NOTIFY=FAILURE"
                                                                         : ""),
                            1, stage_kind::plain});
    }
    if (!t.bdat) {
      units.push_back(stage{"DATA\r\n", 1, stage_kind::data_command});
    } else {
      std::size_t offset = 0;
      for (std::size_t i = 0; i < t.chunks.size(); ++i) {
        const bool last = i + 1 == t.chunks.size();
        units.push_back(stage{fmt::format("BDAT {}{}\r\n", t.chunks[i], last ? " LAST" : "") +
                                  t.body.substr(offset, t.chunks[i]),
                              1, last ? stage_kind::bdat_end : stage_kind::plain});
        offset += t.chunks[i];
      }
    }
    const auto index = static_cast<std::uint32_t>(&t - c.transactions.data());
    for (auto& u : units) u.transaction = index;
    if (pipelining) {  // RFC 2920: the whole group in one go, DATA (or the last BDAT) ends it
      stage group{"", 0, units.back().kind, index};
      for (const auto& u : units) {
        group.bytes += u.bytes;
        group.replies += u.replies;
      }
      c.stages.push_back(std::move(group));
    } else {
      c.stages.insert(c.stages.end(), units.begin(), units.end());
    }
    if (!t.bdat) {
      c.stages.push_back(stage{dot_stuff(t.body) + ".\r\n", 1, stage_kind::data_end, index});
    }
  }
  c.stages.push_back(stage{"QUIT\r\n", 1, stage_kind::quit});
}

void world::client_next(connection& c) {
  if (c.stages.empty() || c.client_gone) return;
  c.current = std::move(c.stages.front());
  c.stages.pop_front();
  c.awaited = c.current.replies;
  const bool message = c.current.kind == stage_kind::data_end ||
                       c.current.kind == stage_kind::bdat_end;
  if (message && _random.chance(_disconnect_chance)) {  // gone in the middle of the message
    const std::size_t cut = _random.below(c.current.bytes.size());
    note(fmt::format("client {} sends {} of {} bytes and disconnects", c.number, cut,
                     c.current.bytes.size()));
    client_send(c, std::string_view(c.current.bytes).substr(0, cut));
    return client_disconnect(c.number);
  }
  client_send(c, c.current.bytes);
  if (message && _random.chance(_disconnect_chance)) {  // gone while waiting for the reply
    _clock.after(latency_ns(0, 20'000'000),
                 [this, number = c.number] { client_disconnect(number); });
  }
}

// Splits the bytes at random points; each piece reaches the session after a network delay,
// in order (the host's stream). Over TLS the pieces are of the ciphertext.
void world::client_send(connection& c, std::string_view bytes) {
  if (c.tls == nullptr) return send_pieces(c, bytes);
  std::string cipher;
  encrypt(*c.tls, bytes, cipher);
  send_pieces(c, cipher);
}

void world::send_ciphertext(connection& c) {
  const std::string cipher(c.tls->ciphertext());
  c.tls->consume_ciphertext(cipher.size());
  send_pieces(c, cipher);
}

void world::send_pieces(connection& c, std::string_view bytes) {
  while (!bytes.empty()) {
    const std::size_t piece = std::min<std::size_t>(
        bytes.size(), _random.chance(0.2) ? _random.between(1, 16) : _random.between(1, 9000));
    process_at(c.shard)->host.peer_send(c.fd, std::string(bytes.substr(0, piece)));
    bytes.remove_prefix(piece);
  }
}

// The client closes its end after what it sent; the session sees the end of the stream.
void world::client_disconnect(std::uint32_t number) {
  const auto found = _connections.find(number);
  if (found == _connections.end() || found->second->client_gone) return;
  found->second->client_gone = true;
  note(fmt::format("client {} disconnects", number));
  process_at(found->second->shard)->host.peer_close(found->second->fd);
}

void world::client_receive(std::uint32_t number, const std::string& bytes) {
  if (_awaiting_refusal.count(number) != 0) return on_refusal(number, bytes);
  const auto found = _connections.find(number);
  if (found == _connections.end() || found->second->client_gone) return;
  connection& c = *found->second;
  if (c.tls != nullptr) return client_receive_tls(c, bytes);
  client_parse_replies(c, bytes);
}

// Ciphertext from the session: the handshake's flights, then replies. A failed handshake
// ends the client's connection (the session then closes its side too).
void world::client_receive_tls(connection& c, std::string_view bytes) {
  const std::uint32_t number = c.number;
  for (int guard = 0; guard < 10000; ++guard) {
    const std::size_t taken = c.tls->feed(bytes);
    bytes.remove_prefix(taken);
    if (!c.tls->ciphertext().empty()) send_ciphertext(c);
    if (c.tls->state() == tls::state::failed) {
      note(fmt::format("client {} TLS failed: {}", number, c.tls->error_detail()));
      return client_disconnect(number);
    }
    if (c.handshaking && c.tls->handshake_completed()) {
      c.handshaking = false;
      note(fmt::format("client {} TLS established ({})", number, c.tls->protocol()));
      client_next(c);
      if (_connections.count(number) == 0) return;
    }
    const std::string plain(c.tls->plaintext());
    c.tls->consume_plaintext(plain.size());
    if (!plain.empty()) {
      client_parse_replies(c, plain);
      if (_connections.count(number) == 0) return;
    }
    if (taken == 0 && plain.empty()) break;
  }
}

// The header a load balancer puts before the client's bytes (haproxy's PROXY protocol, v1
// text or v2 binary at random): the client's address and port, and ours.
std::string world::proxy_header(const connection& c) {
  const std::uint16_t port = static_cast<std::uint16_t>(1024 + c.number % 60000);
  if (_random.chance(0.5)) {
    return fmt::format("PROXY TCP4 {} 192.0.2.1 {} 25\r\n", c.client_address, port);
  }
  std::string header("\r\n\r\n\0\r\nQUIT\n", 12);
  header += '\x21';  // version 2, PROXY command
  header += '\x11';  // TCP over IPv4
  header += std::string("\0\x0c", 2);  // 12 address octets follow
  const auto address = *core::endpoint::parse(fmt::format("{}:{}", c.client_address, port));
  const auto* in = reinterpret_cast<const sockaddr_in*>(address.sockaddr_pointer());
  header.append(reinterpret_cast<const char*>(&in->sin_addr), 4);
  header += std::string("\xc0\x00\x02\x01", 4);  // 192.0.2.1
  header += static_cast<char>(port >> 8);
  header += static_cast<char>(port & 0xff);
  header += std::string("\0\x19", 2);  // port 25
  return header;
}

// The daemon's workers check the password off the shard and post the result back; here the
// answer comes after a seeded delay on the clock, through the same backend interface. A crash
// meanwhile loses it, as the daemon's shard would (the process serial tells).
bool world::submit_auth(unsigned shard, std::unique_ptr<auth::verify_request> request) {
  auto result = std::make_shared<auth::verify_result>();
  const bool accepted = request->table->check(request->user, request->password,
                                              request->client) == auth::check_result::accepted;
  result->outcome = accepted ? auth::verify_outcome::success : auth::verify_outcome::failure;
  result->delay_ms = accepted ? 0 : static_cast<std::uint32_t>(_random.between(0, 500));
  result->user = request->user;
  result->reply_to = request->reply_to;
  note(fmt::format("auth check for {}: {}", result->user, accepted ? "accepted" : "refused"));
  _clock.after(latency_ns(100'000, 20'000'000), [this, shard, result, serial = _process_serial] {
    if (process_at(shard) != nullptr && _process_serial == serial) {
      process_at(shard)->sessions.on_auth_result(std::make_unique<auth::verify_result>(*result));
    }
  });
  return true;
}

// RFC 3207 §4.2: the ClientHello follows the 220; what the server said before is forgotten.
void world::client_start_tls(connection& c) {
  tls::client_options options;
  options.host = our_hostname;
  c.tls = tls::session::connect(simulated_client_context(), options);
  if (c.tls == nullptr) return fail("client TLS: no session (out of memory)");
  c.handshaking = true;
  send_ciphertext(c);
}

void world::client_parse_replies(connection& c, std::string_view bytes) {
  const std::uint32_t number = c.number;
  c.replies += bytes;
  std::size_t start = 0;
  for (std::size_t end; (end = c.replies.find("\r\n", start)) != std::string::npos;
       start = end + 2) {
    const std::string_view line(c.replies.data() + start, end - start);
    if (line.size() < 4 || line[3] != ' ') continue;  // continuation line
    client_reply(c, static_cast<std::uint16_t>(std::atoi(std::string(line.substr(0, 3)).c_str())),
                 line.substr(4));
    if (_connections.count(number) == 0) return;
  }
  c.replies.erase(0, start);
}

void world::client_reply(connection& c, std::uint16_t code, std::string_view text) {
  note(fmt::format("client {} <- {} {}", c.number, code, text.substr(0, 40)));
  c.last_code = code;
  c.last_text.assign(text);
  if (c.awaited == 0) return fail(fmt::format("client {} got an unexpected reply", c.number));
  if (--c.awaited == 0) client_stage_done(c);
}

void world::client_stage_done(connection& c) {
  switch (c.current.kind) {
    case stage_kind::data_command:  // no 354: the body is not sent
      if (c.last_code != 354 && !c.stages.empty()) c.stages.pop_front();
      break;
    case stage_kind::data_end:
    case stage_kind::bdat_end: {
      if (c.last_code != 250) {
        ++_outcome.refused;
        break;
      }
      // The server's 250 names the id: it must be one the world saw answered 250.
      const auto at = c.last_text.find("queued as ");
      const auto id = at == std::string::npos
                          ? 0
                          : std::strtoull(c.last_text.c_str() + at + 10, nullptr, 16);
      const auto found = _expected.find(id);
      if (found == _expected.end() || found->second.state != fate::acknowledged) {
        return fail(fmt::format("client {} got 250 for message {:016x} that is not known as "
                                "acknowledged", c.number, id));
      }
      break;
    }
    case stage_kind::starttls:
      if (c.last_code != 220) break;  // refused: the client goes on in plaintext
      return client_start_tls(c);     // client_receive_tls goes on once it is established
    case stage_kind::auth:
      c.authenticated = c.last_code == 235;
      break;
    case stage_kind::plain:
    case stage_kind::quit: break;
  }
  client_next(c);
}

// ---- server side: what the real sessions report

// The session's descriptor closed (its end, or the crash's): the client's connection is over.
void world::on_session_closed(unsigned shard, int fd) {
  const auto found = _by_fd.find({shard, fd});
  if (found == _by_fd.end()) return;
  const std::uint32_t number = found->second;
  _by_fd.erase(found);
  const auto there = _connections.find(number);
  if (there == _connections.end()) return;
  note(fmt::format("connection {} closed ({} stages left)", number, there->second->stages.size()));
  if (there->second->last_code == 0 && !there->second->client_gone) expect_refusal(number);
  _connections.erase(there);
}

// store::commit gave the session a ticket: the message is the client's current transaction
// (it waits for the reply to its end of data). What must be recovered is the client's idea of
// it behind the session's Received: field (RFC 5321 §4.4), built from the envelope's id and
// time with the client's own HELO, address and accepted recipients.
void world::on_commit_issued(unsigned shard, std::uint64_t ticket,
                             const spool::envelope& envelope) {
  const std::uint32_t number = client_of_helo(envelope.helo);
  const auto found = _connections.find(number);
  if (found == _connections.end()) {
    return fail(fmt::format("commit {:016x} from HELO {} names no connected client",
                            envelope.id, envelope.helo));
  }
  const connection& c = *found->second;
  if (c.current.kind != stage_kind::data_end && c.current.kind != stage_kind::bdat_end) {
    return fail(fmt::format("client {}: a commit before its end of data", number));
  }
  const transaction& t = c.transactions.at(c.current.transaction);
  expected_message want;
  want.reverse_path = t.reverse_path;
  for (std::size_t r = 0; r < t.recipients.size(); ++r) {
    auto& into = is_bad(t.recipients[r]) ? want.refused : want.recipients;
    into.push_back(t.recipients[r]);
    if (!is_bad(t.recipients[r])) want.notify.push_back(t.notify[r]);
  }
  want.key = t.key;
  want.helo = helo_of(number);
  want.client_address = c.client_address;
  const auto id_text = spool::format_message_id(envelope.id);
  // Over TLS the field says so (RFC 3848 ESMTPS) with what the client's side negotiated.
  std::string tls_summary;
  if (c.tls != nullptr) {
    int algorithm_bits = 0;
    const int bits = c.tls->cipher_bits(&algorithm_bits);
    tls_summary = fmt::format("(using {} with cipher {} ({}/{} bits))", c.tls->protocol(),
                              c.tls->cipher(), bits, algorithm_bits);
  }
  const net::received_fields fields{
      want.helo, want.client_address, our_hostname,
      c.tls == nullptr ? "ESMTP" : c.authenticated ? "ESMTPSA" : "ESMTPS",
      std::string_view(id_text.data(), 16),
      want.recipients.size() == 1 ? std::string_view(want.recipients[0]) : std::string_view(),
      envelope.received_seconds, tls_summary, false};
  char header[net::received_header_bytes_max];
  want.body_wire.assign(header, net::format_received_header(fields, header, sizeof header));
  want.body_wire += dot_stuff(t.body);
  want.origin = fmt::format("client {} transaction {}", number, c.current.transaction);
  want.marks.assign(want.recipients.size(), mark_state::none);
  // A failed commit whose bytes never reached the disk leaves no trace, so after a crash its
  // id may be given again (the floor is the highest id recovery saw): the id is this
  // message's now, not a refused one that could come back.
  _refused.erase(envelope.id);
  _expected[envelope.id] = std::move(want);
  _tickets.emplace(shard, ticket);
  note(fmt::format("commit {:016x} ({}) ticket {}", envelope.id, _expected[envelope.id].origin,
                   ticket));
}

// The store reports a session's commit: the world's bookkeeping first, then the session (whose
// 250 for a durable message goes through on_accepted).
void world::on_committed(unsigned shard, const spool::event& event) {
  if (_tickets.erase({shard, event.ticket}) == 0) {
    return fail(fmt::format("unknown commit ticket {}", event.ticket));
  }
  auto& want = _expected.at(event.id);
  note(fmt::format("commit {:016x} reported: {}", event.id, event.error));
  // Durable but not (yet) answered: the client may have gone; on_accepted makes it answered.
  want.state = event.error != 0 ? fate::failed : fate::orphaned;
  process_at(shard)->sessions.on_committed(event.ticket, event.error);
  // Answered 250 or, its client gone, handed on: either way on_accepted ran just now.
  if (want.state == fate::orphaned) {
    fail(fmt::format("message {:016x} durable but never handed on", event.id));
  }
}

// The session answers 250 (or, its client gone, hands the durable message on all the same):
// from here the message must survive every crash and be delivered.
void world::on_accepted(const spool::envelope& envelope, std::span<const spool::body_slice> body) {
  const auto found = _expected.find(envelope.id);
  if (found == _expected.end()) {
    return fail(fmt::format("message {:016x} accepted but never committed", envelope.id));
  }
  if (!check_durable(envelope.id, body)) return;
  expected_message& want = found->second;
  want.state = fate::acknowledged;
  _undelivered.push_back(envelope.id);
  ++_outcome.acknowledged;
  if (!_delivery) return;
  // The ledger takes the envelope the session stored (not the client's idea of it).
  expected_message stored = want;
  stored.recipients.clear();
  stored.notify.clear();
  for (const auto& r : envelope.recipients) {
    stored.recipients.push_back(r.address);
    stored.notify.push_back(r.notify);
  }
  _delivery->on_message(envelope.id, stored);
  server::relay& home = *process_at(spool::message_id_shard(envelope.id))->relay;
  if (_options.glue != glue_bug::deliver_refused) return home.route(envelope, body);
  // The planted bug, in the glue between the sessions and the relay: refused ones go too.
  spool::envelope planted = envelope;
  for (const auto& refused : want.refused) planted.recipients.push_back({refused, 0, {}});
  home.route(planted, body);
}

// The durability the 250 promises, checked on the simulated disk itself: the body's bytes
// and the commit record are synced and the segment's name is durable in the directory.
bool world::check_durable(spool::message_id id, std::span<const spool::body_slice> body) {
  if (!_options.ack_check) return true;
  const unsigned shard = spool::message_id_shard(id);
  const spool::store& store = *store_at(shard);
  disk& spool_disk = disk_at(shard);
  const spool::message_entry* entry = store.find(id);
  if (entry == nullptr) {
    fail(fmt::format("message {:016x} reported durable but unknown to the store", id));
    return false;
  }
  std::string why;
  bool durable = spool_disk.durable(store.segment_fd(entry->commit_segment),
                                    entry->commit_offset, entry->commit_bytes, why);
  for (const auto& slice : body) {
    if (!durable) break;
    durable = spool_disk.durable(slice.fd, slice.offset, slice.length, why);
  }
  if (!durable) {
    fail(fmt::format("LOST MAIL: 250 about to be sent for message {:016x} ({}) before it is "
                     "durable: {}", id, _expected.at(id).origin, why));
  }
  return durable;
}

// Delivery (not simulated yet) as far as the spool sees it: a recipient marked delivered.
void world::deliver_tick() {
  if (_failed) return;
  if (_store) {
    // A random acknowledged message with a recipient never marked (dropping, lazily, the
    // ones that have none left).
    std::vector<std::pair<spool::message_id, std::uint16_t>> candidates;
    while (candidates.empty() && !_undelivered.empty()) {
      const std::size_t pick = _random.below(_undelivered.size());
      const auto found = _expected.find(_undelivered[pick]);
      if (found != _expected.end() && found->second.state == fate::acknowledged) {
        for (std::size_t r = 0; r < found->second.marks.size(); ++r) {
          if (found->second.marks[r] == mark_state::none) candidates.emplace_back(found->first, r);
        }
      }
      if (candidates.empty()) {
        _undelivered[pick] = _undelivered.back();
        _undelivered.pop_back();
      }
    }
    if (!candidates.empty()) {
      const auto [id, recipient] = candidates[_random.below(candidates.size())];
      const spool::recipient_status delivered{spool::recipient_state::delivered, 1, 0};
      auto ticket = _store->mark(id, recipient, delivered);
      note(fmt::format("mark {:016x}/{} delivered: {}", id, recipient,
                       ticket ? 0 : ticket.error()));
      if (ticket) {
        _mark_tickets[ticket.value()] = {id, recipient};
        _expected.at(id).marks[recipient] = mark_state::unknown;
      }
    }
  }
  _delivery_ticking = active() || !_mark_tickets.empty();
  if (_delivery_ticking) _clock.after(exponential_ns(_deliver_mean_ns), [this] { deliver_tick(); });
}

// Nothing is left to happen but the daemon's housekeeping, which goes on forever as in the
// daemon (the inbound's TLS ticket keys rotate on a one-minute timer): the clients are done,
// every session closed, the store idle, and the delivery side drained after the faults healed
// (or, without it, the marking ticks over).
bool world::quiescent() const {
  if (active()) return false;
  for (unsigned k = 0; k < _relays.size(); ++k) {
    const process* proc = process_at(k);
    const spool::store* store = store_at(k);
    if ((proc != nullptr && proc->sessions.sessions() != 0) || !store || !store->idle())
      return false;
  }
  if (_delivery) return _healed && _delivery->busy_reason(stores()).empty();
  return !_delivery_ticking && _mark_tickets.empty();
}

void world::crash_tick() {
  if (_failed || _healed || (!_delivery && !active())) return;
  crash(_random.chance(0.7));
  _clock.after(exponential_ns(_crash_mean_ns), [this] { crash_tick(); });
}

// Power loss: the process and every connection are gone, the disk keeps its durable image;
// then a restart: recovery and a new store.
void world::crash(bool torn) {
  ++_outcome.crashes;
  note(fmt::format("CRASH {}{} ({} sessions, {} disk operations in flight)", _outcome.crashes,
                   torn ? " torn" : "", _connections.size(), _disk->in_flight()));
  read_log();
  note_marks_issued();
  _connections.clear();  // clients see a reset; their transactions in progress are lost
  _by_fd.clear();
  _awaiting_refusal.clear();
  if (_delivery) _delivery->attach(nullptr);
  count_accepts();
  _process.reset();      // the relay, the sessions, then their host (its actions do nothing)
  for (auto& other : _others) {
    other.proc.reset();
    other.store.reset();
    other.spool_disk->crash(torn);
  }
  std::fill(_relays.begin(), _relays.end(), nullptr);
  _hub->crash();         // parcels on their way are gone
  _tickets.clear();
  _mark_tickets.clear();
  _store.reset();
  _disk->crash(torn);
  recover_and_check();
}

// The real recovery of a shard's spool, reading the disk's durable image through
// disk::image() (no real files: issue 16); the files it keeps open are the disk's already.
std::optional<spool::recovered_state> world::recover_disk(disk& spool_disk, unsigned shard) {
  auto recovered = spool::recover(fmt::format("/sim/shard-{}", shard), shard, spool_disk.image());
  if (!recovered) {
    fail(fmt::format("recovery of shard {} failed: {}", shard,
                     std::strerror(recovered.error())));
    return std::nullopt;
  }
  return std::move(recovered.value());
}

bool world::recover_and_check() {
  auto recovered = recover_disk(*_disk, 0);
  if (!recovered) return false;
  auto& state = *recovered;
  const auto& report = state.report;
  note(fmt::format("recovered: {} segments, {} journals, {} messages ({} final), torn tails {}, "
                   "corrupt {}, voided {}, incomplete {}", report.segments, report.journals,
                   report.messages, report.final_messages, report.torn_tails,
                   report.corrupt_regions, report.voided_messages,
                   report.incomplete_messages));
  _store = std::make_unique<spool::store>(_store_config, std::move(state));
  start_process();
  if (!recover_others()) return false;
  // Every message the stores have must be one the world knows; every one they must have, they
  // have.
  std::set<spool::message_id> present;
  for (const auto* store : stores()) {
    store->for_each_message([&](const spool::message_entry& entry) { present.insert(entry.id); });
  }
  for (const auto id : present) {
    const spool::message_entry* entry = store_at(spool::message_id_shard(id))->find(id);
    if (_finished.count(id) != 0 && entry->status != spool::message_status::final) {
      fail(fmt::format("LOST MARK: message {:016x} was recovered final before, now queued", id));
      return false;
    }
    if (_expected.count(id) == 0 && _refused.count(id) != 0) {
      // A commit reported failed (452) must never come back: the client retried, so it would
      // be a duplicate (seeds 121, 113: a void record reclaimed with its segment before the
      // voided segment, fixed in store::maybe_remove_segment; docs/notes.md).
      ++_outcome.resurrected;
      fail(fmt::format("RESURRECTED: message {:016x} was answered 452 but is recovered", id));
      return false;
    }
    if (_expected.count(id) == 0 && _finished.count(id) == 0 && !adopt_dsn(id)) {
      fail(fmt::format("PHANTOM: message {:016x} recovered but never committed", id));
      return false;
    }
  }
  for (auto it = _expected.begin(); it != _expected.end();) {
    if (!check_recovered(it->first, it->second)) return false;
    const spool::store* home = store_at(spool::message_id_shard(it->first));
    const spool::message_entry* entry = home->find(it->first);
    const bool done = entry == nullptr || entry->status == spool::message_status::final;
    if (entry == nullptr && it->second.state == fate::failed) _refused.insert(it->first);
    if (done && entry != nullptr) _finished.insert(it->first);
    it = done ? _expected.erase(it) : std::next(it);
  }
  list_undelivered();
  if (_delivery && !_failed) start_relay();
  settle();
  return !_failed;
}

// The relay of the new process routes what the recovered spool holds (relay::start).
void world::start_relay() {
  _delivery->on_recovered(stores());
  _relays[0] = _process->relay.get();
  start_others();
  if (_failed) return;
  // Every relay is registered before any starts (a started relay may send to any other).
  for (auto* relay : _relays) {
    if (auto started = relay->start(); !started) {
      return fail(fmt::format("relay: {}", started.error_text()));
    }
  }
  _delivery->attach(_process->relay.get());
  wake_process();
}

// The other shards' spools, each recovered from its disk's durable image (before the world
// checks what every shard's recovery found).
bool world::recover_others() {
  for (unsigned k = 1; k <= _others.size(); ++k) {
    other_shard& other = _others[k - 1];
    auto recovered = recover_disk(*other.spool_disk, k);
    if (!recovered) return false;
    other.store = std::make_unique<spool::store>(other.config, std::move(*recovered));
  }
  return true;
}

// The other shards' processes (sessions and relay), each over its recovered store.
void world::start_others() {
  for (unsigned k = 1; k <= _others.size(); ++k) {
    other_shard& other = _others[k - 1];
    other.proc = std::make_unique<process>(
        *this, _clock, _mesh_random.next(), _net_ns_max, _delivery->network(), *other.store,
        _receive_buffer_bytes, _receive_buffer_count, _proxy,
        std::make_unique<const server::relay_config>(_delivery->relay_config(_relays)),
        _hub->at(k), _unsafe_no_fsync);
    start_host_cache(other.proc->host, k);
    if (auto started = other.proc->sessions.start(); !started) {
      return fail(fmt::format("inbound sessions of shard {}: {}", k,
                              std::strerror(started.error())));
    }
    start_acceptor(*other.proc, k);
    _relays[k] = other.proc->relay.get();
  }
}

// Each process's host misses the page cache with the seed's chance, on a stream of its own.
void world::start_host_cache(sim_host& host, unsigned shard) {
  host.set_cache_misses(_cache_miss, _options.seed ^ (_process_serial << 8) ^ shard);
}

// Before a crash: a recipient the store holds final in memory may have been marked durably
// (recovery may find it final); one never marked must come back queued (check_recovered).
void world::note_marks_issued() {
  if (!_store) return;
  for (auto& [id, want] : _expected) {
    const spool::store* home = store_at(spool::message_id_shard(id));
    if (want.state != fate::acknowledged || home == nullptr) continue;
    const spool::message_entry* entry = home->find(id);  // null: final and reclaimed
    // An operator's delete makes every open recipient final at recovery once its record is
    // durable (spool/recovery.cc), marked or not.
    const bool deleted = entry != nullptr && (entry->flags & spool::message_flag_deleted) != 0;
    for (std::size_t r = 0; r < want.marks.size(); ++r) {
      if (want.marks[r] != mark_state::none) continue;
      if (entry == nullptr || deleted || spool::is_final(entry->recipients.at(r).state)) {
        want.marks[r] = mark_state::unknown;
      }
    }
  }
}

// A new process's inbound sessions over the new store (at the start and after each crash).
void world::start_process() {
  ++_process_serial;
  std::unique_ptr<const server::relay_config> relay_settings;
  if (_delivery) {
    relay_settings = std::make_unique<const server::relay_config>(_delivery->relay_config(_relays));
  }
  _process = std::make_unique<process>(*this, _clock, _random.next(), _net_ns_max,
                                       _delivery ? _delivery->network() : sim_network{}, *_store,
                                       _receive_buffer_bytes, _receive_buffer_count, _proxy,
                                       std::move(relay_settings), _hub->at(0),
                                       _unsafe_no_fsync);
  start_host_cache(_process->host, 0);
  if (auto started = _process->sessions.start(); !started) {
    return fail(fmt::format("inbound sessions: {}", std::strerror(started.error())));
  }
  start_acceptor(*_process, 0);
}

// LIVENESS of the acceptor: a client whose connection the process took (no crash since) hears
// the greeting within 5 s. Nothing here delays it (no greeting delay, the session limit
// is never reached), but an accept that failed EMFILE pauses accepting for 250 ms or until a
// session ends — and must resume.
void world::check_greeted(std::uint32_t number, std::uint64_t serial) {
  const auto found = _connections.find(number);
  if (_failed || serial != _process_serial || found == _connections.end()) return;
  if (found->second->last_code != 0) return;
  fail(fmt::format("LIVENESS: client {} connected {} s ago and was never greeted (accepts {}, "
                   "failed EMFILE {} on its shard)", number, greeting_bound_ns / 1'000'000'000,
                   process_at(found->second->shard)->host.counters().accepts,
                   process_at(found->second->shard)->host.counters().accepts_failed));
}

// A session closed before any reply: only the acceptor's refusal at the session limit does
// that here (its 421, sent just before the close, still on its way). Within a second, with no
// crash between, the client must have it (RFC 5321 §3.8: 421 and close when the service must
// shut the channel).
void world::expect_refusal(std::uint32_t number) {
  _awaiting_refusal.insert(number);
  _clock.after(1'000'000'000, [this, number, serial = _process_serial] {
    if (_failed || serial != _process_serial || _awaiting_refusal.erase(number) == 0) return;
    fail(fmt::format("CLOSED UNGREETED: client {}'s connection was closed without a reply "
                     "(no greeting, no 421)", number));
  });
}

void world::on_refusal(std::uint32_t number, const std::string& bytes) {
  _awaiting_refusal.erase(number);
  if (bytes.rfind("421 4.7.0 ", 0) != 0) {
    return fail(fmt::format("CLOSED UNGREETED: client {} was closed with \"{}\" instead of a 421",
                            number, bytes.substr(0, 60)));
  }
  if (_sessions_max >= session_limit_default) {
    return fail(fmt::format("client {} refused at the session limit, which is {}: no more than "
                            "a few clients are ever open", number, _sessions_max));
  }
  ++_outcome.refused_at_limit;
  note(fmt::format("client {} refused: {}", number, bytes.substr(0, bytes.find('\r'))));
}

// The daemon's acceptor on the process's listener; in a third of the seeds its accepts fail
// EMFILE at 1-20% (drawn on a stream of its own), so accepting pauses and resumes.
// Before the processes go: what their hosts' listeners saw.
void world::count_accepts() {
  for (unsigned k = 0; k < _relays.size() || k == 0; ++k) {
    if (const process* proc = process_at(k)) {
      _outcome.accepts += proc->host.counters().accepts;
      _outcome.accepts_failed += proc->host.counters().accepts_failed;
    }
  }
}

void world::start_acceptor(process& proc, unsigned shard) {
  random draw(_options.seed * 0x9e3779b97f4a7c15ull + 0xacce97);
  if (draw.chance(0.33)) {
    proc.host.set_accept_failures(static_cast<double>(draw.between(1, 20)) / 100,
                                  _options.seed ^ (_process_serial << 8) ^ shard ^ 0xacce97);
  }
  if (auto started = proc.acceptor.start(); !started) {
    fail(fmt::format("acceptor of shard {}: {}", shard, started.error_text()));
  }
}

// One message the world knows against what recovery found (see sim_world.h).
bool world::check_recovered(spool::message_id id, expected_message& want) {
  const spool::message_entry* entry = store_at(spool::message_id_shard(id))->find(id);
  if (entry == nullptr) {
    // Marked delivered means delivered: once every recipient was (even if a mark's journal
    // write failed), the message may be reclaimed. One never marked must still be queued.
    bool all_delivered = true;
    for (const auto mark : want.marks) all_delivered = all_delivered && mark != mark_state::none;
    if (want.state == fate::acknowledged && !all_delivered) {
      fail(fmt::format("LOST MAIL: message {:016x} ({}) was answered 250 but is not recovered "
                       "after crash {}", id, want.origin, _outcome.crashes));
      return false;
    }
    return true;  // never acknowledged (its commit was in flight), or delivered and reclaimed
  }
  if (!want.content_known && !read_stored(id, want)) {
    fail(fmt::format("LOST MAIL: {} recovered but unreadable", want.origin));
    return false;
  }
  if (want.state != fate::acknowledged) {  // in flight at the crash, yet durable: adopted
    note(fmt::format("adopted {:016x} ({}): recovered though never answered 250", id,
                     want.origin));
    want.state = fate::acknowledged;
    ++_outcome.adopted;
    if (_delivery) _delivery->on_message(id, want);
  }
  for (std::size_t r = 0; r < want.marks.size(); ++r) {
    const bool delivered = spool::is_final(entry->recipients.at(r).state);
    if (want.marks[r] == mark_state::delivered && !delivered) {
      fail(fmt::format("LOST MARK: recipient {} of {:016x} was durably marked final but "
                       "recovered as {}", r, id,
                       spool::recipient_state_name(entry->recipients[r].state)));
      return false;
    }
    // Deferred (with its attempts and retry time) is still queued (RFC 5321 §4.5.4.1).
    if (want.marks[r] == mark_state::none && delivered) {
      fail(fmt::format("recipient {} of {:016x} was never delivered but recovered as {}", r, id,
                       spool::recipient_state_name(entry->recipients[r].state)));
      return false;
    }
    want.marks[r] = delivered ? mark_state::delivered : mark_state::none;
  }
  // A final message (every recipient delivered) may have lost its body segments already.
  return entry->status == spool::message_status::final || check_content(id, want);
}

// What store::read() gives, read through the disk: recovered descriptors are the disk's (on
// /dev/null), not files holding the image, so a real pread would find nothing.
core::result<spool::stored_message> world::read_through_disk(spool::message_id id) const {
  const unsigned home = spool::message_id_shard(id);
  const spool::store& store = *store_at(home);
  const auto where = store.locate(id);
  if (!where) return core::fail(where.error());
  std::string record(where.value().bytes, '\0');
  const std::int64_t got =
      disk_at(home).read(where.value().fd, where.value().offset, record.data(), where.value().bytes);
  if (got < 0) return core::fail(static_cast<int>(-got));
  if (got != static_cast<std::int64_t>(record.size())) return core::fail(EIO);
  return store.parse_commit(id, where.value(), record);
}

// The recovered envelope and body, read back through the store and the disk, against the
// client's.
bool world::check_content(spool::message_id id, const expected_message& want) {
  auto stored = read_through_disk(id);
  if (!stored) {
    fail(fmt::format("LOST MAIL: message {:016x} ({}) recovered but unreadable: {}", id,
                     want.origin, std::strerror(stored.error())));
    return false;
  }
  // Each slice is compared where it lands in the client's body: a whole copy of the body,
  // zero-filled first, cost more than recovery's reading of it (every pending message is
  // checked after every crash).
  std::size_t body_bytes = 0;
  bool same_body = true;
  const disk& home_disk = disk_at(spool::message_id_shard(id));
  for (const auto& slice : stored.value().body) {
    const char* read = read_slice(home_disk, slice);
    if (read == nullptr) {
      fail(fmt::format("message {:016x}: short read of its body", id));
      return false;
    }
    same_body = same_body && body_bytes + slice.length <= want.body_wire.size() &&
                std::memcmp(read, want.body_wire.data() + body_bytes, slice.length) == 0;
    body_bytes += slice.length;
  }
  const auto& envelope = stored.value().envelope;
  std::vector<std::string> recipients;
  for (const auto& r : envelope.recipients) recipients.push_back(r.address);
  if (envelope.id != id || envelope.reverse_path != want.reverse_path ||
      recipients != want.recipients || envelope.helo != want.helo ||
      envelope.client_address != want.client_address) {
    fail(fmt::format("CORRUPT: message {:016x} ({}) recovered with another envelope: id "
                     "{:016x}, from <{}> (expected <{}>), to {} (expected {}), helo {} "
                     "(expected {}), client {} (expected {})", id, want.origin, envelope.id,
                     envelope.reverse_path, want.reverse_path, fmt::join(recipients, ","),
                     fmt::join(want.recipients, ","), envelope.helo, want.helo,
                     envelope.client_address, want.client_address));
    return false;
  }
  if (!same_body || body_bytes != want.body_wire.size()) {
    fail(fmt::format("CORRUPT: message {:016x} ({}) recovered with another body ({} bytes, "
                     "expected {})", id, want.origin, body_bytes, want.body_wire.size()));
    return false;
  }
  ++_outcome.recovered_checked;
  return true;
}

// One slice of a recovered body: in place in the disk's durable image, else read into a buffer
// kept for the next (uninitialized: it is read over at once); nullptr on a short read.
const char* world::read_slice(const disk& home_disk, const spool::body_slice& slice) {
  const std::string_view held = home_disk.durable_view(slice.fd, slice.offset, slice.length);
  if (held.size() == slice.length && slice.length != 0) return held.data();  // not copied
  if (_slice_buffer_bytes < slice.length) {
    _slice_buffer = std::make_unique_for_overwrite<char[]>(slice.length);
    _slice_buffer_bytes = slice.length;
  }
  const std::int64_t read =
      home_disk.read(slice.fd, slice.offset, _slice_buffer.get(), slice.length);
  return read == static_cast<std::int64_t>(slice.length) ? _slice_buffer.get() : nullptr;
}

// A recovered message the world never saw committed: a DSN whose commit the relay issued
// before the crash (the relay spools DSNs from <> with client "local") is adopted like a
// client's message in flight; anything else is a PHANTOM.
bool world::adopt_dsn(spool::message_id id) {
  if (!_delivery || _refused.count(id) != 0) return false;
  expected_message want;
  if (!read_stored(id, want) || !want.reverse_path.empty() || want.client_address != "local") {
    return false;
  }
  want.origin = fmt::format("DSN {:016x}", id);
  want.state = fate::in_flight;
  _expected.emplace(id, std::move(want));
  return true;
}

void world::list_undelivered() {
  _undelivered.clear();
  for (const auto& [id, want] : _expected) {
    if (want.state == fate::acknowledged) _undelivered.push_back(id);
  }
}

}  // namespace internal

outcome run(const options& settings) {
  internal::world simulation(settings);
  return simulation.run();
}

}  // namespace ringmta::sim
