// queue::scheduler: one shard's delivery queues, per destination (a recipient domain, a route
// or the smarthost), with retry scheduling, connection and rate limits, lifetime expiry and
// operator actions. Pure: time comes in as wall-clock milliseconds (`now_ms`, the same clock
// as the spool's seconds ×1000), jitter from a seeded generator, no syscalls, no I/O, no
// threads, no exceptions on the data path. One scheduler per shard; not thread-safe.
//
// Work unit: a job = one message's recipients (indices into its envelope) for one
// destination. The embedder owns the message; a job is a 48-byte record in a slab (see
// "Memory" below). Every job is in exactly one place: the destination's ready list (FIFO),
// its scheduled heap (ordered by next attempt), or in flight (taken by a connection). Each
// job leaves the scheduler exactly once: delivered(), failed(), deferred() → expired or
// bounced, or an event (expired / bounced_by_operator). Nothing is ever dropped silently.
//
// Embedder loop (one shard):
//   add(...)                           at reception (or recovery, with the stored attempt time)
//   timer at next_wakeup_ms(); poll(now, out) → connect requests: open one connection each
//   on connected:  take_for_connection(c, now) → job | throttled(retry_at) | none | close
//   per job:       delivered() / failed() / deferred(..., keep_mask) with the client's results
//   on connect failure (refused, all MX failed, DNS failure, 421 greeting): connection_failed()
//     → the whole destination backs off to one shared time (RFC 5321 §4.5.4.1: don't hammer)
//   connection_closed() when a connection ends; drain next_event() after any call.
// Calls may move the wake-up earlier (a closed connection frees a slot, a job arrives):
// read next_wakeup_ms() again after each batch of calls; a wake-up <= now means poll now.
// A connection kept open after take_status::none is not told when new jobs arrive (poll()
// opens new connections for them, up to the limit): ask again soon or close it. Jobs taken
// on a connection that then fails are still reported one by one (usually deferred()).
// Events queue up until next_event() drains them: drain after every call.
//
// Retry schedule: attempt n (1-based, counted in the job) that ends in deferral waits
// retry_delays_ms[min(n, size) - 1] ± jitter; the next attempt never lands later than the
// message's expiry time, and a deferral at or after expiry (received + lifetime_max_ms)
// expires the job instead (the caller bounces: RFC 5321 §4.5.4.1 give-up time).
// Destination-wide backoff uses the destination's count of consecutive connection failures
// in the same schedule (connections failing during a backoff count once), grown by
// probe_backoff_max_ms when that is set; after it the
// destination probes with one connection until a connection succeeds (its first
// take_for_connection is the proof). While it probes, its due jobs wait on the destination:
// only one is made ready (the probe's), so a failed probe defers that one job, and the others
// move to the next shared time without an attempt or an event (a dead destination costs one
// deferral per retry, not one per queued job). The first failure too: a connection that
// failed before it took a job counts one attempt for the oldest ready job only when it starts
// the backoff (none when a connection opened with it failed first); the other ready jobs
// wait unattempted (issue 15: a restart's DNS storm deferred every queued job). Expiry and
// the delay warning of every job due before the destination is back are checked at each
// failure, so a job may outlive its lifetime by up to one backoff delay. flush() lifts the
// backoff, makes every scheduled job ready, but keeps the single probe connection.
//
// Fairness: while destinations wait for one of the shard's connections_max, a connection
// that has carried turn_messages is told to close, and poll() gives the freed slots to the
// waiting destinations in the order they began to wait, one connection each (round robin).
//
// Memory: 48 bytes per job record (static_assert in scheduler_state.h), in fixed chunks of
// 128 records that never move (no growth slack, free slots chained through the records) +
// 12 bytes per scheduled job (heap entry; its vector grows by a quarter: ~13 with slack).
// About 60-70 bytes per queued job; 10 M jobs ~ 650 MiB. Per destination ~ 250 bytes + name.
// Error texts are interned (refcounted, bounded count), a job holds a 13-bit reference.
//
// Never: reads a clock, allocates per job beyond amortized containers, or throws after
// construction. Misuse (a stale handle, an outcome for a job not in flight) asserts.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/queue/status.h"
#include "ringmta/spool/message_id.h"

