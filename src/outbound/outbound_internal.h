// Internals of outbound::outbound shared by outbound.cc (the table, the API, DNS results, the
// iteration hook), connection.cc (one SMTP client session over the ring) and body.cc (moving
// the body from the spool to the socket).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "body_phase.h"
#include "connection_phase.h"
#include "ringmta/core/step_guard.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/io/buffer_ring.h"
#include "ringmta/outbound/attempt_plan.h"
#include "ringmta/outbound/outbound.h"

namespace ringmta::outbound {

class outbound_server;
struct connection;

enum class timer_purpose : std::uint8_t { connect, reply, idle, flush };

// Where in the staging buffer a BDAT chunk is read: the commands that precede it (at most one
// engine output) are copied right in front of it, so both leave in one send.
inline constexpr std::uint32_t chunk_offset = smtp::client_output_bytes_max;

// Where a body transfer stands. One transfer step (a read, a send, a splice) at a time.
struct body_progress {
  // chunk_ready: read and unstuffed at chunk_offset before the transaction started, waits for
  // the engine's BDAT; chunk_sending: in the send with the commands. encrypted: over TLS, a
  // large body read into a pooled buffer and handed to the TLS session (tls.cc).
  enum class path : std::uint8_t {
    none, staged, spliced, copied, chunk_ready, chunk_sending, encrypted
  };

  // The lifecycle (body_phase.h); enter() is its only writer and asserts the transition.
  body_phase phase() const noexcept { return _phase; }
  bool open() const noexcept { return body_open(_phase); }
  void enter(body_phase next) noexcept;
  // A new transaction or connection: only from none (nothing in flight, no slot held).
  void clear() noexcept;

  path how = path::none;
  // Facts: an SQE of the transfer in flight (counted in the connection's ops); a transfer slot.
  bool step_in_flight = false;
  bool holds_transfer = false;
  std::uint32_t transfer = 0;   // slot in the transfer pool (spliced, copied)
  std::uint32_t slice = 0;      // next slice to move
  std::uint64_t slice_done = 0; // bytes of that slice moved (or read)
  std::uint64_t total = 0;      // body bytes (sum of slices)
  std::uint32_t staged = 0;     // staged path: bytes read into staging so far
  std::uint32_t in_pipe = 0;    // spliced: bytes in the pipe not yet sent
  // body_transfer::copy: the buffer's filled and sent bytes (encrypted: sent = handed to TLS).
  std::uint32_t buffer_filled = 0;
  std::uint32_t buffer_sent = 0;
  bool last_read = false;       // the buffer holds the body's tail
  std::uint32_t chunk_bytes = 0;  // BDAT: the raw (unstuffed) message size
  bool chunked = false;           // this transaction uses BDAT: send_body needs nothing more

 private:
  body_phase _phase = body_phase::none;
};

// What follows once the current socket's fd is closed.
enum class after_close : std::uint8_t {
  finish,           // report on_closed
  next_address,     // this address failed: try the next candidate (or finish)
  plaintext_retry,  // opportunistic TLS failed its handshake: the same address, no STARTTLS
};

// What one socket does about TLS, chosen when it connects (tls.cc).
enum class tls_intent : std::uint8_t {
  none,         // policy none (or no TLS context): never STARTTLS
  starttls,     // STARTTLS when offered (opportunistic) or demanded (required, verify)
  retry_plain,  // opportunistic: the plaintext retry after this address failed a handshake
  remembered,   // opportunistic: this address failed a handshake recently: plaintext at once
};

// Where TLS stands on the current socket. plaintext -> handshake (the server's 220 to
// STARTTLS) -> established | failed; established -> failed (a fatal alert or bad record).
// A new socket starts over at plaintext. Asserted at every transition (set_tls_state).
enum class tls_state : std::uint8_t { plaintext, handshake, established, failed };

// Free slots of the table that keep their connection's session (~10 KB) and staging buffer
// (~68 KB) for the next connection; the others give them back when released.
inline constexpr std::uint32_t free_slots_buffered_max = 64;

// One outgoing connection; lives in outbound_server's table and is reused (the session and
// the staging buffer are allocated on the slot's first use, kept by at most
// free_slots_buffered_max free slots).
//
// Layout: a pooled connection is touched again only after its destination's next job, with
// the other destinations' connections, sessions and buffers through the caches in between
// (bench/relay: 100 destinations, ~100 messages apart). So every field a delivery's steps
// touch (the phase, the socket's facts, the session, staging, the deadline, the job, the body,
// the result's TLS record) sits in the first cache lines, and what only opening, failing,
// TLS set-up or the close report read (route, candidates' bookkeeping, attempts, replies kept
// for logs) follows them. bench/relay/README.md, session 13, has the misses this saves.
struct alignas(64) connection {
  connection(outbound_server& server, std::uint32_t slot) noexcept;

