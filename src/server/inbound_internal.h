// Internals of server::inbound shared by inbound_sessions.cc (the connection table, tickets,
// shutdown of sessions), inbound_connection.cc (one SMTP session over a shard::host) and its
// helpers (TLS, AUTH, XCLIENT, DKIM). Listeners and accept (inbound.cc) need none of it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ringmta/auth/sasl.h"
#include "ringmta/core/step_guard.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/dkim/signer.h"
#include "ringmta/io/buffer_ring.h"
#include "ringmta/net/header_filter.h"
#include "ringmta/net/proxy_protocol.h"
#include "ringmta/server/egress.h"
#include "ringmta/server/inbound.h"
#include "ringmta/server/inbound_sessions.h"
#include "ringmta/spool/envelope.h"
#include "inbound_phase.h"
#include "session_deadline.h"

namespace ringmta::server {

class inbound_server;
struct connection;

enum class timer_purpose : std::uint8_t {
  greeting_delay, proxy_header, command, data_block, hard_close, tls_handshake, auth_delay };

// A connection's TLS phase (inbound_tls.cc). off → starting (STARTTLS answered 220, the reply
// still going out in plaintext) → handshake → active; implicit TLS starts at handshake; any
// TLS phase may go to failed (send the alert, close).
enum class tls_stage : std::uint8_t { off, starting, handshake, active, failed };

// One SMTP session. Lives in inbound_server's table and is reused for later connections
// (the session is re-created in place; strings keep their capacity).
struct connection final : smtp::server_handler {
  connection(inbound_server& server, std::uint32_t slot) noexcept;

  inbound_server& server;
  const std::uint32_t slot;
  std::uint32_t generation = 0;
  int fd = -1;
  core::endpoint peer;
  std::unique_ptr<smtp::server_session> session;  // created when the client first speaks
  // The configuration this session started with: a reload changes new sessions only.
  std::shared_ptr<const inbound_config> settings;
  timer_purpose timer_use = timer_purpose::command;
  session_deadline deadline;
  std::uint64_t seen_progress = 0;  // session->progress() when the deadline was last set

  // The lifecycle (inbound_phase.h). enter() is its only writer and asserts the transition;
  // check_invariants() runs at the entry and exit of every step (a completion, a timer, a
  // commit result, an AUTH verdict, room in the spool, load and shutdown).
  inbound_phase phase() const noexcept { return _phase; }
  bool live() const noexcept { return _phase != inbound_phase::free; }
  // close() was called: the phase is closing or closed.
  bool ending() const noexcept {
    return _phase == inbound_phase::closing || _phase == inbound_phase::closed;
  }
  void enter(inbound_phase next) noexcept;
  void check_invariants() const noexcept;
  using step_guard = core::step_guard<connection>;  // the invariants around one step

  // Facts independent of the phase: ops in flight (each counted in ops_in_flight), a client
  // slot held, relay rights, membership of the spool-room wait list.
  bool counted_client = false;  // holds a client_counters slot
  bool recv_armed = false;
  bool send_in_flight = false;
  bool relay_allowed = false;   // client is in mynetworks
  bool waiting_for_spool = false;  // input held until the spool (or a receive buffer) has room
  std::string_view literal;          // fixed reply still to send (static storage)
  std::uint8_t ops_in_flight = 0;

  // Input received but not fed yet (held while a verdict is pending, output is full, or a send
  // is in flight): part of a provided buffer we still own.
  bool holding = false;
  std::uint16_t held_buffer = 0;
  std::uint32_t held_offset = 0;
  std::uint32_t held_end = 0;
  net::proxy_header_reader proxy_reader;  // a PROXY header, in however many pieces
  std::string_view message_protocol;  // "UTF8SMTPS"...: this message's Received: and log record

  // For log records (connect, disconnect, rejected).
  std::uint64_t session_id = 0;
  std::int64_t opened_ms = 0;
  std::uint32_t messages_accepted = 0;
  const char* end_reason = nullptr;  // static text: why the connection ended
  std::string rejection_detail;      // what the next `rejected` record adds (a recipient)
  char client_text[64];              // "192.0.2.1:1234" for the records