namespace ringmta::queue {

inline constexpr std::int64_t no_wakeup_ms = std::numeric_limits<std::int64_t>::max();
inline constexpr std::size_t destination_name_bytes_max = 255 + 32;  // domain or route name
inline constexpr std::size_t error_text_bytes_max = 512;             // longer texts are cut
inline constexpr unsigned job_recipients_max = 64;                   // recipient window of a job

// The embedder's handle of a message: 64 opaque bits the scheduler keeps in the job, gives
// back in job views and events, and compares for equality in the per-message actions; it
// never reads through it. The daemon's relay passes its message's address, so a job leads to
// its message without an id → message table (issue 15: 16 bytes per queued message gone);
// tests and benches may pass the spool's id. Two live messages must not share a key.
using message_key = std::uint64_t;

struct destination_limits {
  std::uint32_t connections_max = 10;               // concurrent connections (>= 1)
  std::uint32_t messages_per_connection_max = 100;  // 0: unlimited
  // Token bucket: rate_messages per rate_period_ms, at most rate_burst banked. Exact integer
  // arithmetic (one message costs rate_period_ms units, each ms adds rate_messages units).
  std::uint32_t rate_messages = 0;                  // 0: no rate limit
  std::uint32_t rate_period_ms = 1000;
  std::uint32_t rate_burst = 1;                     // >= 1
  std::uint32_t recipients_per_transaction_max = 50;  // 1..64; add() splits larger jobs
  // Shaping (server/shaping.h): this destination's own retry schedule (null or empty: the
  // scheduler's) and queue lifetime (0: the scheduler's).
  std::shared_ptr<const std::vector<std::int64_t>> retry_delays_ms;
  std::int64_t lifetime_max_ms = 0;
  bool operator==(const destination_limits&) const = default;
};

struct scheduler_config {
  destination_limits limits;  // defaults; set_limits() overrides per destination name
  // Shaping: when set, the limits of a destination being created (instead of `limits`; a
  // set_limits() override still wins). Called once per destination creation, never per job.
  std::function<destination_limits(std::string_view destination)> limits_for;
  // Delay after the n-th failed attempt; the last one repeats. Must not be empty.
  std::vector<std::int64_t> retry_delays_ms = {5 * 60'000, 15 * 60'000, 30 * 60'000,
                                                60 * 60'000, 2 * 3'600'000, 4 * 3'600'000};
  // A destination whose connections keep failing (Postfix: a dead destination's backoff
  // doubles from minimal_backoff_time to maximal_backoff_time): after its n-th consecutive
  // failure it waits max(schedule(n), retry_delays_ms[0] × 2^(n-1)) capped here, but no
  // longer than until the first lifetime expiry or delay warning among its jobs (those are
  // checked at the probe). 0: the retry schedule alone.
  std::int64_t probe_backoff_max_ms = 0;
  std::uint32_t jitter_permille = 100;                   // ±10% of each delay
  std::int64_t lifetime_max_ms = 5 * 86'400'000LL;       // then expire (bounce)
  std::int64_t delay_warning_ms = 4 * 3'600'000LL;       // "delayed" DSN once; 0: never
  std::int64_t idle_forget_ms = 3'600'000;               // idle destination state is dropped
  // At most 2^24 (a job keeps its destination's slot in 24 bits); a forced add() may pass
  // this limit (recovery) but never that one.
  std::uint32_t destinations_max = 100'000;
  std::uint32_t jobs_per_destination_max = 1'000'000;
  std::uint32_t jobs_max = 10'000'000;                   // whole shard
  // Whole shard. The relay caps it at the outbound's connection slots (relay::state::shaped):
  // a request past them is refused by the outbound and offered again at once, a loop on the
  // shard's CPU, and the drain's fairness (turn_messages) never sees the shard full.
  std::uint32_t connections_max = 1024;
  // Drain fairness: while destinations wait for one of the shard's connections_max, a
  // connection closes after this many messages (its turn) so the next one gets the slot;
  // 0: never (a connection keeps its slot until messages_per_connection_max or no job).
  std::uint32_t turn_messages = 10;
  std::uint32_t error_texts_max = 4096;                  // distinct retained error texts
  std::uint64_t random_seed = 1;                         // jitter source (splitmix64)
};

struct destination_id {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  bool operator==(const destination_id&) const = default;
};
struct connection_id {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  bool operator==(const connection_id&) const = default;
};
struct job_id {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  bool operator==(const job_id&) const = default;
};

// One message's recipients for one destination, as the embedder hands them in.
struct job_spec {
  message_key message = 0;
  std::int64_t received_seconds = 0;               // the envelope's; drives lifetime expiry
  std::span<const std::uint16_t> recipients;       // envelope indices, no duplicates
  // Recovery from the spool: attempts already made (clamp the spool's 32-bit count) and the
  // stored next attempt time (spool seconds × 1000). A destination without connections takes
  // the largest such count as its consecutive failures (its backoff continues the schedule).
  std::uint16_t attempts = 0;
  std::int64_t not_before_ms = 0;                  // <= now: ready at once
  // Recovery of a message an operator held: its jobs are held at once (never taken).
  bool held = false;
};

enum class admission : std::uint8_t {
  checked,  // reception: refuse when a limit is reached (the embedder answers 452)
  forced,   // recovery of mail already accepted: jobs limits do not apply (never drop)
};

enum class add_status : std::uint8_t {
  added,
  invalid,             // empty recipients, empty or too long destination name
  destinations_full,   // destinations_max (forced: 2^24) reached, no idle one to forget
  destination_full,    // jobs_per_destination_max
  jobs_full,           // jobs_max
};
struct add_result {
  add_status status = add_status::invalid;
  destination_id destination;
  std::uint32_t jobs_added = 0;  // the recipients may be split into several jobs
};

// What the embedder gets about a job (from take_for_connection, events and list_jobs).
// Recipient k of the job is envelope index first_recipient + b for each bit b set in mask.
struct job_view {
  job_id id;
  destination_id destination;
  message_key message = 0;
  std::uint64_t recipient_mask = 0;
  std::uint16_t first_recipient = 0;
  std::uint16_t attempts = 0;
  std::int64_t received_seconds = 0;
  std::int64_t last_attempt_ms = 0;    // 0: never attempted (second resolution)
  std::int64_t next_attempt_ms = 0;    // meaningful when scheduled
  std::uint16_t last_reply_code = 0;   // of the last deferral, 0 when none
  status_code last_status;
  std::string_view last_error;         // valid until the next call that changes the scheduler
  bool held = false;                   // held by the operator (hold_message)
  template <typename Visit>
  void for_each_recipient(Visit&& visit) const {
    for (std::uint64_t bits = recipient_mask; bits != 0; bits &= bits - 1)
      visit(static_cast<std::uint16_t>(first_recipient + __builtin_ctzll(bits)));
  }
  unsigned recipient_count() const noexcept { return __builtin_popcountll(recipient_mask); }
};

struct connect_request {
  connection_id connection;
  destination_id destination;
  std::string_view name;  // valid while the connection lives
  bool probe = false;     // first connection after a destination-wide backoff
};

enum class take_status : std::uint8_t {
  job,        // deliver `job` on this connection
  throttled,  // rate limit: ask again at retry_at_ms (keep the connection if you like)
  none,       // no ready job: close, or keep it briefly and ask again
  close,      // messages_per_connection_max reached or destination suspended: close now
};
struct take_result {
  take_status status = take_status::none;
  job_view job;
  std::int64_t retry_at_ms = 0;
};

enum class defer_status : std::uint8_t {
  scheduled,            // will be retried at next_attempt_ms
  expired,              // past lifetime_max_ms: the job is gone; bounce its recipients
  bounced_by_operator,  // bounce_all() ran while it was in flight: the job is gone; bounce
  removed_by_operator,  // remove_message() ran while it was in flight: the job is gone, no DSN
  held,                 // hold_message() ran while it was in flight: kept, held (no retry)
};
struct defer_result {
  defer_status status = defer_status::scheduled;
  std::int64_t next_attempt_ms = 0;
  std::uint16_t attempts = 0;
  bool delay_warning = false;  // first time past delay_warning_ms: send a "delayed" DSN
};

enum class event_kind : std::uint8_t {
  expired,              // destination-wide deferral found the job past its lifetime: bounce
  bounced_by_operator,  // bounce_all(): bounce with "bounced by operator"
  delay_warning,        // destination-wide deferral crossed delay_warning_ms: "delayed" DSN
  // A destination-wide deferral counted an attempt for this job and moved it to
  // next_attempt_ms: exactly one per job per failure (record and journal it). Jobs that were
  // only waiting (not due) are moved without an event: no attempt was made for them.
  deferred,
  removed_by_operator,  // remove_message(): the job is gone; record it deleted (no DSN)
};
struct job_event {
  event_kind kind = event_kind::expired;
  job_view job;  // for expired/bounced the job is gone; job.id is stale
  std::int64_t next_attempt_ms = 0;  // delay_warning: when it will be retried
};

struct destination_info {
  destination_id id;
  std::string_view name;
  bool suspended = false;
  bool probing = false;
  std::uint32_t ready = 0;
  std::uint32_t scheduled = 0;
  std::uint32_t in_flight = 0;
  std::uint32_t held = 0;                 // held by the operator: never taken
  std::uint32_t connections = 0;
  std::uint32_t connection_failures = 0;  // consecutive
  std::int64_t backoff_until_ms = 0;      // destination-wide backoff, 0: none
  std::int64_t paused_until_ms = 0;       // pause() by a reply rule, 0: none
  std::int64_t next_attempt_ms = 0;       // earliest scheduled job, 0: none
  std::int64_t last_error_ms = 0;
  std::string_view last_error;
  destination_limits limits;
};

struct scheduler_stats {
  std::uint64_t destinations = 0;
  std::uint64_t jobs = 0;
  std::uint64_t ready = 0;
  std::uint64_t scheduled = 0;
  std::uint64_t in_flight = 0;
  std::uint64_t connections = 0;
  std::uint64_t added = 0;
  std::uint64_t delivered = 0;
  std::uint64_t deferred = 0;
  std::uint64_t failed = 0;
  std::uint64_t expired = 0;
  std::uint64_t bounced_by_operator = 0;
  std::uint64_t removed_by_operator = 0;
  std::uint64_t held = 0;
  std::uint64_t destinations_forgotten = 0;
  std::uint64_t connection_failures = 0;
  std::uint64_t error_texts = 0;
  // Bytes held by the scheduler's containers (capacity, not size): jobs, heaps, lists,
  // destination records; names and error texts counted by length. An estimate for metrics.
  std::uint64_t memory_bytes = 0;
};

class scheduler {
 public:
  // Asserts a sane config (non-empty schedule, limits >= 1). Reserves nothing up front.
  explicit scheduler(scheduler_config config);
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  // --- jobs in ---
  // Splits the recipients into jobs of at most recipients_per_transaction_max recipients
  // within one 64-index window (sorted by index). Either all of them are added or none.
  add_result add(std::string_view destination, const job_spec& spec, std::int64_t now_ms,
                 admission mode = admission::checked) noexcept;
  // What add() of `job_count` jobs (checked admission) would answer, without adding: for a
  // 452 at RCPT time (RFC 5321 §4.5.3.1.10). destinations_full only when no idle one exists.
  add_status can_add(std::string_view destination, std::uint32_t job_count) const noexcept;

