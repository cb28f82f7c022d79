// Internal state of queue::scheduler (scheduler.h), shared by scheduler.cc (jobs, timing,
// connections) and scheduler_admin.cc (operator actions, inspection).
//
// Invariants: every live job is in exactly one of its destination's ready list, scheduled
// heap or in-flight list, and its `state` says which; counts match the containers; a
// destination is on the idle list exactly when it has no job, no connection and is not
// suspended; `wake_ms` is the time of the destination's valid entry in the wake heap
// (no_wakeup_ms: none). Heap entries that do not match are stale and skipped.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringmta/core/chunked_slab.h"
#include "ringmta/queue/scheduler.h"

namespace ringmta::queue {

inline constexpr std::uint32_t nil_slot = 0xffffffffu;

enum class job_state : std::uint8_t { free, ready, scheduled, in_flight, held };
// hold / remove: set on a job in flight by an operator action, applied when it is deferred.
enum job_flag : std::uint8_t {
  job_flag_delay_warned = 1,
  job_flag_bounce = 2,
  job_flag_hold = 4,
  job_flag_remove = 8,
};

// 48 bytes (was 56, 64): the next attempt, the interned error, the flags and the state share one
// word. Their limits are checked where the values enter: set_next_attempt_ms clamps to
// [0, next_attempt_ms_max] (year 2248; the spool's and the other timestamps' seconds end in
// 2106), error indices stay below job_error_limit (the constructor asserts error_texts_max).
// The destination slot and the record's generation share another: destination slots stay
// below destination_slots_max (add() refuses a new destination there even when forced; the
// constructor asserts destinations_max), and the generation is 8 bits: it only catches a
// stale job_id in job_at's assertion, which now misses one whose slot was reused a multiple
// of 256 times meanwhile. The list links stay 32 bits: jobs have no hard bound (recovery adds
// them forced, past jobs_max).
inline constexpr std::int64_t next_attempt_ms_max = (std::int64_t{1} << 43) - 1;
inline constexpr std::uint32_t job_error_limit = 1u << 13;
inline constexpr std::uint32_t destination_slots_max = 1u << 24;
inline constexpr std::uint32_t job_generation_mask = 0xff;

struct job_record {
  message_key message = 0;  // the embedder's (scheduler.h)
  std::uint64_t mask = 0;
  std::uint64_t next_attempt_bits : 43 = 0;  // ms; use next_attempt_ms()
  std::uint64_t error : 13 = 0;              // interned error text, 0: none
  std::uint64_t flags : 4 = 0;               // job_flag bits
  job_state state : 4 = job_state::free;
  std::uint32_t received_seconds = 0;   // epoch seconds (fits until 2106)
  std::uint32_t last_attempt_seconds = 0;  // 0: never attempted
  std::uint32_t prev = nil_slot;        // ready / in-flight / held list links; free: next free
  std::uint32_t next = nil_slot;
  std::uint32_t destination : 24 = 0;   // < destination_slots_max
  std::uint32_t generation : 8 = 0;     // job_generation_mask
  std::uint16_t attempts = 0;
  std::uint16_t first_recipient = 0;

  std::int64_t next_attempt_ms() const noexcept {
    return static_cast<std::int64_t>(next_attempt_bits);
  }
  void set_next_attempt_ms(std::int64_t ms) noexcept {
    next_attempt_bits =
        static_cast<std::uint64_t>(std::clamp<std::int64_t>(ms, 0, next_attempt_ms_max));
  }
};
static_assert(sizeof(job_record) == 48, "bytes per job are documented in scheduler.h");

// Job records in fixed chunks that never move (core::chunked_slab): a doubling vector held up
// to twice the live records' bytes and copied them all at each growth (64 MB of slack possible
// at 1 M jobs). Free records form a stack through `next`, reused last-freed first as the free
// vector did (slot numbers break ties in the heaps: the order of events must not change).
// This layer keeps a record's generation across reuse (a stale job_id is caught), which is
// also why a drained slab keeps its chunks: freeing one would forget its generations.
class job_slab {
 public:
  job_record& operator[](std::uint32_t slot) noexcept { return _records[slot]; }
  const job_record& operator[](std::uint32_t slot) const noexcept { return _records[slot]; }
  std::uint32_t size() const noexcept { return _records.used(); }  // slots ever used
  // A cleared record (its generation kept) from the free stack, or a new one.
  std::uint32_t allocate() noexcept;
  void release(std::uint32_t slot) noexcept;  // free, generation advanced, on the free stack
  std::size_t capacity_bytes() const noexcept { return _records.bytes(); }