  // The message being received.
  bool in_message = false;
  bool commit_retry = false;  // the store had no segment ready: commit again later
  int message_error = 0;      // a spool append failed: answer 452 at the end of data
  spool::message_handle message{};
  std::uint64_t ticket = 0;  // a commit in flight (tickets start at 1; 0: none)
  std::uint64_t data_end_ns = 0;  // host().precise_ns() at the end of data: the commit latency
  std::uint64_t message_bytes = 0;
  spool::envelope envelope;  // client_address is set once per connection (admit)
  std::vector<spool::body_slice> body;  // where commit() put the body
  std::string received_header;  // formatted at DATA, spooled with the first body bytes
  // One walk over the header block: X-Ringmta-Pool stripped from every message (honoured from
  // trusted submitters only) and the client's Received: fields counted (RFC 5321 §6.3).
  net::header_filter header_walk{server::pool_header_name};
  std::string pool;  // the egress pool this message asked for (empty: none)
  void choose_pool() noexcept;
  std::unique_ptr<dkim::message_signer> dkim;  // made at the first message to sign

  // TLS (inbound_tls.cc): the session exists from the handshake to the end of the connection.
  tls_stage tls_phase = tls_stage::off;
  bool implicit_tls = false;     // accepted on a --tls-listen listener
  std::unique_ptr<tls::session> tls;
  std::string tls_summary;       // "(using TLSv1.3 with cipher ... (256/256 bits))"

  // SMTP AUTH (inbound_auth.cc). The exchange object exists only during an AUTH exchange.
  bool submission = false;           // accepted on a submission listener: AUTH before MAIL
  std::unique_ptr<auth::sasl_exchange> sasl;
  static constexpr std::size_t auth_line_bytes_max = 12288;  // RFC 4954 §4
  std::unique_ptr<char[]> auth_line_storage;  // made per session offering AUTH
  std::string login;                 // authenticated as (log records, sender checks)
  std::unique_ptr<auth::verify_result> auth_held;  // a failure answered after its delay
  std::uint32_t auth_failures = 0;   // this session's failed AUTH attempts
  std::string_view auth_mechanism;   // "PLAIN" or "LOGIN" (static), for the log records

  // smtp::server_handler
  smtp::verdict on_helo(std::string_view domain, bool extended) noexcept override;
  smtp::verdict on_mail_from(const smtp::mailbox& reverse_path,
                             const smtp::mail_parameters& parameters) noexcept override;
  smtp::verdict on_rcpt_to(const smtp::mailbox& forward_path,
                           const smtp::rcpt_parameters& parameters) noexcept override;
  smtp::verdict on_data_start() noexcept override;
  void on_body(std::string_view slice, smtp::body_form form) noexcept override;
  void spool_bytes(std::string_view slice, smtp::body_form form) noexcept;
  smtp::verdict on_data_end(const smtp::body_summary& summary) noexcept override;
  void on_data_aborted(smtp::abort_reason reason) noexcept override;
  void on_reset() noexcept override;
  smtp::verdict on_starttls() noexcept override;
  smtp::verdict on_auth(std::string_view mechanism,
                        std::string_view initial_response) noexcept override;
  smtp::verdict on_auth_response(std::string_view line) noexcept override;
  void on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept;
  void answer_auth() noexcept;          // the held result, after its delay
  smtp::verdict auth_step(const auth::sasl_step& step) noexcept;
  void log_auth(std::string_view user, std::string_view result) noexcept;
  bool auth_plaintext_allowed() const noexcept;
  std::optional<smtp::verdict> check_sender(const smtp::mailbox& reverse_path) noexcept;

  // XCLIENT (inbound_xclient.cc): what a trusted front end said about the original client.
  // The claimed address replaces `peer` (relaying, records); counted_peer keeps the one
  // client_counters counted.
  core::endpoint counted_peer;
  bool xclient_address_unknown = false;  // ADDR=[UNAVAILABLE]: matches no network
  std::string xclient_helo;              // HELO=: shown instead of the session's
  std::string client_name;               // NAME=: for the records
  smtp::verdict on_xclient(const smtp::xclient_attributes& attributes) noexcept override;
  void on_xclient_refused() noexcept override;
  bool xclient_peer_trusted() const noexcept;
  std::string_view helo_for_records() const noexcept;

  // DKIM signing (inbound_dkim.cc): begin at DATA, feed every body slice, sign at the end.
  bool signs_for_client() const noexcept;
  void dkim_begin() noexcept;
  void dkim_feed(std::string_view slice, smtp::body_form form) noexcept;
  // Signs; a refusal (never unsigned mail that was meant to be signed) or nothing.
  std::optional<smtp::verdict> dkim_finish() noexcept;
  std::string_view dkim_fields() const noexcept;  // committed ahead of the body
  void dkim_accepted(admin::log_record& record) noexcept;  // metrics and log fields