  // ---- hot: every step of a delivery
  outbound_server& server;
  const std::uint32_t slot;
  std::uint32_t generation = 0;
  std::uint64_t destination = 0;

  // The lifecycle (connection_phase.h). enter() is its only writer and asserts the transition;
  // check_invariants() runs at the entry and exit of every step (a completion, a timer, a DNS
  // result, deferred work, an API call).
  connection_phase phase() const noexcept { return _phase; }
  bool live() const noexcept { return _phase != connection_phase::free; }
  void enter(connection_phase next) noexcept;
  void check_invariants() const noexcept;
  using step_guard = core::step_guard<connection>;  // the invariants around one step

 private:
  connection_phase _phase = connection_phase::free;  // beside generation: find() reads both

 public:
  // The socket of the current try. The booleans are facts independent of the phase: ops in
  // flight (each also counted in `ops`) and membership of the server's deferred list.
  std::uint8_t ops = 0;  // SQEs in flight that name this connection (skip_success ones aside)
  bool connect_in_flight = false;
  bool receive_armed = false;
  bool send_in_flight = false;
  bool close_queued = false;   // closing: the close SQE is in flight
  bool retry_receive = false;  // a receive ended with ENOBUFS: re-arm at the end of iteration
  bool deferred = false;       // listed in outbound_server's deferred work
  int fd = -1;
  after_close then = after_close::finish;  // once the fd is closed
  tls_state tls = tls_state::plaintext;    // of the current socket (tls.cc)
  tls_intent intent = tls_intent::none;

  // The SMTP session.
  bool ever_ready = false;      // fact: the session was ready once (reuse, not a new address)
  bool quit_requested = false;  // a request, in any phase: QUIT once ready, or abandon before
  close_reason quit_reason = close_reason::released;
  bool body_failed = false;         // fact of the transaction: the spool could not be read
  bool drop_after_results = false;  // the server answered mid-body: close, no QUIT, no reuse
  std::unique_ptr<smtp::client_session> session;

  // Staging: engine output copied here when handed to the kernel (client_session says the
  // output may move once consumed), and small bodies read here to go out with ".CRLF".
  std::uint32_t staged_begin = 0;
  std::uint32_t staged_end = 0;
  // The first cache line ends here; the body's progress is the second (check_invariants reads
  // both at every step), the deadline and its timer node the third.
  body_progress body;

  // One deadline per connection: what the current wait is for and when it ends. The wheel's
  // node may be armed earlier than deadline_ms (schedule() moves it only to an earlier tick);
  // firing early it re-arms itself for deadline_ms (on_timer).
  timer_purpose timer_use = timer_purpose::reply;
  std::uint32_t timeout_reply_ms = 0;  // the route's (shaping); 0 keeps the outbound's
  std::uint32_t reply_timeout(std::uint32_t configured) const noexcept {
    return timeout_reply_ms != 0 ? timeout_reply_ms : configured;
  }
  std::uint64_t deadline_ms = 0;
  void on_timer() noexcept;
  // Declared after on_timer: a member pointer needs the member declared first.
  core::member_timer<connection, &connection::on_timer> timer{*this};

  std::unique_ptr<char[]> staging;
  std::uint32_t deliveries = 0;
  // The server of the current socket (remote() names it in every result).
  std::uint32_t current = 0;  // index of the candidate of the socket (valid once one is tried)
  bool tried_any = false;  // fact: some address was tried (remote() names it)
  std::vector<candidate> candidates;
  std::unique_ptr<tls::session> tls_session;  // from STARTTLS's 220 until the socket closes

  delivery job;
  tls_outcome tls_report;  // rebuilt for each delivery result

  // ---- cold: opening, address fallback, TLS and AUTH set-up, the close report

