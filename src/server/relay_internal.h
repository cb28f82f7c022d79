// Internals of server::relay shared by relay.cc (the owner role: queues, connections,
// deliveries) and relay_home.cc (the home role: routing, outcomes, spool marks, DSNs).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "known_site.h"
#include "relay_tables.h"
#include "ringmta/core/timer_wheel.h"
#include "ringmta/queue/dsn.h"
#include "ringmta/server/relay.h"
#include "ringmta/shard/host.h"
#include "ringmta/shard/typed_message.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/store.h"

namespace ringmta::server {

// What the home learned about a recipient and keeps for its DSN.
struct dsn_note {
  std::uint16_t index = 0;
  queue::dsn_action action = queue::dsn_action::failed;
  queue::status_code status;
  std::string remote;  // host name only
  std::string diagnostic;
  bool diagnostic_from_server = false;
  std::int64_t last_attempt_seconds = 0;
  std::int64_t retry_until_seconds = 0;
};

// Where a queued message's envelope is (docs/notes.md, "Envelopes read back from the spool"):
// in memory (resident), only in the spool's commit record (evicted: the message waits for a
// retry and needs nothing of it until then), or being read back by its home (reading).
enum class envelope_state : std::uint8_t { evicted, reading, resident };

// The envelope and where the body lies in the spool, packed into one allocation while the
// message is resident. A queued message keeps only this, not a spool::envelope with its vector
// and strings (docs/notes.md, "Backlog at scale"); a delivery, a log record, a DSN or a listing
// unpacks what it needs. Immutable while resident: owners on other shards unpack it too.
// The encoding is the relay's own, in memory only (the spool's on-disk one is unchanged):
// varint numbers and lengths, the envelope's flags in one byte, and only what is read back.
// Not packed: the id and the arrival second (spooled_message has them: the caller passes them
// back), client_address and helo (the spool keeps them; nothing that unpacks reads them).
// A typical queued message (one recipient, ~20-byte addresses, one slice) takes ~54 bytes:
// one 56-byte allocation instead of the spool encoding's ~121 (a 128-byte one).
// Only the home changes the state (pack, evict, reading); another shard unpacks only under a
// `pin`, and the home evicts only an unpinned message: one atomic word holds the bytes' address
// and the pin count (its low 3 bits; the allocation is 8-aligned), so a pin and an eviction
// can never both succeed. Without a pin (evicted, reading, or 7 pins) the other shard asks the
// home (relay_envelopes.cc).
class packed_message {
 public:
  packed_message() = default;
  ~packed_message() { release(); }
  packed_message(const packed_message&) = delete;
  // The slab resets a freed message with this: no other shard holds it then (no pins).
  packed_message& operator=(packed_message&& other) noexcept;

  // Home: → resident.
  void pack(const spool::envelope& envelope, std::span<const spool::body_slice> body);
  // Home: resident and unpinned → evicted (the bytes freed). False: not resident, or pinned.
  bool evict() noexcept;
  void set_reading() noexcept;  // home: evicted → reading
  void read_failed() noexcept;  // home: reading → evicted
  envelope_state state() const noexcept;

  // A hold on a resident message's bytes; empty when there were none to hold.
  class pin {
   public:
    explicit pin(const packed_message& packed) noexcept;
    ~pin();
    pin(const pin&) = delete;
    pin& operator=(const pin&) = delete;
    explicit operator bool() const noexcept { return _packed != nullptr; }

   private:
    const packed_message* _packed = nullptr;
  };

  // Resident only (the home, or another shard under a pin). Every field as packed;
  // client_address and helo empty.
  spool::envelope envelope(spool::message_id id, std::int64_t received_seconds) const;
  std::vector<spool::body_slice> body() const;
  std::size_t bytes() const;  // the allocation's size (0: not resident)

 private:
  static constexpr std::uintptr_t pin_mask = 7;
  static constexpr std::uintptr_t reading_word = 1;  // no address: evicted (0) or reading (1)
  const char* data() const noexcept;
  const char* decode(spool::envelope& out) const;  // all but id and arrival; returns the end
  void release() noexcept;  // frees the bytes if resident (no pins)
  // Self-delimiting bytes (the counts say where they end) | pins; or an address-less state.
  mutable std::atomic<std::uintptr_t> _word{0};
};

// A queued message as every shard sees it: immutable after the home built it, except the
// home-only fields. Freed by the home once every recipient is final.
// One is kept per queued message, so its size is memory per message (docs/notes.md, "Backlog
// at scale"): it must stay within 32 bytes (a slot of the home's slab, relay_tables.h; 40
// until issue 15's session 11). Packed in two words, each field within its bound:
// - received: when it was answered 250 (ms, 43 bits signed: ±139 years around 1970; recovered:
//   the envelope's second), and the envelope's arrival second (the scheduler's job and the DSN
//   have it, exact) as a lag behind it (21 bits signed: ±12 days; see set_received);
// - body_bytes < 2^40: a message's segments span < 64 (store.cc's touch) of at most 16 GiB
//   (spool.segment_size); home < 2^8 (a message id has 8 shard bits, message_id.h); then
//   recipients_open ≤ spool::envelope_recipients_max (16 bits).
struct spooled_message {
  spool::message_id id = 0;
  packed_message packed;  // envelope and body slices, while resident
  std::int64_t received_ms_bits : 43 = 0;
  std::int64_t received_lag_seconds : 21 = 0;
  std::uint64_t body_bytes : 40 = 0;
  std::uint64_t home : 8 = 0;  // the shard (add_message asserts it fits)
  // Home only, and written while other shards read the fields above: its own memory location
  // (not a bit-field), in the bytes the bit-fields leave (C++20 [intro.memory]).
  std::uint16_t recipients_open = 0;

