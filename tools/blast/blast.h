// ringmta-blast: an SMTP load generator on the shard runtime. One blast_shard per shard thread
// drives its share of the connections, each with a pooled smtp::client_session (the project's
// own client engine: replies are parsed in full, PIPELINING is used as the server offers it).
//
// Work model (tools/README.md has the user's view):
// - closed loop (no --rate): each shard keeps its share of --concurrency sessions open; a
//   session sends --messages-per-session messages back to back, then QUIT; the next session
//   starts while the global --sessions budget lasts.
// - open loop (--rate R messages/s): each shard owns a schedule of intended start times (R/T
//   each, interleaved). A due message goes to an idle open session, or a new session is opened
//   if fewer than the shard's concurrency are open; otherwise it waits, and its latency still
//   counts from its intended start (coordinated omission corrected).
// Message ids come from one counter shared by the shards (one relaxed fetch_add per message),
// so the ids of a run are exactly 0..started-1.
//
// Invariants: one send and one multishot recv in flight per connection at most; the engine's
// output is copied into the connection's own staging buffer before a send is submitted (the
// engine reuses its buffer as soon as output is consumed); bodies are shared read-only
// templates per size (checksums precomputed), headers are rendered into a per-connection
// buffer: no allocation per message. Every provided buffer is recycled once, stale CQEs too.
// Never: blocks on the network, or reads another shard's state (the reporter reads counters
// only, and histograms after join()).
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "loadkit/counter.h"
#include "loadkit/histogram.h"
#include "loadkit/object_pool.h"
#include "loadkit/options.h"
#include "loadkit/owned_timer.h"
#include "loadkit/random.h"
#include "ringmta/core/endpoint.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/io/buffer_ring.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/smtp/client_session.h"
#include "ringmta/tls/session.h"

namespace ringmta::blast {

enum class pipelining_mode : std::uint8_t { off, on, automatic };
// --starttls: EHLO, STARTTLS, handshake, EHLO again (RFC 3207); --tls: TLS from the first byte
// (RFC 8314). Either way through the project's tls::session (no certificate verification: a
// load tool measures, it does not authenticate).
enum class tls_mode : std::uint8_t { off, starttls, implicit };

// An address pattern: literal text with {n} (message number), {r} (recipient index),
// {d} (domain index), {domain} (d<d>.<suffix>), {s} (shard). Parsed once at start-up.
class address_pattern {
 public:
  static std::optional<address_pattern> parse(std::string_view text);
  // Writes into out (at most out_bytes_max); returns the length.
  std::size_t render(char* out, std::size_t out_bytes_max, std::uint64_t n, std::uint32_t r,
                     std::uint32_t d, std::string_view suffix, unsigned s) const noexcept;