  // Driving the session over the ring (inbound_connection.cc).
  void open(int accepted_fd, const core::endpoint& peer_address, bool refuse) noexcept;
  void on_received(const io::completion& done) noexcept;
  void on_sent(const io::completion& done) noexcept;
  void on_closed() noexcept;
  void on_timeout() noexcept;
  // Declared after on_timeout: a member pointer needs the member declared first.
  core::member_timer<connection, &connection::on_timeout> timer{*this};
  void on_commit_result(int error) noexcept;
  void retry_commit() noexcept;
  void shutdown_now() noexcept;  // 421 4.3.2 and close
  void apply_load() noexcept;     // the shard became loaded: shorten the deadline
  bool idle() const noexcept;     // nothing would be cut short by closing now
  void pump() noexcept;
  void close(const char* reason = nullptr) noexcept;

 private:
  void feed_held() noexcept;
  bool take_proxy_header(std::string_view bytes) noexcept;
  bool proxy_peer_trusted() const noexcept;
  void admit() noexcept;
  void greet() noexcept;
  void ensure_session() noexcept;
  void send_literal_and_close(std::string_view reply, const char* reason) noexcept;
  void log_connect() noexcept;
  void log_disconnect() noexcept;
  void log_rejections(std::string_view sent) noexcept;
  void schedule(timer_purpose purpose, std::uint32_t delay_ms) noexcept;
  void finish_close() noexcept;
  void arm_receive() noexcept;
  void send_output() noexcept;
  void send_bytes(std::string_view bytes) noexcept;
  void release_held() noexcept;
  void restart_timer() noexcept;
  void note_received(std::uint64_t bytes) noexcept;
  void schedule_deadline(std::uint64_t deadline_ms) noexcept;
  smtp::verdict commit() noexcept;
  void clear_message() noexcept;

  // TLS glue (inbound_tls.cc).
  void set_tls_stage(tls_stage next) noexcept;
  bool pump_tls() noexcept;  // true: the TLS phase decided this pump
  void begin_tls() noexcept;
  bool pump_handshake() noexcept;
  void on_tls_established() noexcept;
  void on_tls_failed() noexcept;
  void feed_held_tls() noexcept;
  void send_output_tls() noexcept;
  void tls_end_of_input() noexcept;

  inbound_phase _phase = inbound_phase::free;
  bool tls_output_pending() const noexcept { return tls && !tls->ciphertext().empty(); }
  bool tls_plaintext_pending() const noexcept { return tls && !tls->plaintext().empty(); }
  std::string_view held_view() const noexcept;
  void take_held(std::size_t bytes) noexcept;
};

// Outstanding commit tickets → the connection waiting for each. Open addressing over a
// power-of-two table twice the session limit (one pending commit per connection at most).
class ticket_table {
 public:
  explicit ticket_table(std::uint32_t sessions_max);
  void insert(std::uint64_t ticket, std::uint32_t slot, std::uint32_t generation) noexcept;
  // Removes and returns the waiter of `ticket`.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> take(std::uint64_t ticket) noexcept;

 private:
  struct entry {
    std::uint64_t ticket = 0;  // 0: empty (tickets start at 1)
    std::uint32_t slot = 0;
    std::uint32_t generation = 0;
  };
  void grow();
  std::vector<entry> _entries;
  std::size_t _mask;
  std::size_t _count = 0;
};

// The sessions of one shard (inbound_sessions' implementation): the connection table, commit
// tickets, receive buffers, load and the shutdown of sessions, over a shard::host. Listeners
// and accept are server::inbound's (inbound.cc), which hands it accepted sockets.
// The fields every "received" record has, for a message answered 250 and for one whose client
// left before the answer (inbound_server::take_orphan): id, session, envelope, size, protocol,
// login and pool.
void received_fields(admin::log_record& record, const spool::envelope& envelope,
                     std::uint64_t session_id, std::uint64_t message_bytes,
                     std::string_view protocol, std::string_view login, std::string_view pool);

class inbound_server final : public shard::host_handler {
 public:
  inbound_server(std::shared_ptr<const inbound_config> config, shard::host& host,
                 unsigned shard_id, spool::store& store, spool_pump& spool,
                 inbound_metrics& metrics, admin::log_buffer& log);
  ~inbound_server();

  core::result<void> start() noexcept;
  bool open(int fd, const core::endpoint& peer, session_origin origin) noexcept;
  void begin_shutdown(std::uint32_t grace_ms) noexcept;
  bool drained() const noexcept { return _shutting_down && _live == 0; }
  std::uint32_t sessions() const noexcept { return _live; }
  void on_committed(std::uint64_t ticket, int error) noexcept;
  void on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept;
  inbound_sessions::accepted_fn accepted_listener;
  std::function<void()> release_listener;
  inbound_sessions::commit_issued_fn commit_observer;
  void on_completion(const io::completion& done) noexcept override;
  const std::shared_ptr<const tls::server_context>& tls_context() const noexcept { return _tls; }
  void set_tls_context(std::shared_ptr<const tls::server_context> context) noexcept;
  // Gives held input another chance once the spool has room again (end of each iteration).
  void retry_waiting() noexcept;

