// ringmta-sink: an SMTP receiver for load tests. One sink_shard per shard of the runtime: it
// accepts on its own SO_REUSEPORT listening sockets, runs one smtp::server_session per
// connection, receives through a provided buffer ring (an idle connection holds no buffer),
// checks every message's X-Blast-Checksum as the body streams (loadkit::message_scanner) and
// counts what it saw. Faults (tempfail, permfail, disconnects, slow replies) are injected from a
// seeded generator per shard.
//
// Invariants: one recv and one send in flight per connection at most; received bytes are fed to
// the session only while no send is in flight (the session may compact its output buffer when
// it appends, which would move bytes the kernel is still reading); every provided buffer handed
// to us is recycled exactly once, stale completions included. Steady state allocates nothing:
// connection objects are pooled, sessions are re-emplaced in place.
// Never: blocks on the network (file writes of --save-dir are the one deliberate exception),
// or touches another shard's state (snapshots travel as shard messages).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "loadkit/counter.h"
#include "loadkit/id_tracker.h"
#include "loadkit/integrity.h"
#include "loadkit/object_pool.h"
#include "loadkit/options.h"
#include "loadkit/owned_timer.h"
#include "loadkit/random.h"
#include "ringmta/core/endpoint.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/io/buffer_ring.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/smtp/server_session.h"
#include "ringmta/tls/session.h"

namespace ringmta::sink {

struct sink_config {
  unsigned threads = 1;
  loadkit::fault_rates tempfail;
  loadkit::fault_rates permfail;
  double disconnect_rate = 0;        // per end-of-data: close instead of replying
  std::uint32_t reply_delay_ms = 0;  // at least, before every end-of-data reply
  std::uint32_t max_connections = 10000;  // total; each shard takes its share
  std::uint32_t idle_timeout_ms = 300000;  // RFC 5321 §4.5.3.2.7: 5 minutes
  std::uint64_t seed = 1;
  std::string save_dir;              // empty: do not save
  std::string hostname = "sink.test";
  std::uint32_t recv_buffers = 1024;      // per shard, power of two
  std::uint32_t recv_buffer_bytes = 16384;
  smtp::server_config server;        // extensions etc.; hostname view set from `hostname`
  // --tls-cert/--tls-key: STARTTLS offered on every listener; implicit TLS listeners (RFC
  // 8314) use server_implicit_tls (tls_active). Listener i is implicit if implicit_tls[i].
  std::shared_ptr<const tls::server_context> tls;
  smtp::server_config server_implicit_tls;
  std::vector<bool> implicit_tls;
};

// Counters of one shard (single writer: the shard; readers: anyone, any time).
struct sink_counters {
  loadkit::counter connections;          // accepted and served
  loadkit::counter connections_refused;  // over --max-connections: 421 and closed
  loadkit::counter connections_closed;
  loadkit::counter timeouts;
  loadkit::counter transactions;         // MAIL accepted
  loadkit::counter recipients;           // RCPT accepted
  loadkit::counter rcpt_tempfail;
  loadkit::counter rcpt_permfail;
  loadkit::counter messages;             // end of data reached (whatever the verdict)
  loadkit::counter accepted;             // end of data answered 250
  loadkit::counter data_tempfail;
  loadkit::counter data_permfail;
  loadkit::counter disconnects;          // injected
  loadkit::counter aborted;              // on_data_aborted (bare LF, too big, lost, ...)
  loadkit::counter message_bytes;        // unstuffed octets of received messages
  loadkit::counter wire_bytes;           // octets received on sockets
  loadkit::counter integrity_ok;
  loadkit::counter integrity_corrupt;
  loadkit::counter untagged;             // no checksum
  loadkit::counter id_malformed;
  loadkit::counter duplicates;           // within this shard (merging adds cross-shard ones)
  loadkit::counter saved;
  loadkit::counter save_errors;
  loadkit::counter enobufs;
  loadkit::counter tls_handshakes;
  loadkit::counter tls_resumed;
  loadkit::counter tls_failures;
  // First and last accepted message (monotonic ns; 0: none yet): the busy time msg/s is
  // measured over, not the sink's lifetime.
  loadkit::counter first_accept_ns;
  loadkit::counter last_accept_ns;
};

class sink_shard;

// One SMTP connection. Pooled: constructed once, then reset for each new connection.
struct connection final : smtp::server_handler {
  connection() noexcept;
  ~connection() override = default;