  void set_received(std::int64_t ms, std::int64_t envelope_seconds) noexcept;
  std::int64_t received_ms() const noexcept { return received_ms_bits; }
  std::int64_t received_seconds() const noexcept {
    return received_ms() / 1000 - received_lag_seconds;
  }
  std::uint64_t body_size() const noexcept { return body_bytes; }  // a value for T&& callees
  // Resident only (see packed_message).
  spool::envelope envelope() const { return packed.envelope(id, received_seconds()); }
  std::vector<spool::body_slice> body() const { return packed.body(); }
  bool resident() const noexcept { return packed.state() == envelope_state::resident; }
};
static_assert(sizeof(spooled_message) <= 32, "bytes per queued message: see the comment");
static_assert(offsetof(spooled_message, recipients_open) == 30);
inline constexpr std::uint64_t spooled_body_bytes_limit = std::uint64_t{1} << 40;
inline constexpr std::int64_t spooled_lag_seconds_max = (std::int64_t{1} << 20) - 1;

// The scheduler's key of a message's jobs (queue::message_key): its address. A job keeps its
// message alive: the home frees a message once every recipient is final, and an owner reports
// a recipient final only after its job left the scheduler (relay.cc, job_left).
// The pointer form never reads the message: an operator action's may point at a freed one.
inline queue::message_key message_key_of(const spooled_message* message) noexcept {
  return reinterpret_cast<std::uintptr_t>(message);
}
inline queue::message_key message_key_of(const spooled_message& message) noexcept {
  return message_key_of(&message);
}
// The message of a job the scheduler holds (or of an event it just gave).
inline spooled_message& message_of(queue::message_key key) noexcept {
  RINGMTA_ASSERT(key != 0);
  return *reinterpret_cast<spooled_message*>(static_cast<std::uintptr_t>(key));
}

// Home → owner: some recipients of a message for one destination.
struct routed_job {
  spooled_message* message = nullptr;
  std::string destination;
  std::vector<std::uint16_t> recipients;
  std::uint16_t attempts = 0;
  std::int64_t not_before_ms = 0;
  // spool::message_flag_held / _bounce: recovered operator actions; _deleted (and the others):
  // an action met while waiting for the site (relay_site.cc amend_resolving)
  std::uint8_t flags = 0;
  // Set by the destination's owner once its MX hosts are known (relay_site.cc): the job goes
  // to the site's owner and joins the site there. Empty: not rolled up (yet).
  std::string site;
  // Set by the destination's owner for a job that is not rolled up (a relay host or route, or
  // rollup turned off, by a reload) while its domain's queue may still be on the site's owner:
  // queued there under the domain, without joining the site (relay_site.cc roll_up).
  bool to_queue_holder = false;
  // Set by the destination's owner while its domain's MX site changed at a relearn and the old
  // site's owner may still hold the domain's queue: the job goes there first, and is queued
  // there or sent on to the new site (relay_site.cc take_via_old_site). Null: no change.
  struct site_change {
    std::string from, to;  // site names, without the egress source
  };
  std::unique_ptr<site_change> via_old_site;
  // An operator's bounce that reached the job while it waited for its site (amend_resolving),
  // or a recovered bounce's journaled reason: it travels with the job to whichever shard
  // queues it (queue_job).
  std::string bounce_reason;
};

// What an operator asked of one message (relay_actions.cc).
enum class message_op : std::uint8_t { hold, release, remove, retry, bounce };

// Home → owner: apply an operator action to the message's jobs at one destination. The
// pointer is only the jobs' key there: the owner may have reported every job already and the
// home freed the message, so the owner reads through it only once a job has the key, and acts
// only when that message has the id (the address may be a newer message's).
struct message_action_job {
  spool::message_id id = 0;
  const spooled_message* message = nullptr;
  std::string destination;
  message_op op = message_op::hold;
  std::string reason;  // bounce: for the DSN and the log
};

// deleted: an operator deleted the message (no DSN, like postsuper -d).
enum class outcome_kind : std::uint8_t { delivered, deferred, bounced, delayed, deleted };

struct recipient_report {
  std::uint16_t index = 0;
  outcome_kind kind = outcome_kind::deferred;
  std::uint16_t attempts = 0;
  std::int64_t next_attempt_ms = 0;  // deferred: when it will be tried again
  std::uint16_t reply_code = 0;
  queue::status_code status;
  std::string text;    // the reply (or local reason), for logs and DSNs
  std::string remote;  // "mx.example.com [192.0.2.1]:25" when a server was reached
  // How the delivery's connection was protected (empty when no session carried it).
  std::string tls;         // "TLSv1.3", or "none" for plaintext
  std::string tls_cipher;  // "TLS_AES_256_GCM_SHA384"
  std::uint16_t tls_bits = 0;
  bool tls_verified = false;  // chain and MX host name verified
  bool tls_resumed = false;
  std::string tls_note;  // plaintext: why (no STARTTLS, refused, handshake failed: ...)
  // For the log record: the host name and address apart, the outbound session (connection)
  // and how long this attempt took (-1: no delivery attempt of its own, e.g. a destination
  // that could not be reached at all).
  std::string mx;            // "mx.example.com": also the DSN's Remote-MTA (RFC 3464 §2.3.5)
  std::string ip;            // "192.0.2.1:25"
  std::uint64_t session = 0;
  std::string source;        // the egress source ([[source]] name) it left from, if any
  std::int64_t attempt_ms = -1;
  bool from_server = false;  // `text` is a reply a server sent (else our own reason)
  bool remote_dsn = false;   // the server offered DSN: the parameters went on with the message
};

// Owner → home: outcomes of one delivery (or one scheduler event).
struct outcome_batch {
  spooled_message* message = nullptr;
  std::vector<recipient_report> reports;
};

// Owner → home: a delivery (or a queue listing) needs a message whose envelope is not resident
// (relay_envelopes.cc). Home → owner: the same object back with the envelope, or the error.
// By flight slot and job: a slot that carries another job by then is not the one that asked.
struct envelope_request {
  spooled_message* message = nullptr;
  spool::message_id id = 0;
  std::uint32_t from = 0;    // the owner's shard
  std::uint32_t flight = 0;  // its slot there
  std::uint64_t job = 0;     // job_key of the flight's job
  bool listing = false;      // nobody waits: make it resident for the listing asked again
  int error = 0;             // the answer: 0, or why the envelope could not be read
  spool::envelope envelope;
  std::vector<spool::body_slice> body;
};

// An operator action (relay_actions.cc) waiting for the envelope: its recipients say which
// destinations to send it to. It was journaled already.
struct pending_action {
  message_op op = message_op::hold;
  std::string reason;
  std::string by;
  std::uint64_t ticket = 0;  // its journal record's (0: not journaled: retry)
};

// What waits at the home for an evicted message's envelope, served in arrival order.
using envelope_waiter = std::variant<std::unique_ptr<envelope_request>,
                                     std::unique_ptr<outcome_batch>, pending_action>;

// Why a commit record is read: the envelope of an evicted message, for its waiters; or a
// queued message found at start-up, to be routed (relay_home.cc, recover), its waiters then
// being operator actions that named it before it was routed.
enum class read_purpose : std::uint8_t { envelope, recovery };

// One read of a message's commit record through the ring, shared by every waiter.
struct envelope_read {
  spool::message_id id = 0;
  read_purpose purpose = read_purpose::envelope;
  // recovery: the operator flags (held, bounce) its jobs carry, as they were before the first
  // action that waits here was journaled (that action, with a bounce's reason, is sent after
  // the routing, as for a routed message). Unset: the spool's flags when routed.
  std::optional<std::uint8_t> flags;
  spool::commit_location where;
  std::string record;
  std::vector<envelope_waiter> waiters;
};

inline std::uint64_t job_key(const queue::job_id& id) noexcept {
  return std::uint64_t{id.slot} << 32 | id.generation;
}

// A delivery on the wire (owner side); the storage keeps the engine's envelope alive.
// A delivery slot: free → (reading →) (converting →) delivering → free. reading: the message's
// envelope is being read back from the spool by its home (relay_envelopes.cc); converting: the
// body is with the downgrade worker (relay_downgrade.cc). Meanwhile the connection waits,
// reserved for this job.
enum class flight_phase : std::uint8_t { free, reading, converting, delivering };

struct in_flight {
  flight_phase phase = flight_phase::free;
  queue::job_view job;  // job.last_error must not be read: it points into the scheduler
  spooled_message* message = nullptr;
  std::vector<spool::body_slice> body;       // unpacked from the message for the delivery
  std::vector<std::uint16_t> indices;        // envelope indices, in the order sent
  std::vector<recipient_report> results;     // by position in `indices`
  outbound::envelope_storage storage;
  std::uint64_t session = 0;                 // the connection's log session id
  std::int64_t started_ms = 0;
  outbound::connection_handle connection{};
  std::uint64_t cookie = 0;                  // the connection's (destination cookie)
  // A 7-bit conversion of the body (a memfd the flight owns until it ends), and the envelope
  // that goes with it (body type 7bit, its size).
  spool::body_slice converted;
  smtp::client_envelope converted_envelope;
};

// The original message of a DSN being read. Its outcomes' marks wait for the read: a final
// mark could let the spool reclaim the segment being read. The message is found again by id
// afterwards: a failed recipient's DSN keeps it open (that recipient's final outcome is among
// the waiting ones), but a delay notice's deferred recipients may be finished meanwhile.
struct dsn_original_read {
  spool::message_id id = 0;
  std::uint64_t body_bytes = 0;
  spool::envelope envelope;  // the original's
  std::vector<dsn_note> notes;
  std::vector<queue::dsn_recipient> recipients;  // what the DSN reports (views into the above)
  std::unique_ptr<outcome_batch> outcomes;
  std::string bytes;                  // its first bytes, as many as the DSN needs
  std::uint64_t valid = 0;            // bytes read up to the first failed or short read
  std::vector<std::uint64_t> starts;  // where each read begins in `bytes` (by read index)
  std::uint32_t reads_in_flight = 0;
};

// A DSN (RFC 3464) on its way into the spool: the original's first bytes are read through the
// ring (its reading state, dsn_reading below), then the DSN is built and appended (dsns) and
// committed (dsn_tickets). The original's outcomes wait with it: a bounced recipient is
// marked final only once its DSN is durable (RFC 5321 §6.1: a message is delivered or its
// sender told), so a DSN the spool refuses, or one lost to a crash before its commit is
// durable, is tried again (dsn_retry) or, after a restart, the bounce happens again.
struct pending_dsn {
  spool::message_handle handle{};
  spool::message_id id = 0;
  spool::envelope envelope;
  std::string bytes;
  std::vector<spool::body_slice> body;  // where the spool put it (from commit)
  std::size_t appended = 0;
  std::unique_ptr<dsn_original_read> original;  // its outcomes are applied once this is durable
};

struct relay::state {
  state(relay& self, const relay_config& config, shard::host& owner, shard::mesh& peers,
        spool::store& store, relay_metrics& metrics, admin::log_buffer& log);