 private:
  // 128 records, 7 KiB (an exact mimalloc size class): a small queue holds one chunk, the
  // chunk table of 10 M jobs is 625 KB.
  using records = core::chunked_slab<job_record, 7, &job_record::next>;
  static_assert(records::none == nil_slot, "a free record's next ends the stack with nil");
  records _records;
};

// A scheduled job in its destination's heap: 12 bytes (was 16). No generation: a job leaves
// the heap whenever it leaves the scheduled state, so an entry is never stale.
struct [[gnu::packed, gnu::aligned(4)]] job_entry {
  std::int64_t time_ms;
  std::uint32_t slot;
};
static_assert(sizeof(job_entry) == 12);

// A destination in the wake heap; entries that no longer match the destination are stale.
struct heap_entry {
  std::int64_t time_ms;
  std::uint32_t slot;
  std::uint32_t generation;  // of the destination the entry names
};
// std heap functions build a max-heap; this order makes it a min-heap on (time, slot).
struct heap_later {
  template <typename Entry>
  bool operator()(const Entry& a, const Entry& b) const noexcept {
    return a.time_ms != b.time_ms ? a.time_ms > b.time_ms : a.slot > b.slot;
  }
};

// Token bucket of a destination or a site (destination_limits: rate_messages per
// rate_period_ms, at most rate_burst banked; one message costs rate_period_ms units).
struct token_bucket {
  std::int64_t units = 0;
  std::int64_t time_ms = 0;  // of the last refill
  void fill(const destination_limits& limits, std::int64_t now_ms) noexcept;  // full
  void clamp(const destination_limits& limits) noexcept;  // to the (new) capacity
  void refill(const destination_limits& limits, std::int64_t now_ms) noexcept;
  // When the bucket holds `messages` tokens (as of its last refill), or no_wakeup_ms if it
  // never can (more than the burst); 0 without a rate.
  std::int64_t time_for(const destination_limits& limits, std::uint32_t messages) const noexcept;
  void take(const destination_limits& limits) noexcept;  // one message
};

struct job_list {
  std::uint32_t head = nil_slot;
  std::uint32_t tail = nil_slot;
  std::uint32_t count = 0;
};

// Fields grouped by size (8-byte, 4-byte, flags): no padding between them (was 256 bytes
// with 22 of padding). One per known destination: 10,000 refusing destinations keep 10,000.
struct destination_record {
  std::string name;
  destination_limits limits;
  std::vector<job_entry> scheduled;  // min-heap of job slots by next attempt
  token_bucket bucket;                // rate limit (see destination_limits)
  std::int64_t backoff_until_ms = 0;
  std::int64_t paused_until_ms = 0;   // reply rule: nothing goes before this
  std::int64_t wake_ms = no_wakeup_ms;
  std::int64_t idle_since_ms = 0;
  std::int64_t last_error_ms = 0;
  job_list ready;
  job_list in_flight;
  job_list held;                      // operator holds: never taken, no wake-up, no expiry
  std::uint32_t generation = 0;
  std::uint32_t connections = 0;
  std::uint32_t connections_starting = 0;  // opened, no take_for_connection yet
  std::uint32_t connection_failures = 0;   // consecutive
  std::uint32_t idle_prev = nil_slot;
  std::uint32_t idle_next = nil_slot;
  std::uint32_t error = 0;
  std::uint32_t site = nil_slot;  // MX site (scheduler_site.cc), nil: connections of its own
  std::uint32_t slot = nil_slot;  // its own position in state::destinations (fits the padding)
  bool live = false;
  bool suspended = false;
  bool probing = false;
  bool idle = false;
  bool starved = false;       // waiting for a shard-wide connection slot
  bool site_waiting = false;  // on its site's waiting list (the site limit held it)
  bool leaving_site = false;  // leave_site: no site connection moves to it; leaves when idle

