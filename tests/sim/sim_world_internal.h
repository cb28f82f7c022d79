// The simulated world's types, shared by sim_world.cc (clients, the process: the real inbound
// sessions, relay and spool; crashes) and sim_delivery.cc (DNS, remote MTAs, the operator).
// Internal to tests/sim.
// Never: included outside tests/sim.
#pragma once

#include <array>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "ringmta/smtp/parameters.h"
#include "ringmta/smtp/server_session.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"
#include "ringmta/auth/verifier.h"
#include "ringmta/tls/session.h"
#include "sim_disk.h"
#include "sim_host.h"
#include "sim_mesh.h"
#include "sim_world.h"

namespace ringmta::server {
class relay;
}
namespace ringmta::sim {
class sim_host;
}

namespace ringmta::sim::internal {

inline constexpr std::int64_t epoch_seconds = 1'800'000'000;  // the simulated wall clock at t = 0
inline constexpr std::size_t trace_lines = 40;
// After the faults are healed the queue must drain within this (LIVENESS).
inline constexpr std::int64_t liveness_bound_ns = 2 * 86'400'000'000'000LL;
inline constexpr std::string_view storage_text = "Local error: message not stored, try again later";

// One transaction as the client means it: what must be stored if it is answered 250.
struct transaction {
  std::string reverse_path;
  std::vector<std::string> recipients;  // every RCPT sent; "bad-" ones get 550
  std::vector<std::uint8_t> notify;     // per recipient: smtp::notify_* bits (0: no NOTIFY)
  std::string key;                      // the body's Message-ID, "sim.cN.tI": names it remotely
  std::string body;                     // CRLF lines, as the message is (not dot-stuffed)
  bool bdat = false;
  std::vector<std::size_t> chunks;      // BDAT chunk sizes (the last may be 0)
};

// RFC 5321 §4.5.2: a line starting with "." gets another one.
inline std::string dot_stuff(std::string_view body) {
  std::string out;
  out.reserve(body.size() + body.size() / 64);
  std::size_t line = 0;
  while (line < body.size()) {
    if (body[line] == '.') out.push_back('.');
    const std::size_t end = body.find('\n', line);
    const std::size_t next = end == std::string_view::npos ? body.size() : end + 1;
    out.append(body.substr(line, next - line));
    line = next;
  }
  return out;
}

inline constexpr std::string_view letters =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 abcdefghijklmnopqrstuvwxyz";

inline bool is_bad(std::string_view address) { return address.substr(0, 4) == "bad-"; }

// What a recovered message must look like, and what the world knows of its fate.
enum class fate : std::uint8_t {
  in_flight,     // commit ticket issued, outcome not yet reported
  acknowledged,  // answered 250 (or adopted after a recovery found it)
  failed,        // commit reported failed: answered 452
  orphaned,      // reported durable, not yet handed on (on_committed checks it is, at once)
};
// delivered: a final state (delivered, bounced) reported durable.
enum class mark_state : std::uint8_t { none, unknown, delivered };

struct expected_message {
  std::string reverse_path;
  std::vector<std::string> recipients;  // accepted ones
  std::vector<std::uint8_t> notify;     // their NOTIFY bits
  std::vector<std::string> refused;     // refused at RCPT (never to be delivered)
  std::string key;                      // the body's Message-ID (empty for a DSN)
  std::string body_wire;
  std::string helo;
  std::string client_address;
  std::string origin;  // "client N transaction T", for messages
  fate state = fate::in_flight;
  std::vector<mark_state> marks;
  // false: a DSN whose commit the relay was told failed: its content is taken from the spool
  // if a recovery finds it all the same (then checked like any other from there on).
  bool content_known = true;
};

// starttls: the 220 starts the client's TLS handshake (sim_tls.h); the next stage waits for it.
// auth: a 235 makes the client authenticated (its Received: then says ESMTPSA).
enum class stage_kind : std::uint8_t {
  plain, starttls, auth, data_command, data_end, bdat_end, quit };
struct stage {
  std::string bytes;
  std::uint32_t replies = 1;
  stage_kind kind = stage_kind::plain;
  std::uint32_t transaction = 0;  // the index of the transaction whose bytes these are
};

class world;
class delivery;
struct process;

// One simulated client's SMTP connection to the real inbound session (src/server's
// inbound_sessions on the process's sim_host): the client's script and what it has seen.
struct connection {
  connection(std::uint32_t number, std::vector<transaction> transactions)
      : number(number), transactions(std::move(transactions)) {}