  // --- timing and connections ---
  std::int64_t next_wakeup_ms() noexcept;  // no_wakeup_ms when nothing is pending
  // Moves due jobs to ready, forgets idle destinations, and appends one request per
  // connection the embedder should open now. Returns how many were appended.
  std::size_t poll(std::int64_t now_ms, std::vector<connect_request>& out) noexcept;
  take_result take_for_connection(connection_id connection, std::int64_t now_ms) noexcept;
  void connection_closed(connection_id connection, std::int64_t now_ms) noexcept;
  // The connection could not be used at all: the destination backs off (all its ready jobs
  // move to one shared next attempt, one of them deferred when this failure starts the
  // backoff; expired ones come out as events). Ends the connection.
  void connection_failed(connection_id connection, std::int64_t now_ms,
                         const failure& reason) noexcept;
  // The same backoff without a connection (e.g. DNS says the domain has no usable MX).
  void defer_destination(destination_id destination, std::int64_t now_ms,
                         const failure& reason) noexcept;
  // A reply rule suspends the destination until `until_ms`: its queued jobs wait for then
  // (as a backoff, the failure count unchanged), open connections take nothing more (close),
  // and none is opened before; a connection starting meanwhile does not lift it.
  void pause(destination_id destination, std::int64_t now_ms, std::int64_t until_ms,
             const failure& reason) noexcept;