 private:
  enum class part_kind : std::uint8_t { literal, n, r, d, domain, s };
  struct part {
    part_kind kind;
    std::string text;
  };
  std::vector<part> _parts;
};

struct body_variant {
  std::uint64_t bytes = 0;        // body octets (prefix + tail)
  std::uint64_t checksum = 0;     // XXH64 of prefix + tail (loadkit/integrity.h)
  std::uint32_t prefix_bytes = 0; // taken from the shared body text
  std::string_view tail;          // "\r\n" (or "z\r\n" so the body never ends in a bare CR)
  double cumulative_weight = 0;
};

struct blast_config {
  std::vector<core::endpoint> targets;
  std::uint64_t sessions = 0;       // total budget; 0: unbounded (then --duration bounds)
  std::uint32_t concurrency = 10;
  std::uint32_t messages_per_session = 1;
  std::uint32_t recipients = 1;
  std::uint32_t domains = 1;
  std::string domain_suffix = "test";
  pipelining_mode pipelining = pipelining_mode::automatic;
  bool bdat = false;                // CHUNKING: MAIL, RCPTs, BDAT n LAST + message in one write
  tls_mode tls = tls_mode::off;
  bool tls_resume = true;           // offer the session ticket of the previous connection
  std::shared_ptr<const tls::client_context> tls_context;
  double rate = 0;                  // messages/s, open loop; 0: closed loop
  std::uint64_t duration_ms = 0;    // 0: until --sessions is done
  std::uint64_t drain_ms = 5000;    // after --duration: time for open sessions to finish
  std::uint32_t timeout_ms = 30000; // no progress for this long ends a connection
  unsigned threads = 1;
  std::string ehlo = "blast.test";
  std::string run;
  std::optional<address_pattern> from, to;
  std::vector<body_variant> bodies;
  std::string body_text;            // shared lines every body is a prefix of
  std::string date;                 // Date: header value, fixed for the run
};

// Connection-level failures, by kind (tools/README.md lists them).
enum class error_kind : std::uint8_t {
  refused, reset, timeout, unreachable, no_local_port, connect_other, peer_closed,
  greeting_rejected, hello_rejected, service_closing, protocol_error, reply_unexpected,
  no_pipelining, tls, aborted, count_
};
std::string_view describe(error_kind kind) noexcept;

// Live counters (single writer: the shard; the reporter reads them once a second).
struct blast_counters {
  loadkit::counter sessions_started;
  loadkit::counter sessions_done;     // ended with QUIT / 221
  loadkit::counter sessions_failed;   // ended by any error kind
  loadkit::counter messages_started;
  loadkit::counter messages_accepted;
  loadkit::counter messages_tempfail;
  loadkit::counter messages_permfail;
  loadkit::counter messages_no_recipients;
  loadkit::counter messages_bdat;     // sent with BDAT (--bdat and the server offers CHUNKING)
  loadkit::counter recipients_accepted;
  loadkit::counter recipients_tempfail;
  loadkit::counter recipients_permfail;
  loadkit::counter body_bytes;        // message octets handed to the kernel (headers + body)
  loadkit::counter open;              // gauge: sessions open now (written as add(+/-))
  loadkit::counter tls_handshakes;    // completed
  loadkit::counter tls_resumed;       // ... of which resumed a session
  loadkit::counter tls_failures;      // handshakes that failed (also counted in errors.tls)
  loadkit::counter bdat_fallbacks;    // --bdat, but the server did not offer CHUNKING
  std::array<loadkit::counter, static_cast<std::size_t>(error_kind::count_)> errors;
};

// Read after join().
struct blast_results {
  loadkit::histogram connect;  // connect issued -> greeting received
  loadkit::histogram ehlo;     // EHLO sent -> EHLO reply complete (ready)
  loadkit::histogram data;     // end of data sent -> its reply
  loadkit::histogram message;  // message start (intended start under --rate) -> its reply
  loadkit::histogram session;  // connect issued -> connection closed
  loadkit::histogram tls;      // ClientHello handed out -> handshake complete
  std::array<std::uint64_t, 600> rcpt_codes{};
  std::array<std::uint64_t, 600> data_codes{};  // reply to end of data (or MAIL when it failed)
  std::uint64_t late_starts = 0;  // --rate: messages started after their intended time + 1 ms
};

// State shared by all shards (read-mostly; two counters written per session / message).
struct blast_shared {
  std::atomic<std::int64_t> sessions_left{0};  // budget; meaningless when unbounded
  std::atomic<std::uint64_t> next_id{0};
  std::atomic<bool> stop_starting{false};      // --duration reached
  std::atomic<unsigned> shards_finished{0};
  std::uint64_t start_ns = 0;
};

struct connection;

class blast_shard final : public shard::completion_handler {
 public:
  blast_shard(const blast_config& config, blast_shared& shared, unsigned id);
  ~blast_shard();

  core::result<void> start(shard::shard& owner) noexcept;
  void stop() noexcept;
  void on_completion(shard::shard& owner, const io::completion& done) noexcept override;