  std::uint32_t job_count() const noexcept {
    return ready.count + in_flight.count + held.count +
           static_cast<std::uint32_t>(scheduled.size());
  }
};
static_assert(sizeof(destination_record) <= 240, "per-destination bytes: docs/notes.md");

// An MX site (scheduler_site.cc): destinations whose connections share one limit, and whose
// connections may carry any member's jobs. Exists while it has members.
struct site_record {
  std::string name;
  // connections_max, messages_per_connection_max and the rate apply to the site as a whole
  destination_limits limits;
  token_bucket bucket;  // the site's rate: every member's messages take from it
  std::vector<std::uint32_t> members;  // destination slots
  std::vector<std::uint32_t> waiting;  // member slots held by the limit: rescheduled on release
  std::uint32_t connections_starting = 0;  // of every member: opened, no take yet
  std::uint32_t connections = 0;  // of every member
  std::uint32_t next_member_hint = 0;  // round robin start for take_for_site
};
static_assert(sizeof(site_record) <= 160, "grouped by size: no padding between fields");

// 32 records a chunk (7.7 KB of destinations, 5 KB of sites): a few destinations cost one
// chunk, 10,000 leave less than one chunk per shard unused.
inline constexpr unsigned destination_chunk_bits = 5;
inline constexpr unsigned site_chunk_bits = 5;

struct connection_record {
  std::uint32_t destination = nil_slot;
  std::uint32_t generation = 0;
  std::uint32_t taken = 0;
  bool live = false;
  bool started = false;
};

// Interned error texts: key = 2 bytes reply code + 5 bytes status + text.
struct error_entry {
  std::string key;
  std::uint32_t refs = 0;
  std::uint16_t reply_code = 0;
  status_code status;
  std::string_view text() const noexcept { return std::string_view(key).substr(7); }
};

struct pending_event {
  job_event event;
  std::uint32_t error = 0;  // reference held while the event waits and while it is read
};

// Heterogeneous lookup by string_view in maps keyed by std::string.
struct name_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view name) const noexcept {
    return std::hash<std::string_view>{}(name);
  }
};
template <typename Value>
using name_map = std::unordered_map<std::string, Value, name_hash, std::equal_to<>>;

struct scheduler::state {
  scheduler_config config;
  std::uint64_t random = 0;
  job_slab jobs;
  std::uint32_t live_jobs = 0;
  // Chunks that never move (core/chunked_slab.h), not doubling vectors: at 5,000 destinations
  // a shard's vector held 8,192 records (3.9 MB for 10,000 destinations, 1.5 MB of it unused)
  // and left its earlier copies to the allocator (docs/notes.md "Bytes per destination").
  core::chunked_array<destination_record, destination_chunk_bits> destinations;
  std::vector<std::uint32_t> free_destinations;
  std::uint32_t live_destinations = 0;
  name_map<std::uint32_t> by_name;
  name_map<destination_limits> overrides;
  std::vector<connection_record> connections;
  std::vector<std::uint32_t> free_connections;
  std::uint32_t live_connections = 0;
  core::chunked_array<site_record, site_chunk_bits> sites;  // freed slots have members == 0
  std::vector<std::uint32_t> free_sites;
  name_map<std::uint32_t> sites_by_name;
  std::vector<heap_entry> wake;  // min-heap of destinations by wake time
  std::deque<std::uint32_t> starved;
  std::int64_t starved_wake_ms = no_wakeup_ms;  // a connection slot freed up at this time
  std::uint32_t idle_head = nil_slot;
  std::uint32_t idle_tail = nil_slot;
  std::deque<error_entry> errors;  // index 0 unused; deque keeps keys in place
  std::vector<std::uint32_t> free_errors;
  std::unordered_map<std::string_view, std::uint32_t> error_index;
  std::deque<pending_event> events;
  std::uint32_t event_error_held = 0;
  std::vector<std::uint32_t> due;            // scratch for poll()
  std::vector<std::uint16_t> recipients;     // scratch for add()
  scheduler_stats counters;