  relay& self;
  const relay_config& config;  // as started: shards, host name (what a reload cannot change)
  // The latest reload's routes, relayhost, port, queue policy: for deliveries started from now.
  std::shared_ptr<const relay_config> live;
  shard::host& owner;  // IO, timers, the loop's clock
  shard::mesh& peers;  // this shard's id, the other shards
  spool::store& store;
  relay_metrics& metrics;
  admin::log_buffer& log;
  static queue::scheduler_config shaped(queue::scheduler_config config,
                                        std::uint32_t outbound_slots, state& self);
  queue::scheduler scheduler;
  outbound::dns_client dns;
  outbound::outbound out;
  bool shutting_down = false;

  // home role (relay_home.cc)
  // The queued messages: in a slab (stable addresses: jobs on other shards point to them),
  // found by id through a table of 4-byte slots (relay_tables.h).
  slab<spooled_message> messages;
  id_index<spooled_message> message_ids{messages};
  spooled_message* find_message(spool::message_id id) noexcept;
  void forget_message(const spooled_message& message) noexcept;  // every recipient final
  std::vector<std::unique_ptr<pending_dsn>> dsns;               // being appended / committed
  std::unordered_map<std::uint64_t, std::unique_ptr<pending_dsn>> dsn_tickets;
  void route(const spool::envelope& envelope, std::span<const spool::body_slice> body,
             std::string_view pool = {});  // a DSN: the default pool
  // Start-up: the queued ids (ascending) go back to their destinations' queues, each routed
  // when its commit record, read through the ring (never a pread on the shard), arrives; a
  // bounded number of reads in flight, so the shard greets and delivers while it recovers.
  // An operator action on one not routed yet reads it at once and waits (recover_one).
  void recover() noexcept;
  void recover_more() noexcept;  // reads up to the bound; queue_recovered once all are done
  bool recover_one(spool::message_id id) noexcept;  // true: its read is under way
  bool read_recovered(spool::message_id id) noexcept;
  void log_read_failed(spool::message_id id, std::string_view error) noexcept;
  void on_recovery_read(envelope_read& read, std::int32_t result) noexcept;
  void route_recovered(const envelope_read& read, spool::stored_message& stored,
                       const spool::message_entry& entry) noexcept;
  std::vector<spool::message_id> recovering;
  std::size_t recovering_next = 0;
  std::uint32_t recovery_reads = 0;  // in flight (recover_one's included)
  std::int64_t recovering_since_ms = 0;
  void route_recipients(spooled_message& message, const spool::envelope& envelope,
                        const spool::message_entry* recovered, std::uint8_t flags = 0,
                        std::string_view pool = {}) noexcept;
  // Egress (egress.h): the queue name for a destination, with the source its pool picks.
  bool has_pools() const noexcept { return live->egress && !live->egress->empty(); }
  egress_picker picker;
  const egress_table* picker_table = nullptr;  // the table `picker` was reset for
  std::string egress_name(const spooled_message& message, std::string_view sender,
                          std::string destination, std::string_view pool) noexcept;
  void bind_source(std::string_view name, outbound::route& target) const noexcept;
  void on_outcomes(std::unique_ptr<outcome_batch> batch) noexcept;
  void apply_outcomes(spooled_message& message, const outcome_batch& batch) noexcept;
  // Recipient-state marks the spool's journal buffer had no room for (ENOBUFS: the disk is
  // behind, spool.journal_buffer_size). Dropping one would leave the message queued in the
  // spool's index — its segment pinned, the recipient delivered again after a restart — so
  // they wait here, in order, and go to the spool as its journal drains (on_marks_durable).
  struct waiting_mark {
    spool::message_id id = 0;
    std::uint16_t recipient = 0;
    spool::recipient_status status;
  };
  std::deque<waiting_mark> marks_waiting;
  void mark_recipient(spool::message_id id, std::uint16_t recipient,
                      spool::recipient_status status) noexcept;
  void on_marks_durable() noexcept;  // journal room again: the waiting marks go first
  // Logs the outcome; what a DSN must report of it goes to `notes`.
  void record(spooled_message& message, const spool::envelope& envelope,
              const recipient_report& report, std::vector<dsn_note>& notes) noexcept;
  // DSNs: the original read through the ring (never a blocking pread on the shard), then built.
  std::unordered_map<std::uint32_t, std::unique_ptr<dsn_original_read>> dsn_reading;
  std::uint32_t next_dsn_read = 0;
  io::op_kind dsn_read_kind = io::op_kind_invalid;
  // The completions of one kind of read the state queued, handed to a member of it.
  template <void (state::*Done)(const io::completion&) noexcept>
  struct reads_done final : shard::host_handler {
    explicit reads_done(state& owner_state) : s(owner_state) {}
    void on_completion(const io::completion& done) noexcept override { (s.*Done)(done); }
    state& s;
  };
  void on_dsn_read_done(const io::completion& done) noexcept;
  reads_done<&state::on_dsn_read_done> dsn_reads{*this};
  void read_dsn_original(spooled_message& message, const spool::envelope& envelope,
                         std::vector<dsn_note> notes,
                         std::unique_ptr<outcome_batch> outcomes) noexcept;
  void on_dsn_original_read(std::uint32_t key, std::uint32_t read, std::int32_t result) noexcept;
  void queue_dsn(std::unique_ptr<dsn_original_read> read) noexcept;
  void continue_dsns() noexcept;
  // A DSN the spool did not take (no handle now, an append or commit error, its commit
  // failed): built again from its original a second later, its outcomes still waiting.
  std::deque<std::unique_ptr<dsn_original_read>> dsn_retry;
  void retry_dsn_later(std::unique_ptr<dsn_original_read> read) noexcept;
  void retry_dsns() noexcept;
  core::member_timer<state, &state::retry_dsns> dsn_retry_timer{*this};
  void apply_original_outcomes(const dsn_original_read& read) noexcept;
  bool on_committed(std::uint64_t ticket, int error) noexcept;
  // `resident`: keep the envelope packed (a new message goes out now; a recovered one waits).
  spooled_message& add_message(const spool::envelope& envelope,
                               std::span<const spool::body_slice> body, std::uint64_t body_bytes,
                               std::int64_t received_ms, bool resident = true) noexcept;
  // Envelopes read back from the spool (relay_envelopes.cc): by read key, and the key of a
  // message's read. Keys whose read the ring could not queue wait for the next loop turn.
  std::unordered_map<std::uint32_t, std::unique_ptr<envelope_read>> envelope_reads;
  std::unordered_map<spool::message_id, std::uint32_t> envelope_read_keys;
  std::vector<std::uint32_t> envelope_reads_unqueued;
  std::uint32_t next_envelope_read = 0;
  io::op_kind envelope_read_kind = io::op_kind_invalid;
  void on_envelope_read_done(const io::completion& done) noexcept;
  reads_done<&state::on_envelope_read_done> envelope_reader_handler{*this};
  void pack(spooled_message& message, const spool::envelope& envelope,
            std::span<const spool::body_slice> body) noexcept;
  void evict(spooled_message& message) noexcept;
  // Packed messages, oldest first: one still resident a while after it was packed waits (a
  // backoff, a connection slot) and is evicted (evict_aged), though no attempt reported.
  struct packed_at {
    spool::message_id id = 0;
    std::uint64_t ms = 0;  // the shard's clock
  };
  std::deque<packed_at> packed_order;
  void evict_aged() noexcept;
  core::member_timer<state, &state::evict_aged> eviction_timer{*this};
  void wait_for_envelope(spooled_message& message, envelope_waiter waiter) noexcept;
  // One read of `id`'s commit record (nullptr and `error`: the spool has none to read).
  envelope_read* read_commit(spool::message_id id, read_purpose purpose, int& error) noexcept;
  void join_read(spool::message_id id, envelope_waiter waiter) noexcept;  // one in flight
  core::result<spool::stored_message> parse_read(const envelope_read& read,
                                                 std::int32_t result) const;
  bool queue_envelope_read(std::uint32_t key) noexcept;
  void queue_envelope_reads() noexcept;  // those the ring had no room for
  void on_envelope_read(std::uint32_t key, std::int32_t result) noexcept;
  void serve(envelope_waiter& waiter, const spool::stored_message* stored, int error) noexcept;
  void serve_request(std::unique_ptr<envelope_request> request) noexcept;
  void record_outcomes(std::unique_ptr<outcome_batch> batch) noexcept;
  void outcomes_unrecorded(const outcome_batch& batch) noexcept;
  // relay_actions.cc: the action sent to the destinations of the message's open recipients.
  std::size_t send_actions(spool::message_id id, const spool::envelope& envelope,
                           const pending_action& action) noexcept;