  // Route and attempts.
  route_kind kind = route_kind::mx;
  std::uint16_t port = 25;
  std::uint32_t timeout_connect_ms = 0;  // the route's; 0 keeps the outbound's
  std::string route_name;
  // Shaping (route): the EHLO name the session uses (the engine keeps a view of it).
  std::string helo_name;
  std::optional<core::endpoint> source;  // the route's egress source, else the config's
  std::uint64_t lookup = 0;  // the DNS lookup of phase resolving
  std::uint32_t next_candidate = 0;
  std::uint32_t addresses_tried = 0;
  attempt_tracker attempts;
  bool connect_timed_out = false;  // the connect timer fired: its cancellation means ETIMEDOUT

  // TLS of the current socket (tls.cc). The session exists from STARTTLS's 220 until the
  // socket is closed; while it exists every byte both ways goes through it.
  tls_policy tls_wanted = tls_policy::opportunistic;  // the route's
  bool auth_plaintext = false;
  std::shared_ptr<const client_credentials> auth;  // the route's AUTH (a relayhost), or null
  std::string tls_note;  // fallback: why the handshake failed (for delivery records)

  // How it ended.
  close_reason reason = close_reason::lost;
  smtp::client_outcome failure = smtp::client_outcome::accepted;
  smtp::parsed_reply close_reply;
  smtp::parsed_reply local_reply;  // replaces engine replies after a local body failure

  remote_host remote() const noexcept;
  // Ready and given nothing: deliver() may hand it a job now.
  bool takes_delivery() const noexcept {
    return _phase == connection_phase::idle && !quit_requested && session &&
           session->phase() == smtp::client_phase::ready && !session->event_pending();
  }
  connection_handle handle() const noexcept { return {slot, generation}; }

  // Driving the session (connection.cc).
  void open(std::uint64_t destination_cookie, const route& where) noexcept;
  void on_lookup_done(dns::mx_result& result) noexcept;
  void try_next_address() noexcept;
  int bind_source(int socket_fd, int family) const noexcept;  // 0 or an errno
  void on_connected(const io::completion& done) noexcept;
  void on_received(const io::completion& done) noexcept;
  void on_sent(const io::completion& done) noexcept;
  void on_fd_closed() noexcept;
  void pump() noexcept;
  void process_events() noexcept;
  void start_delivery(const delivery& next) noexcept;
  void request_quit(close_reason why) noexcept;
  void abandon(close_reason why) noexcept;  // not ready yet: stop trying
  void arm_receive() noexcept;
  void restart_timer() noexcept;
  void end_socket() noexcept;  // shut the socket; the fd is closed once no op refers to it

  // TLS (tls.cc).
  // Before connecting to candidates[index]; plaintext_retry: the retry after a failed
  // handshake on that address (opportunistic).
  void choose_tls(std::uint32_t index, bool plaintext_retry) noexcept;
  smtp::client_auth auth_for_session() const noexcept;
  void begin_tls() noexcept;                       // the server said 220 to STARTTLS
  void set_tls_state(tls_state next) noexcept;
  bool feed_tls(std::string_view& chunk) noexcept;  // false: stop reading this chunk
  void on_tls_established() noexcept;
  void on_tls_failed() noexcept;
  void fail_tls_handshake(std::string_view text) noexcept;
  bool retry_in_plaintext(const smtp::client_event& event) noexcept;
  void pump_tls() noexcept;
  bool encrypt_pending() noexcept;  // staging, then body bytes, into the TLS session
  bool send_ciphertext() noexcept;
  void on_ciphertext_sent(const io::completion& done) noexcept;
  const tls_outcome& describe_tls() noexcept;
  void end_tls() noexcept;  // the socket is gone: free the session

  // Body (body.cc).
  void start_body() noexcept;
  bool prefetch_chunk() noexcept;  // reads a small body for BDAT if it is in the page cache
  void stage_chunk() noexcept;
  void on_body_completion(io::op_kind kind, const io::completion& done) noexcept;
  void resume_body() noexcept;  // a transfer slot became free
  void abort_body() noexcept;   // the socket is going away: give the transfer slot back