  // --- job outcomes (only for jobs in flight) ---
  void delivered(job_id job, std::int64_t now_ms) noexcept;
  void failed(job_id job, std::int64_t now_ms, const failure& reason) noexcept;
  // Recipients in `keep_mask` (bits of job.recipient_mask) stay queued; the others got a
  // final answer from the caller. keep_mask == 0 is delivered().
  defer_result deferred(job_id job, std::int64_t now_ms, const failure& reason,
                        std::uint64_t keep_mask = ~std::uint64_t{0}) noexcept;

  // --- events: expired / bounced_by_operator / delay_warning / deferred jobs ---
  // `out.job.last_error` stays valid until the next call to next_event().
  bool next_event(job_event& out) noexcept;

  // --- operator actions (by destination name; false/0 when unknown) ---
  bool suspend(std::string_view destination, std::int64_t now_ms) noexcept;  // creates it
  bool resume(std::string_view destination, std::int64_t now_ms) noexcept;
  // An operator's resume ends a reply rule's pause() now: the jobs it held (waiting for its
  // end, or queued meanwhile with its end as their first attempt) become ready and the backoff
  // it set ends. flush() keeps a pause (the remote asked us to slow down). False: no pause.
  bool lift_pause(std::string_view destination, std::int64_t now_ms) noexcept;
  std::size_t flush(std::string_view destination, std::int64_t now_ms) noexcept;
  std::size_t flush_all(std::int64_t now_ms) noexcept;
  // Ready and scheduled jobs come out as bounced_by_operator events at once; jobs in flight
  // are bounced when their connection reports them deferred. Returns the events queued.
  std::size_t bounce_all(std::string_view destination, std::int64_t now_ms) noexcept;
  void set_limits(std::string_view destination, const destination_limits& limits);