  // owner role (relay.cc)
  // A scheduler job's message key is its message's address (message_key_of): no table of the
  // messages with jobs here (it was 16 bytes per queued message, issue 15).
  std::vector<std::unique_ptr<in_flight>> flights;
  std::vector<std::uint32_t> free_flights;
  std::unordered_map<std::uint64_t, std::string> connection_names;  // by connection cookie
  // By connection cookie: its session id (session_id_base) and the configuration it was opened
  // under. A reload retires every connection opened before it at its next job boundary: mail
  // handed out after a reload goes out as the reload says (its TLS policy, relay host and
  // credentials, source, EHLO name), as after Postfix's reload.
  struct opened_connection {
    std::uint64_t session = 0;
    std::uint64_t configuration = 0;  // `reloads` when it was opened
  };
  std::unordered_map<std::uint64_t, opened_connection> opened_connections;
  std::uint64_t reloads = 0;  // relay::update calls
  bool opened_before_reload(std::uint64_t cookie) const noexcept;
  std::uint64_t next_session = 0;  // outbound session ids for log records (session_id_base)
  // Ready connections with nothing to send, by destination: reused when the destination gets
  // work (the outbound closes them after its idle timeout). `woken` lists destinations that
  // received jobs since the last poll.
  struct idle_connection {
    outbound::connection_handle handle;
    std::uint64_t cookie = 0;
  };
  std::unordered_map<std::string, std::vector<idle_connection>> idle;
  std::vector<std::string> woken;
  bool serve_idle(const std::string& destination, std::int64_t now_ms) noexcept;
  void drop_idle(const std::string& destination, std::uint64_t cookie) noexcept;
  std::unordered_map<std::string, recipient_report> permanent_failures;  // by destination
  std::vector<queue::connect_request> requests;
  void accept_job(std::unique_ptr<routed_job> job) noexcept;
  void queue_job(std::unique_ptr<routed_job> job) noexcept;  // into this shard's scheduler
  // MX site rollup (relay_site.cc). On the domain's owner: domain → site (learned by an MX
  // lookup, bounded, relearned after an hour) and the jobs held while the lookup runs. On the
  // site's owner, the scheduler knows which destinations joined which site.
  std::unordered_map<std::string, known_site> sites;
  std::unordered_map<std::string, std::vector<std::unique_ptr<routed_job>>> resolving;
  std::unordered_map<std::uint64_t, std::string> lookups;  // lookup cookie → domain
  // Domains whose lookup waits for one of the site_lookups_max slots (oldest first): their
  // jobs are held in `resolving` meanwhile.
  struct waiting_site_lookup {
    std::string domain;
    std::int64_t since_ms = 0;  // wall clock when it began to wait
  };
  std::deque<waiting_site_lookup> site_lookups_waiting;
  std::uint64_t next_lookup = 0;
  void start_site_lookups() noexcept;
  // The domain's held jobs go to its known site, or are queued here when none is known.
  void release_held(const std::string& domain) noexcept;
  struct site_resolver final : outbound::lookup_handler {
    explicit site_resolver(state& owner_state) : s(owner_state) {}
    void on_lookup_done(std::uint64_t cookie, dns::mx_result& result) noexcept override;
    state& s;
  };
  site_resolver site_lookups{*this};
  bool roll_up(std::unique_ptr<routed_job>& job) noexcept;  // true: held or forwarded
  bool rolls_up(const std::string& domain) const;
  bool follow_site_queue(std::unique_ptr<routed_job>& job, const std::string& domain) noexcept;
  // An operator's action reaches the jobs of its message held in `resolving` (their flags,
  // a bounce's reason).
  void amend_resolving(const message_action_job& action) noexcept;
  bool queued_here(std::string_view destination) const noexcept;  // a scheduler queue here
  // At the site's owner a job joins the site, or is queued under its domain only (a domain
  // not rolled up whose queue the owner may hold: follow_site_queue).
  enum class at_site : bool { join, queue_only };
  void forward_to_site(std::unique_ptr<routed_job> job, const std::string& site,
                       at_site how) noexcept;
  // To the site's owner, or first to the old site's owner after a change (known_site.h).
  void send_to_site(std::unique_ptr<routed_job> job, const known_site& known,
                    at_site how) noexcept;
  void take_via_old_site(std::unique_ptr<routed_job> job) noexcept;
  struct old_queue_gone {
    std::string destination, old_site;
  };
  static void on_old_queue_gone_message(shard::mesh& target, std::vector<relay*>& shards,
                                        std::unique_ptr<old_queue_gone> gone) noexcept;
  void note_old_queue_gone(const old_queue_gone& gone) noexcept;
  void join_site(const routed_job& job, queue::destination_id destination) noexcept;
  shape site_shape(std::string_view site) const;
  void reshape_sites() noexcept;
  void release_own_way_members() noexcept;
  std::string idle_key(const std::string& destination) const;
  // A site connection may carry another member's job: its name follows the job.
  void follow_job(std::uint64_t cookie, const queue::job_view& job) noexcept;
  void poll() noexcept;
  core::member_timer<state, &state::poll> timer{*this};  // after poll: it names it
  void open(const queue::connect_request& request) noexcept;
  void start_delivery(outbound::connection_handle connection, std::uint64_t cookie,
                      const queue::job_view& job) noexcept;
  // The envelope unpacked (or read back): its engine envelope, then the downgrade or the wire.
  void continue_delivery(std::uint32_t slot, const spool::envelope& envelope) noexcept;
  // A flight's slot; nullopt: a queue listing (relay::jobs_json).
  void request_envelope(spooled_message& message, std::optional<std::uint32_t> slot) noexcept;
  void on_envelope_reply(std::unique_ptr<envelope_request> reply) noexcept;
  std::uint64_t session_of(std::uint64_t cookie) const noexcept;
  void hand_off(std::uint32_t slot, const smtp::client_envelope& envelope,
                std::span<const spool::body_slice> body) noexcept;
  // 8-bit message, next hop without 8BITMIME (relay_downgrade.cc): true when the worker took
  // the body and the delivery continues in on_downgraded.
  bool request_downgrade(std::uint32_t slot) noexcept;
  // Ends a delivery that never reached the server, every recipient with this reply.
  void fail_locally(std::uint32_t slot, const smtp::parsed_reply& reply,
                    outcome_kind kind) noexcept;
  void finish_delivery(std::uint32_t slot, const outbound::delivery_result& result) noexcept;
  // `why`: the destination-wide failure that produced the events (deferred jobs report it).
  void handle_event(const queue::job_event& event, const recipient_report* why) noexcept;
  void drain_events(const recipient_report* why) noexcept;
  void job_left() noexcept;  // a job of this shard's scheduler is gone (its metric)
  // Per-message operator actions (relay_actions.cc): the home's pending journal tickets
  // (-1: not yet durable, else the errno), and the owner's side.
  std::unordered_map<std::uint64_t, int> action_tickets;
  // Journaled actions waiting for their message's envelope: "pending" until sent to the
  // owners, so an answered action has reached the shards that carry it out, not only the
  // journal.
  std::set<std::uint64_t> actions_unsent;
  // Owner: an operator's bounce of a message's jobs at a destination, carried out at once;
  // the events it drains name `reason` (bounce_now sets it for their duration).
  struct operator_bounce {
    spool::message_id id = 0;
    std::string_view reason;
  };
  operator_bounce bouncing;
  void bounce_now(const std::string& destination, const spooled_message& message,
                  std::string_view reason, std::int64_t now_ms) noexcept;
  void apply_message_action(const message_action_job& job) noexcept;
  void send_message_action_to(unsigned shard, message_action_job job) noexcept;
  void send_message_action(const spooled_message& message, const std::string& destination,
                           message_op op, std::string_view reason) noexcept;
  void report(spooled_message* message, unsigned home,
              std::vector<recipient_report> reports) noexcept;
  void arm_timer(std::int64_t now_ms) noexcept;
  relay_route route_for(std::string_view destination) const;
  // Shaping (shaping.h): the table in use, and the MX hosts learned per destination (only
  // when the table has mx entries; bounded, cleared when full).
  std::shared_ptr<const shaping_table> shaping;
  std::unordered_map<std::string, std::vector<std::string>> mx_hosts;
  shape shape_of(std::string_view destination) const;
  shape base_shape_of(std::string_view destination) const;  // without reply-rule throttles
  bool connects_its_own_way(const std::string& domain) const;  // not rolled up into a site
  // Reply rules: throttles in force (by destination, until a time), and the rule matching a
  // reply from a destination's server.
  struct throttle {
    std::int64_t until_ms = 0;
    std::optional<std::uint32_t> connections_max;
    std::optional<double> messages_per_second_max;
  };
  std::unordered_map<std::string, throttle> throttles;
  // Suspensions the spool's journal kept across a restart (store::live_pauses), by destination,
  // until the destination's first job arrives here: the scheduler has no destination before it
  // (queue_job moves the pause into the scheduler then).
  std::unordered_map<std::string, std::int64_t> recovered_pauses;
  // The journal record of a suspension (limits nullptr) or of a throttle.
  static spool::destination_pause pause_of(const std::string& destination,
                                           std::int64_t until_ms, const throttle* limits);
  void throttle_by(const std::string& destination, const config::reply_rule_entry& rule,
                   std::int64_t until) noexcept;
  throttle add_throttle(const std::string& destination, throttle next,
                        std::int64_t now) noexcept;
  std::vector<queue::job_view> jobs_waiting_within(const std::string& destination,
                                                   std::int64_t now, std::int64_t until) const;
  void restore_pauses() noexcept;  // start-up: this shard's journaled pauses, to their owners
  void restore_pause(const spool::destination_pause& pause) noexcept;
  static void on_pause_message(shard::mesh& target, std::vector<relay*>& shards,
                               std::unique_ptr<spool::destination_pause> pause) noexcept;
  std::int64_t recovered_pause_until(const std::string& destination,
                                     std::int64_t now_ms) noexcept;
  // An operator's resume: ends the reply rules' pause and throttle of `destination` on every
  // shard (lift_rule_pauses here, on_lift_message on the others); true when this shard had one.
  bool lift_everywhere(const std::string& destination, std::int64_t now_ms) noexcept;
  bool lift_rule_pauses(const std::string& destination, std::int64_t now_ms) noexcept;
  static void on_lift_message(shard::mesh& target, std::vector<relay*>& shards,
                              std::unique_ptr<std::string> destination) noexcept;
  const config::reply_rule_entry* rule_for(const std::string& destination,
                                           std::string_view reply) const noexcept;
  void apply_rule(const std::string& destination, const config::reply_rule_entry& rule,
                  const recipient_report& why) noexcept;
  void apply_rule_to(const std::string& destination, const config::reply_rule_entry& rule,
                     const recipient_report& why) noexcept;
  // The other destinations of this one's MX site on this shard (none without a site).
  std::vector<std::string> site_members(const std::string& destination) const;
  void expire_throttles(std::int64_t now_ms) noexcept;
  std::string destination_name(queue::destination_id id) const;
  void learn_mx(const std::string& destination, outbound::connection_handle connection) noexcept;