  const blast_counters& counters() const noexcept { return _counters; }
  const blast_results& results() const noexcept { return _results; }

 private:
  friend struct connection;
  void pump() noexcept;
  bool take_session() noexcept;
  connection* open_session() noexcept;  // nullptr when it ended at once (counted)
  void pump_once() noexcept;
  void on_connect(connection& c, const io::completion& done) noexcept;
  void on_recv(connection& c, const io::completion& done) noexcept;
  void on_send(connection& c, const io::completion& done) noexcept;
  bool feed_plaintext(connection& c, std::string_view chunk) noexcept;  // false: c ended
  bool feed_tls(connection& c, std::string_view chunk) noexcept;        // false: c ended
  void start_tls(connection& c) noexcept;
  void encrypt_pending(connection& c) noexcept;
  void drain_events(connection& c) noexcept;
  void on_ready(connection& c) noexcept;
  void next_step(connection& c, std::uint64_t now_ns) noexcept;
  bool use_bdat(const connection& c) const noexcept;
  void prepare_bdat(connection& c) noexcept;
  void feed_scripted(connection& c, std::string_view& chunk) noexcept;
  void on_scripted_reply(connection& c, const smtp::parsed_reply& reply) noexcept;
  void start_message(connection& c, std::uint64_t intended_ns) noexcept;
  void on_recipient_result(connection& c, const smtp::client_event& e) noexcept;
  void on_message_result(connection& c, const smtp::client_event& e) noexcept;
  void on_closed(connection& c, const smtp::client_event& e) noexcept;
  void flush(connection& c) noexcept;
  void submit_send(connection& c) noexcept;
  void arm_recv(connection& c) noexcept;
  void fail(connection& c, error_kind kind) noexcept;
  void finish(connection& c) noexcept;
  void check_finished() noexcept;
  std::uint64_t due_messages(std::uint64_t now_ns) const noexcept;
  std::uint64_t intended_ns(std::uint64_t k) const noexcept;
  static void on_tick(core::timer_node& node) noexcept;
  static void on_connection_timeout(core::timer_node& node) noexcept;

  const blast_config& _config;
  blast_shared& _shared;
  const unsigned _id;
  std::uint32_t _concurrency = 0;  // this shard's share
  double _rate = 0;                // this shard's share of --rate
  shard::shard* _shard = nullptr;
  std::unique_ptr<io::buffer_ring> _buffers;
  loadkit::object_pool<connection> _connections;
  std::vector<std::uint64_t> _idle;  // generation << 32 | slot: ready, waiting for due work
  std::vector<std::uint64_t> _recv_retry;  // multishot recv ended with ENOBUFS
  std::vector<std::uint64_t> _swap;
  std::uint64_t _scheduled = 0;  // --rate: messages of our schedule handed out so far
  std::uint32_t _connecting_for_due = 0;  // sessions opened for due messages, not ready yet
  std::uint32_t _next_target = 0;
  loadkit::owned_timer<blast_shard> _tick{&blast_shard::on_tick};
  bool _pumping = false;
  loadkit::random _random;
  blast_counters _counters;
  blast_results _results;
  bool _stopping = false;
  bool _finished = false;
  io::op_kind _kind_connect = 0, _kind_recv = 0, _kind_send = 0, _kind_misc = 0;
  tls::client_session_cache _tls_cache{64};  // per shard: the targets' latest tickets
};

// Builds the body variants (shared text, tails, checksums) from the size distribution.
void prepare_bodies(blast_config& config, const std::vector<loadkit::size_choice>& sizes);

// Renders one message's header block (From, To, Subject, Date, Message-ID, X-Blast-Id,
// X-Blast-Checksum, empty line) into out; returns its length. No allocation (per message).
std::size_t render_header(const blast_config& config, std::uint64_t id, std::string_view from,
                          std::string_view first_recipient, const body_variant& body, char* out,
                          std::size_t out_bytes_max) noexcept;

}  // namespace ringmta::blast