 private:
  void connect_to(std::uint32_t index, bool plaintext_retry = false) noexcept;
  void fail_attempt(attempt_failure how, int error, const smtp::parsed_reply* reply) noexcept;
  void on_session_ready() noexcept;
  void on_session_closed(const smtp::client_event& event) noexcept;
  void report(const smtp::client_event& event) noexcept;
  bool send_staged() noexcept;
  bool queue_send(const char* bytes, std::uint32_t size) noexcept;
  void stage_output() noexcept;
  void finish() noexcept;
  void schedule(timer_purpose purpose, std::uint32_t delay_ms) noexcept;
  // body.cc helpers
  void read_staged_step() noexcept;
  // The current slice's next `length` bytes into `into`, never blocking: from the page cache
  // at once (the count, slice_done advanced), else a ring read queued (0: its completion
  // continues the body), or the ring's error (no room for the read).
  core::result<std::size_t> read_body_bytes(char* into, std::uint32_t length) noexcept;
  void splice_step() noexcept;
  void copy_step() noexcept;
  void body_done() noexcept;
  void release_transfer(bool clean) noexcept;
  void body_failed_locally(int error) noexcept;
  void on_splice_done(io::op_kind kind, std::int32_t result) noexcept;
  void encrypted_read_step() noexcept;  // tls.cc: the next piece of a large body over TLS
  bool encrypt_body() noexcept;
};

// The layout above, kept: a field moved into the hot lines (or grown) fails the build. Members
// are laid out in declaration order, so everything declared before staged_end shares the
// first line. (offsetof on a type that is not standard-layout is conditionally supported;
// GCC and Clang give the declaration-order offsets.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
static_assert(offsetof(connection, staged_end) + sizeof(std::uint32_t) <= 64);
static_assert(offsetof(connection, body) == 64 && sizeof(body_progress) <= 64);
static_assert(offsetof(connection, timer) + sizeof(connection::timer) <= 3 * 64);
static_assert(offsetof(connection, tls_report) + sizeof(tls_outcome) <= 7 * 64);
#pragma GCC diagnostic pop

// Skips empty slices; true while bytes of the body remain (body.cc).
bool next_bytes(const delivery& job, body_progress& body) noexcept;

// Pipes (splice) and buffers (copy) for large bodies, a fixed number per shard, created on
// first use. A pipe that may hold stale bytes (a transfer that failed) is closed, not reused.
class transfer_pool {
 public:
  struct slot {
    int pipe_read = -1;
    int pipe_write = -1;
    std::uint32_t pipe_capacity = 0;
    std::unique_ptr<char[]> buffer;
    bool busy = false;
  };

  // Pipes come from `descriptors` (the host's: kernel pipes, or the simulator's).
  transfer_pool(io::descriptors& descriptors, std::uint32_t count, std::uint32_t pipe_bytes,
                std::uint32_t buffer_bytes);
  ~transfer_pool();

  // A free slot with a pipe (want_pipe) or a buffer ready; nullopt when all are busy (or a
  // pipe cannot be made: errno in `error`).
  std::optional<std::uint32_t> acquire(bool want_pipe, int& error) noexcept;
  void release(std::uint32_t index, bool clean) noexcept;
  slot& at(std::uint32_t index) noexcept { return _slots[index]; }
  std::uint32_t buffer_bytes() const noexcept { return _buffer_bytes; }