  sink_shard* owner = nullptr;
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  int fd = -1;
  std::optional<smtp::server_session> session;
  bool recv_armed = false;
  bool send_in_flight = false;
  bool drop = false;           // injected disconnect: close without replying
  bool scanning = false;       // a message body is being scanned
  std::unique_ptr<tls::session> tls;  // STARTTLS (after the 220 went out) or implicit TLS
  bool tls_handshaking = false;
  bool implicit_tls = false;
  std::byte* held = nullptr;   // unconsumed received bytes (a buffer we own)
  std::uint32_t held_bytes = 0;
  std::uint16_t held_buffer = 0;
  std::uint32_t send_bytes = 0;  // output bytes in flight
  smtp::verdict delayed = smtp::verdict::accept();
  loadkit::owned_timer<connection> idle_timer{&connection::on_idle_timer};
  loadkit::owned_timer<connection> delay_timer{&connection::on_delay_timer};
  loadkit::message_scanner scanner;
  // --save-dir only: the envelope and the unstuffed message, reused from message to message.
  std::string save_envelope;
  std::string save_message;
  // --save-dir only: who connected, and which connection of this shard it is (shaping tests
  // count messages per connection, concurrent connections and client addresses per source).
  std::string peer;
  std::uint64_t serial = 0;
  struct string_observer final : loadkit::scan_observer {
    std::string* out = nullptr;
    void on_message_bytes(std::string_view bytes) noexcept override { out->append(bytes); }
  } save_observer;

  // server_handler
  smtp::verdict on_mail_from(const smtp::mailbox& reverse_path,
                             const smtp::mail_parameters& parameters) noexcept override;
  smtp::verdict on_rcpt_to(const smtp::mailbox& forward_path,
                           const smtp::rcpt_parameters& parameters) noexcept override;
  smtp::verdict on_data_start() noexcept override;
  void on_body(std::string_view slice, smtp::body_form form) noexcept override;
  smtp::verdict on_data_end(const smtp::body_summary& summary) noexcept override;
  void on_data_aborted(smtp::abort_reason reason) noexcept override;

  static void on_idle_timer(core::timer_node& node) noexcept;
  static void on_delay_timer(core::timer_node& node) noexcept;
};

// A consistent copy of one shard's id tracker, filled on the shard's own thread on request.
struct snapshot_request {
  std::mutex mutex;
  std::vector<loadkit::id_tracker> trackers;  // one per shard
  unsigned remaining = 0;
};

class sink_shard final : public shard::completion_handler {
 public:
  sink_shard(const sink_config& config, unsigned id, std::vector<int> listen_fds);
  ~sink_shard();

  core::result<void> start(shard::shard& owner) noexcept;  // on the shard's thread
  void stop() noexcept;                                    // on the shard's thread
  void on_completion(shard::shard& owner, const io::completion& done) noexcept override;

  const sink_counters& counters() const noexcept { return _counters; }
  const loadkit::id_tracker& ids() const noexcept { return _ids; }  // after join() only
  // Start-up: room for the ids of --expect-ids, so a run does not grow the bitset.
  void reserve_ids(const loadkit::id_range& range) { _ids.reserve(range.run, range.last); }
  // Posted by the control thread: copies the id tracker into request->trackers[id].
  static void on_snapshot(shard::shard& target, const shard::message& m) noexcept;

 private:
  friend struct connection;
  void arm_accept(std::uint32_t listener) noexcept;
  void on_accept(const io::completion& done) noexcept;
  void on_recv(connection& c, const io::completion& done) noexcept;
  void on_send(connection& c, const io::completion& done) noexcept;
  void refuse(int fd) noexcept;
  void process(connection& c) noexcept;
  void process_tls(connection& c) noexcept;
  void feed_tls(connection& c) noexcept;
  bool start_tls(connection& c) noexcept;
  void arm_recv(connection& c) noexcept;
  void close(connection& c) noexcept;
  void retry_recvs() noexcept;
  void release_held(connection& c) noexcept;
  smtp::verdict decide_data_end(connection& c, const loadkit::scan_result& scan) noexcept;
  void save(connection& c, const loadkit::scan_result& scan) noexcept;
  static void on_retry_timer(core::timer_node& node) noexcept;

  const sink_config& _config;
  const unsigned _id;
  std::vector<int> _listen_fds;
  shard::shard* _shard = nullptr;
  std::unique_ptr<io::buffer_ring> _buffers;
  loadkit::object_pool<connection> _connections;
  std::vector<std::uint64_t> _recv_retry;  // generation << 32 | slot whose recv hit ENOBUFS
  std::vector<std::uint64_t> _retry_swap;
  loadkit::owned_timer<sink_shard> _retry_timer{&sink_shard::on_retry_timer};
  loadkit::random _random;
  loadkit::id_tracker _ids;
  sink_counters _counters;
  std::uint64_t _saved_sequence = 0;
  std::uint64_t _connection_serial = 0;
  std::uint32_t _open = 0;  // connections open on this shard now
  // With --save-dir: connections open now per client address (without port), saved with each
  // message as X-Sink-Concurrent-Client (site and source limits are per client).
  std::unordered_map<std::string, std::uint32_t> _open_by_client;
  bool _stopping = false;
  io::op_kind _kind_accept = 0, _kind_recv = 0, _kind_send = 0, _kind_misc = 0;
};

}  // namespace ringmta::sink