  // --- per-message operator actions (scheduler_message.cc) ---
  // Each acts on one message's jobs at one destination (the embedder knows the destinations
  // of a message's recipients), walking that destination's lists: O(jobs of the
  // destination), an operator action, never the data path. A job in flight is never taken
  // back: its transaction finishes and its outcome stands (delivered stays delivered, a 5xx
  // fails it); only a deferral turns into the action (held, bounced, removed). `found` is
  // false when the destination has no job of the message.
  //   hold:    ready and scheduled jobs are held: never taken, never expired, no wake-ups.
  //   release: held jobs become ready now (a release means "try it"); a pending hold of a
  //            job in flight is cancelled.
  //   retry:   scheduled jobs become ready now and a destination-wide backoff is lifted (as
  //            flush()); held jobs stay held.
  //   bounce:  queued and held jobs come out as bounced_by_operator events.
  //   remove:  queued and held jobs come out as removed_by_operator events (no DSN).
  struct message_action_result {
    bool found = false;
    std::uint32_t jobs = 0;       // jobs acted on now
    std::uint32_t in_flight = 0;  // jobs in flight: acted on when their delivery defers
  };
  // Whether the destination has a job of the message in any state (ready, scheduled, in
  // flight, held): the relay's check that a key still names the message it meant (a key is
  // an address, and a freed message's address may be a newer message's).
  bool has_message(std::string_view destination, message_key message) const noexcept;
  // Whether `job` is still queued (its slot live, of the same generation): a job_view taken
  // before a call that may expire or bounce jobs (pause) still names the job it meant.
  bool has_job(job_id job) const noexcept;
  message_action_result hold_message(std::string_view destination, message_key message,
                                     std::int64_t now_ms) noexcept;
  message_action_result release_message(std::string_view destination,
                                        message_key message, std::int64_t now_ms) noexcept;
  message_action_result retry_message(std::string_view destination, message_key message,
                                      std::int64_t now_ms) noexcept;
  message_action_result bounce_message(std::string_view destination, message_key message,
                                       std::int64_t now_ms) noexcept;
  message_action_result remove_message(std::string_view destination, message_key message,
                                       std::int64_t now_ms) noexcept;
  // Changes a live destination's limits without remembering them (shaping learned its MX
  // site, or a reload): false when the destination does not exist.
  bool reshape(std::string_view destination, const destination_limits& limits);
  // A reload: new retry delays, lifetime, delay warning and default limits (destinations
  // without limits of their own take them now). Queued jobs keep their attempts and retry
  // times; the new delays apply at their next deferral, the new lifetime at the next check.
  void set_policy(const scheduler_config& next) noexcept;
  void clear_limits(std::string_view destination);