 private:
  io::descriptors& _descriptors;
  std::vector<slot> _slots;
  std::uint32_t _pipe_bytes;
  std::uint32_t _buffer_bytes;
};

class outbound_server final : public shard::host_handler,
                              public shard::host_hook,
                              public lookup_handler {
 public:
  outbound_server(shard::host& owner, dns_client& dns, delivery_handler& handler,
                  const outbound_config& config);
  ~outbound_server();

  core::result<void> start() noexcept;
  core::result<connection_handle> open_connection(std::uint64_t destination,
                                                  const route& where) noexcept;
  core::result<void> deliver(connection_handle handle, const delivery& job) noexcept;
  bool can_deliver(connection_handle handle) noexcept;
  bool offers_8bitmime(connection_handle handle) noexcept;
  void release(connection_handle handle) noexcept;
  void begin_shutdown() noexcept;
  bool drained() const noexcept { return _shutting_down && _live == 0; }
  void stop() noexcept;
  std::uint32_t live() const noexcept { return _live; }
  outbound_counters& counters() noexcept { return _counters; }

  void on_completion(const io::completion& done) noexcept override;
  void before_wait() noexcept override;
  void on_lookup_done(std::uint64_t cookie, dns::mx_result& result) noexcept override;

  // A reload: connects started from now wait this long.
  void set_timeout_connect_ms(std::uint32_t ms) noexcept { _config.timeout_connect_ms = ms; }
  void set_tls_context(std::shared_ptr<const tls::client_context> context) noexcept {
    if (context == _config.tls_context) return;
    _config.tls_context = std::move(context);
    _tls_cache.clear();
  }

  // For connections.
  const outbound_config& config() const noexcept { return _config; }
  shard::host& owner() noexcept { return _owner; }
  // Every op of the glue goes through io() and every time it needs comes from the owner's
  // loop (issue 16 item 1): the same code runs over a simulated io::operations and clock.
  io::operations& io() noexcept { return _io; }
  // Sockets, pipes, bind, shutdown, close beside the ring (io/descriptors.h): the host's.
  io::descriptors& descriptors() noexcept { return _owner.descriptors(); }
  std::uint64_t now_ms() const noexcept { return _owner.now_ms(); }  // monotonic
  std::int64_t wall_ms() const noexcept { return _owner.wall_ms(); }
  dns_client& dns() noexcept { return _dns; }
  delivery_handler& handler() noexcept { return _handler; }
  io::buffer_ring& buffers() noexcept { return _buffers; }
  transfer_pool& transfers() noexcept { return _transfers; }
  const smtp::client_config& engine_config() const noexcept { return _engine; }
  std::uint32_t staging_bytes() const noexcept { return _staging_bytes; }
  tls::client_session_cache& tls_cache() noexcept { return _tls_cache; }
  // Opportunistic TLS: addresses whose handshake failed, for tls_plaintext_memory_ms.
  void remember_tls_failure(const core::endpoint& address, std::string_view why) noexcept;
  const std::string* tls_failure_remembered(const core::endpoint& address) noexcept;
  bool shutting_down() const noexcept { return _shutting_down; }
  bool stopped() const noexcept { return _stopped; }
  std::uint64_t user_data(io::op_kind kind, const connection& c) const noexcept {
    return io::pack_user_data(kind, c.generation, c.slot);
  }
  // Op kinds.
  io::op_kind connect_kind = io::op_kind_invalid;
  io::op_kind receive_kind = io::op_kind_invalid;
  io::op_kind send_kind = io::op_kind_invalid;
  io::op_kind close_kind = io::op_kind_invalid;
  io::op_kind body_read_kind = io::op_kind_invalid;
  io::op_kind body_send_kind = io::op_kind_invalid;
  io::op_kind splice_in_kind = io::op_kind_invalid;
  io::op_kind splice_out_kind = io::op_kind_invalid;
  io::op_kind misc_kind = io::op_kind_invalid;

  // Work for the end of the loop iteration (API calls never call the handler themselves).
  void defer(connection& c) noexcept;
  std::span<const candidate> route_candidates(connection_handle handle) noexcept;
  void wait_for_transfer(connection& c) noexcept;
  void transfer_released() noexcept;
  void release_slot(connection& c) noexcept;

 private:
  connection* find(connection_handle handle) noexcept;
  connection* find(const io::op_tag& tag) noexcept;
  void run_deferred() noexcept;
  void on_kick() noexcept { run_deferred(); }


  shard::host& _owner;  // the shard's loop, or the simulator's (shard/host.h)
  io::operations& _io;  // _owner.io()
  dns_client& _dns;
  delivery_handler& _handler;
  outbound_config _config;
  smtp::client_config _engine;
  std::uint32_t _staging_bytes;
  io::buffer_ring _buffers;
  transfer_pool _transfers;
  std::vector<std::unique_ptr<connection>> _connections;  // by slot; created on first use
  std::vector<std::uint32_t> _free_slots;
  std::vector<connection_handle> _deferred;
  std::vector<connection_handle> _deferred_batch;
  std::vector<connection_handle> _transfer_waiters;  // FIFO of bodies waiting for a slot
  tls::client_session_cache _tls_cache;
  struct tls_failure_note {
    std::int64_t until_ms = 0;
    std::string why;
  };
  std::unordered_map<std::string, tls_failure_note> _tls_failures;  // by "address:port"
  core::member_timer<outbound_server, &outbound_server::on_kick> _kick{*this};
  std::uint32_t _live = 0;
  std::uint32_t _buffered_free = 0;  // free slots that kept their session and staging buffer
  bool _hook_due = false;  // a completion was dispatched: before_wait() runs before the wait
  bool _shutting_down = false;
  bool _stopped = false;
  outbound_counters _counters;
};

}  // namespace ringmta::outbound