  const std::uint32_t number;
  unsigned shard = 0;                // whose sessions it reached (each shard has a listener)
  std::string client_address;        // "192.0.2.N"
  int fd = -1;                       // the session's descriptor on the shard's host
  std::vector<transaction> transactions;
  std::deque<stage> stages;
  std::string replies;               // received, not yet parsed
  std::uint32_t awaited = 0;
  stage current;
  std::uint16_t last_code = 0;
  std::string last_text;
  bool client_gone = false;
  bool authenticated = false;  // AUTH answered 235
  // After STARTTLS's 220: the client's side of TLS; every byte both ways goes through it.
  std::unique_ptr<tls::session> tls;
  bool handshaking = false;  // the next stage waits for the handshake to complete
};

class world {
 public:
  explicit world(const options& settings);
  ~world();
  outcome run();

  // used by the clients' peers and the delivery side
  spool::store& store() { return *_store; }
  spool::store* store_or_null() { return _store.get(); }
  const options& settings() const { return _options; }
  outcome& counters() { return _outcome; }
  bool healed() const { return _healed; }
  std::int64_t healed_ns() const { return _healed_ns; }  // when the faults stopped
  bool failed_now() const { return _failed; }
  // An acknowledged message still queued, drawn with `rng` (0: none found): the operator's.
  spool::message_id random_queued_message(random& rng) const;
  // A loop turn of the process's hosts (after calling a relay from outside its callbacks).
  void wake_process();
  // Any shard's spool file (a body on its home shard's segment: one descriptor table).
  std::int64_t read_any_disk(int fd, std::uint64_t offset, void* into, std::uint32_t n) const;
  std::vector<const spool::store*> live_stores() const { return stores(); }  // every shard's
  std::int64_t wall_seconds() const { return epoch_seconds + _clock.now_ns() / 1'000'000'000; }
  void fail(std::string message);
  void note(std::string_view text);
  scheduler& clock() { return _clock; }
  // From the inbound process (sim_world.cc): server bytes reaching client `number`, a session's
  // descriptor closed, a commit ticket issued, a message answered 250.
  void client_receive(std::uint32_t number, const std::string& bytes);
  void on_session_closed(unsigned shard, int fd);
  void on_commit_issued(unsigned shard, std::uint64_t ticket, const spool::envelope& envelope);
  void on_accepted(const spool::envelope& envelope, std::span<const spool::body_slice> body);
  // The sessions' password checks (auth::verify_service): answered on the simulated clock.
  bool submit_auth(unsigned shard, std::unique_ptr<auth::verify_request> request);
  auth::verify_service& verifier(unsigned shard) { return *_verifiers.at(shard); }
  std::uint32_t sessions_max() const { return _sessions_max; }
  // The process's spool_ring_driver at work: its ring ops (through the host's file writer) and
  // its file worker's creations and removals go to the shard's disk; each result comes back
  // the way the daemon gets it (a completion on the host; the file worker's message).
  void submit_ring_op(unsigned shard, const sim_host::file_op& op);
  void submit_file_op(unsigned shard, const spool::operation& op);
  void on_store_event(unsigned shard, const spool::event& event);  // the driver's listener

 private:
  void on_disk_done(unsigned shard, std::uint64_t token, std::int64_t result);
  // clients (client side of connection)
  void spawn_client();
  // `relays`: the client will be authenticated (may relay anywhere), so no "bad-" recipient
  // (outside relay_domains) that the world expects refused.
  transaction make_transaction(std::uint32_t client, std::uint32_t index, bool relays);
  std::string make_body(std::string_view key);
  // How a client talks: XCLIENT first (a front end), STARTTLS, AUTH (only inside TLS), with
  // the right password or not.
  struct client_plan {
    bool xclient = false;
    bool starttls = false;
    bool auth = false;
    bool wrong_password = false;
  };
  void build_stages(connection& c, const client_plan& plan);
  void client_next(connection& c);
  void client_send(connection& c, std::string_view bytes);
  void send_ciphertext(connection& c);  // what the client's TLS has to send
  void send_pieces(connection& c, std::string_view bytes);
  void client_start_tls(connection& c);
  std::string proxy_header(const connection& c);
  void client_receive_tls(connection& c, std::string_view bytes);
  void client_parse_replies(connection& c, std::string_view bytes);
  void client_disconnect(std::uint32_t number);
  void client_reply(connection& c, std::uint16_t code, std::string_view text);
  void client_stage_done(connection& c);
  // server side: src/server's sessions and relay in a process
  void start_process();
  void start_relay();
  void start_others();  // shards 1..: a store from each disk's recovery, a process, a relay
  void start_acceptor(process& proc, unsigned shard);
  void count_accepts();
  static constexpr std::int64_t greeting_bound_ns = 5'000'000'000;
  void check_greeted(std::uint32_t number, std::uint64_t serial);
  void expect_refusal(std::uint32_t number);
  void on_refusal(std::uint32_t number, const std::string& bytes);
  static constexpr std::uint32_t session_limit_default = 4096;
  std::uint32_t _sessions_max = session_limit_default;  // sessions_per_shard_max (drawn)
  std::set<std::uint32_t> _awaiting_refusal;  // closed before any reply: the 421 is on its way
  void on_committed(unsigned shard, const spool::event& event);
  void on_dsn_committed(const spool::event& event);  // one the relay spooled
  void on_marked(process& proc, const spool::event& event);
  void read_log();  // the process's log records, to the delivery side
  // A durable message as the spool holds it now (the simulated disk's page cache).
  bool read_stored(spool::message_id id, expected_message& out);
  bool check_durable(spool::message_id id, std::span<const spool::body_slice> body);
  // spool, disk, crashes
  spool::store_config make_store_config();
  void settle();
  void check_bounds();
  void deliver_tick();
  bool quiescent() const;  // nothing left but housekeeping timers: the run is over
  void crash_tick();
  void crash(bool torn);
  // A message's home shard (its id's shard bits), and any shard: store, disk, process.
  spool::store* store_at(unsigned shard) const;
  disk& disk_at(unsigned shard) const;
  process* process_at(unsigned shard) const;
  std::vector<const spool::store*> stores() const;
  bool settle_store(unsigned shard);  // progress made
  bool recover_others();
  std::optional<spool::recovered_state> recover_disk(disk& spool_disk, unsigned shard);
  bool recover_and_check();
  bool adopt_dsn(spool::message_id id);  // recovered, unknown: a DSN in flight at the crash?
  void note_marks_issued();  // before a crash: recipients the store holds final in memory
  bool check_recovered(spool::message_id id, expected_message& want);
  bool check_content(spool::message_id id, const expected_message& want);
  core::result<spool::stored_message> read_through_disk(spool::message_id id) const;
  const char* read_slice(const disk& home_disk, const spool::body_slice& slice);
  void list_undelivered();
  std::int64_t latency_ns(std::int64_t low, std::int64_t high) {
    return static_cast<std::int64_t>(_random.between(static_cast<std::uint64_t>(low),
                                                     static_cast<std::uint64_t>(high)));
  }
  std::int64_t exponential_ns(std::int64_t mean_ns) {
    const double u = (static_cast<double>(_random.next() >> 11) + 1) * 0x1.0p-53;
    return static_cast<std::int64_t>(-std::log(u) * static_cast<double>(mean_ns));
  }
  bool active() const { return _transactions_left > 0 || !_connections.empty(); }

  void heal();

  options _options;
  std::unique_ptr<delivery> _delivery;
  bool _healed = false;
  bool _heal_scheduled = false;
  std::int64_t _healed_ns = 0;
  scheduler _clock;
  random _random;
  std::unique_ptr<disk> _disk;
  std::unique_ptr<spool::store> _store;
  spool::store_config _store_config;
  std::unique_ptr<process> _process;  // shard 0: sessions and relay over _store; a crash ends it
  // Shards 1.. (1-3 shards per seed with the relay): the daemon's other shards, each with its
  // own store on its own simulated disk (no faults), sessions no client reaches, and a relay
  // owning its share of the destinations; their jobs and outcomes cross the simulated mesh.
  struct other_shard {
    std::unique_ptr<disk> spool_disk;
    spool::store_config config;
    std::unique_ptr<spool::store> store;
    std::unique_ptr<process> proc;
  };
  std::vector<other_shard> _others;
  disk_profile _disk_profile;  // every shard's disk faults (drawn once per seed)
  bool _other_completions = false;
  random _mesh_random;  // its own stream: --no-outbound runs replay the first slice's
  std::unique_ptr<sim_mesh_hub> _hub;    // the shards' parcels
  std::vector<server::relay*> _relays;   // relay_config.shards, by shard id
  std::uint32_t _receive_buffer_bytes = 0;    // drawn per seed, within the store's buffering
  std::uint32_t _receive_buffer_count = 0;
  bool _proxy = false;  // a load balancer in front: the sessions expect a PROXY header
  // Reads the hosts' page cache misses (sim_host::read_cached: EAGAIN, so the outbound's ring
  // read runs); drawn apart from every stream, so runs without the relay are unchanged.
  double _cache_miss = 0;
  void start_host_cache(sim_host& host, unsigned shard);
  std::map<std::uint32_t, std::unique_ptr<connection>> _connections;
  std::map<std::pair<unsigned, int>, std::uint32_t> _by_fd;  // (shard, descriptor) -> client
  std::set<std::pair<unsigned, std::uint64_t>> _tickets;  // sessions' commit tickets in flight
  std::map<std::uint64_t, std::pair<spool::message_id, std::uint16_t>> _mark_tickets;
  bool _delivery_ticking = false;  // deliver_tick() is scheduled (--no-outbound)
  // Per shard (1-3): the sessions' password checks, answered to that shard (sim_verifier).
  std::array<std::unique_ptr<auth::verify_service>, 3> _verifiers;
  std::uint64_t _process_serial = 0;  // start_process() count: late answers find no process
  std::map<spool::message_id, expected_message> _expected;
  std::vector<spool::message_id> _undelivered;  // acknowledged, maybe with unmarked recipients
  std::set<spool::message_id> _refused;   // commit failed (452) and not recovered
  std::set<spool::message_id> _finished;  // recovered final: may come back final, never queued
  std::uint32_t _transactions_left = 0;
  std::uint32_t _next_client = 1;
  bool _completions = false;                    // the disk completed something: retry waiters
  bool _unsafe_no_fsync = false;  // --inject-bug no-fsync: the daemon's --unsafe-no-fsync
  std::uint64_t _disk_serial = 0;     // the disks' tokens: which op of which driver (below)
  std::uint64_t _store_activity = 0;  // driver ops submitted and events heard (settle's progress)
  bool _failed = false;
  std::unique_ptr<char[]> _slice_buffer;  // check_content's reads (the largest slice yet)
  std::size_t _slice_buffer_bytes = 0;
  // run parameters, drawn from the seed
  std::int64_t _net_ns_max = 0;
  std::int64_t _arrival_mean_ns = 0;
  std::int64_t _crash_mean_ns = 0;
  std::int64_t _deliver_mean_ns = 0;
  double _disconnect_chance = 0;
  // event log
  std::deque<std::string> _trace;
  std::uint64_t _digest = 0xcbf29ce484222325ull;
  outcome _outcome;
};
}  // namespace ringmta::sim::internal