  // --- MX sites (KumoMTA's site_name; scheduler_site.cc) ---
  // Domains whose MX host sets are equal form a site: the connections of all its members
  // count against the site's connections_max and messages_per_connection_max, their
  // messages against the site's rate (one token bucket; each member's own limits still
  // apply too), and a connection opened for one member may carry another member's jobs
  // (take_for_site, round robin over the members with work, one message each). Queues,
  // retry times, backoff, suspension and bounces stay per member destination. join_site()
  // creates the site on first use and sets its limits (a later call replaces them); false
  // when the destination is unknown. A destination leaves its site when it is forgotten;
  // the site ends with its last member.
  bool join_site(std::string_view destination, std::string_view site,
                 const destination_limits& site_limits);
  bool reshape_site(std::string_view site, const destination_limits& site_limits);
  // A member whose jobs the site's connections must no longer carry (a reload gave its domain
  // a TLS policy or EHLO name of its own): from now no connection moves to it or from it
  // within the site, and it leaves the site once its own connections have ended (at once
  // without any, looking for a connection of its own from now_ms). False when the
  // destination is unknown or in no site.
  bool leave_site(std::string_view destination, std::int64_t now_ms) noexcept;
  // take_for_connection(); when that finds nothing ready for the connection's destination
  // and the destination is in a site, the connection moves to another member with ready
  // jobs (not suspended, paused or backing off) and takes from it: the job's destination
  // then says which. Closes at the site's messages_per_connection_max.
  take_result take_for_site(connection_id connection, std::int64_t now_ms) noexcept;
  // The site of a destination ("" when none); valid until the next call that changes sites.
  std::string_view site_of(destination_id destination) const noexcept;
  std::string_view site_of(std::string_view destination) const noexcept;
  bool has_sites() const noexcept;
  // The other members of the destination's site (none without a site), and every site's
  // name, and every member of a site: what the relay asks instead of keeping a destination →
  // site map of its own.
  std::vector<std::string> site_members(std::string_view destination) const;
  std::vector<std::string> site_names() const;
  std::vector<std::string> members_of_site(std::string_view site) const;

  // --- inspection ---
  bool inspect(std::string_view destination, destination_info& out) const noexcept;
  bool inspect(destination_id destination, destination_info& out) const noexcept;
  // Visits at most `count_max` destinations (in slot order) as destination_info.
  template <typename Visit>
  void list_destinations(std::size_t count_max, Visit&& visit) const {
    destination_info info;
    for (std::uint32_t slot = 0; slot < slot_count() && count_max > 0; ++slot) {
      if (!info_at(slot, info)) continue;
      visit(static_cast<const destination_info&>(info));
      --count_max;
    }
  }
  // Appends at most `count_max` jobs: in flight, then ready (in order), then scheduled, then
  // held.
  std::size_t list_jobs(std::string_view destination, std::size_t count_max,
                        std::vector<job_view>& out) const;
  scheduler_stats stats() const noexcept;
  const scheduler_config& config() const noexcept;

 private:
  struct state;
  std::uint32_t slot_count() const noexcept;
  bool info_at(std::uint32_t slot, destination_info& out) const noexcept;
  std::unique_ptr<state> _state;
};

}  // namespace ringmta::queue