  // errors (scheduler.cc)
  std::uint32_t intern(const failure& reason) noexcept;
  void retain(std::uint32_t error) noexcept;
  void release(std::uint32_t error) noexcept;
  // destinations
  destination_record* find(std::string_view name) noexcept;
  const destination_record* find(std::string_view name) const noexcept;
  destination_record& at(destination_id id) noexcept;
  std::uint32_t create(std::string_view name, std::int64_t now_ms) noexcept;
  void forget(std::uint32_t slot) noexcept;
  bool forget_one_idle(std::int64_t now_ms) noexcept;
  void sweep_idle(std::int64_t now_ms) noexcept;
  void update_idle(std::uint32_t slot, std::int64_t now_ms) noexcept;
  void unlink_idle(std::uint32_t slot) noexcept;
  void reschedule(std::uint32_t slot, std::int64_t now_ms) noexcept;
  std::int64_t compute_wake(destination_record& d, std::int64_t now_ms) noexcept;
  bool can_open(destination_record& d, std::int64_t now_ms) noexcept;
  // Drain fairness: the connection has had its turn (config.turn_messages) and another
  // destination waits for a shard-wide connection slot: it closes and hands the slot on.
  bool turn_over(const destination_record& d, const connection_record& c) const noexcept;
  void service(std::uint32_t slot, std::int64_t now_ms, std::vector<connect_request>& out,
               std::uint32_t open_max = 0xffffffffu);
  // Due jobs to the ready list; while probing (probe_limit) only until one is ready.
  void move_due(destination_record& d, std::int64_t now_ms, bool probe_limit = true) noexcept;
  void apply_limits(destination_record& d, const destination_limits& limits) noexcept;
  // token buckets: when the destination (and its site) may send `messages` more
  std::int64_t rate_time_for(destination_record& d, std::uint32_t messages,
                             std::int64_t now_ms) noexcept;
  // jobs
  std::uint32_t allocate_job() noexcept;
  void free_job(std::uint32_t slot) noexcept;
  job_record& job_at(job_id id) noexcept;
  void push_back(job_list& list, std::uint32_t slot) noexcept;
  void unlink(job_list& list, std::uint32_t slot) noexcept;
  void schedule(destination_record& d, std::uint32_t slot, std::int64_t at_ms) noexcept;
  job_view view(std::uint32_t slot) const noexcept;
  std::int64_t jittered(std::int64_t delay_ms) noexcept;
  std::int64_t retry_delay(const destination_record& d, std::uint32_t attempts) noexcept;
  std::int64_t expiry_ms(const job_record& job) const noexcept;
  std::int64_t probe_delay(const destination_record& d, std::int64_t now_ms) noexcept;
  void note_attempt(job_record& job, std::int64_t now_ms, std::uint32_t error) noexcept;
  bool warn_delay(job_record& job, std::int64_t now_ms) const noexcept;
  void push_event(event_kind kind, std::uint32_t slot, std::int64_t next_ms) noexcept;
  // Per-message actions (scheduler_message.cc): takes the queued jobs of `message` out of
  // the destination's ready list and scheduled heap, appending their slots to `out`.
  void take_queued(destination_record& d, message_key message,
                   std::vector<std::uint32_t>& out) noexcept;
  // bounce_message / remove_message: ends the message's jobs at the destination `name` as
  // `kind` events, counted in `counter`.
  scheduler::message_action_result end_jobs(std::string_view name, message_key message,
                                            event_kind kind, job_flag flag,
                                            std::string_view text, std::uint64_t& counter,
                                            std::int64_t now_ms) noexcept;
  // until_ms > 0: to that time (a pause), without counting a connection failure.
  void backoff(std::uint32_t slot, std::int64_t now_ms, const failure& reason,
               std::int64_t until_ms = 0) noexcept;
  void wait_for_destination(destination_record& d, std::int64_t now_ms, std::int64_t until,
                            std::uint32_t error) noexcept;
  void release_connection(connection_id id, std::int64_t now_ms) noexcept;
  void fill_info(std::uint32_t slot, destination_info& out) const noexcept;
  // sites (scheduler_site.cc)
  bool site_full(const destination_record& d) const noexcept;
  void site_wait(destination_record& d) noexcept;  // held by the site limit: wake on release
  void site_connection_opened(destination_record& d) noexcept;
  void site_connection_started(destination_record& d, std::int64_t now_ms) noexcept;
  void wake_site_waiting(site_record& site, std::int64_t now_ms) noexcept;
  // When the site's bucket holds one token (0: no site or no site rate), beyond one for each
  // of the site's starting connections when `reserve_starting`; site_take charges one.
  std::int64_t site_rate_time(destination_record& d, std::int64_t now_ms,
                              bool reserve_starting) noexcept;
  void site_take(destination_record& d) noexcept;
  void site_connection_released(destination_record& d, std::int64_t now_ms) noexcept;
  void leave_site(destination_record& d) noexcept;
  void move_within_site(connection_record& c, std::uint32_t to, std::int64_t now_ms) noexcept;
  std::uint32_t site_member_with_work(const site_record& site, std::uint32_t except,
                                      std::int64_t now_ms,
                                      std::size_t scan_max = SIZE_MAX) const noexcept;
};

}  // namespace ringmta::queue