  // both: cross-shard sends that found the target's queue full, retried every iteration
  // (a deque: each flush sends a queue's room from the front; a vector moved the whole rest)
  std::deque<std::pair<unsigned, shard::parcel>> backlog;
  void send(unsigned to, const shard::parcel& m) noexcept;
  // Typed cross-shard messages (shard/typed_message.h); `shards` finds the target's relay.
  static void on_job_message(shard::mesh& target, std::vector<relay*>& shards,
                             std::unique_ptr<routed_job> job) noexcept;
  static void on_outcome_message(shard::mesh& target, std::vector<relay*>& shards,
                                 std::unique_ptr<outcome_batch> batch) noexcept;
  static void on_message_action_message(shard::mesh& target, std::vector<relay*>& shards,
                                        std::unique_ptr<message_action_job> job) noexcept;
  static void on_envelope_request_message(shard::mesh& target, std::vector<relay*>& shards,
                                          std::unique_ptr<envelope_request> request) noexcept;
  static void on_envelope_reply_message(shard::mesh& target, std::vector<relay*>& shards,
                                        std::unique_ptr<envelope_request> reply) noexcept;
  void flush_backlog() noexcept;
  relay& peer(unsigned shard) const noexcept { return *(*config.shards)[shard]; }
};

// Destination of a recipient address: its domain, lowercase (RFC 5321 §2.4: domains are
// case-insensitive); <postmaster> without a domain goes to our own host name.
std::string destination_of(std::string_view address, std::string_view hostname);
// The shard that owns a destination.
unsigned owner_of(std::string_view destination, unsigned shards) noexcept;
// The failure as the scheduler and DSNs want it, from an SMTP reply.
recipient_report report_from(const smtp::parsed_reply& reply, const outbound::remote_host& remote,
                             std::uint16_t index, outcome_kind kind);
queue::failure failure_of(const recipient_report& report) noexcept;
// Copies a delivery's TLS outcome into its report (for the log record).
void note_tls(recipient_report& report, const outbound::tls_outcome& tls);
std::string json_escape(std::string_view text);

}  // namespace ringmta::server