  // A reload: new sessions take `next`; STARTTLS and the ticket timer use its TLS context.
  void update(std::shared_ptr<const inbound_config> next) noexcept {
    set_tls_context(next->tls);
    _current = std::move(next);
  }

  // For connections. config() holds what is fixed at start-up (tables, buffers).
  const inbound_config& config() const noexcept { return _config; }
  const std::shared_ptr<const inbound_config>& current() const noexcept { return _current; }
  // The loop services sessions use: ring ops, descriptors, timers, the clock (shard/host.h).
  shard::host& host() noexcept { return _host; }
  unsigned shard_id() const noexcept { return _shard_id; }
  spool::store& store() noexcept { return _store; }
  spool_pump& spool() noexcept { return _spool; }
  inbound_metrics& metrics() noexcept { return _metrics; }
  admin::log_buffer& log() noexcept { return _log; }
  io::buffer_ring& buffers() noexcept { return _buffers; }
  ticket_table& tickets() noexcept { return _tickets; }
  bool shutting_down() const noexcept { return _shutting_down; }
  bool loaded() const noexcept { return _loaded; }
  const deadline_limits& deadlines() const noexcept { return _deadlines; }
  std::uint64_t next_session_id() noexcept { return _next_session++; }
  bool spool_has_room() const noexcept;
  void wait_for_spool(connection& c) noexcept;
  // A receive ended with -ENOBUFS: armed again once a buffer is back within the kernel's reach.
  void wait_for_buffer(connection& c) noexcept;
  std::uint64_t user_data(io::op_kind kind, const connection& c) const noexcept {
    return io::pack_user_data(kind, c.generation, c.slot);
  }
  io::op_kind recv_kind() const noexcept { return _recv_kind; }
  io::op_kind send_kind() const noexcept { return _send_kind; }
  io::op_kind close_kind() const noexcept { return _close_kind; }
  void release(connection& c) noexcept;
  // The connection closes with its commit in flight: keep what routing needs until the spool
  // reports it (on_committed hands a durable one on, though no 250 could be sent).
  void orphan(const connection& c) noexcept;

 private:
  // A message whose client left before its commit was reported (one per ticket in flight).
  struct orphan_message {
    std::uint64_t ticket = 0;
    std::uint64_t session_id = 0;
    spool::envelope envelope;
    std::vector<spool::body_slice> body;
    std::string pool;
    std::uint64_t message_bytes = 0;
    std::string_view protocol;  // static text ("ESMTPS"...)
    std::string login;
  };

  connection* acquire() noexcept;
  connection* find(const io::completion& done) noexcept;
  void on_grace_expired() noexcept;
  void update_load() noexcept;
  void on_ticket_timer() noexcept;
  bool take_orphan(std::uint64_t ticket, int error) noexcept;

  const std::shared_ptr<const inbound_config> _first;
  const inbound_config& _config;             // *_first: what cannot change without a restart
  std::shared_ptr<const inbound_config> _current;
  shard::host& _host;
  const unsigned _shard_id;
  spool::store& _store;
  spool_pump& _spool;
  inbound_metrics& _metrics;
  admin::log_buffer& _log;
  io::buffer_ring _buffers;
  ticket_table _tickets;
  deadline_limits _deadlines;
  bool _loaded = false;                   // sessions above load_threshold_percent
  std::vector<std::unique_ptr<connection>> _connections;  // by slot; created on first use
  std::vector<std::uint32_t> _free_slots;
  std::vector<std::uint32_t> _waiting;   // slots waiting for spool room or a commit retry
  std::vector<std::uint32_t> _retrying;  // _waiting being retried
  std::vector<std::uint32_t> _buffer_waiters;  // slots whose receive found no buffer
  std::vector<orphan_message> _orphans;  // few: at most the commits in flight
  std::uint32_t _live = 0;
  std::uint64_t _next_session = 0;  // log session ids (admin::session_id_base)
  bool _shutting_down = false;
  core::member_timer<inbound_server, &inbound_server::on_grace_expired> _grace_timer{*this};
  std::shared_ptr<const tls::server_context> _tls;  // for new TLS sessions of this shard
  core::member_timer<inbound_server, &inbound_server::on_ticket_timer> _ticket_timer{*this};
  io::op_kind _recv_kind = io::op_kind_invalid;
  io::op_kind _send_kind = io::op_kind_invalid;
  io::op_kind _close_kind = io::op_kind_invalid;
};

}  // namespace ringmta::server
