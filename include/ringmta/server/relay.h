// server::relay: one shard's part of delivering mail. Every shard plays two roles.
//
// Home of the messages in its own spool: when a message becomes durable (or is recovered at
// start-up) the home groups its recipients by destination and hands each group to the shard
// that owns that destination (hash(destination) % shards), through the shard queues. Owners
// report every recipient's outcome back; the home records it in the spool journal (a message
// leaves the spool when every recipient is delivered or bounced), logs it, and turns bounces
// into DSNs (RFC 3464) from the null sender that it spools and routes like any other message.
//
// Owner of the destinations that hash to it: their queues and limits (queue::scheduler), the
// DNS lookups and SMTP client connections (outbound::outbound over outbound::dns_client), and
// the deliveries themselves. A destination is a recipient domain; a smarthost or a per-domain
// route only changes where its connections go, so queues, limits and work stay spread over
// the shards.
//
// Messages are shared read-only between shards: the home allocates a spooled_message
// (envelope + body location) and frees it once every recipient is final, which happens only
// after every owner has reported and dropped its reference. Outcomes of one delivery travel
// as one heap-allocated batch. Nothing is dropped: a full shard queue keeps the item for the
// next loop iteration.
// Never: a DSN for a message from <>, a recipient reported twice, a message freed while a
// delivery of it is in flight.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringmta/admin/log.h"
#include "ringmta/admin/metrics.h"
#include "ringmta/config/settings.h"
#include "ringmta/core/work_pool.h"
#include "ringmta/events/bounce_class.h"
#include "ringmta/outbound/dns_client.h"
#include "ringmta/outbound/outbound.h"
#include "ringmta/queue/scheduler.h"
#include "ringmta/server/downgrade.h"
#include "ringmta/server/egress.h"
#include "ringmta/server/shaping.h"
#include "ringmta/shard/host.h"
#include "ringmta/shard/mesh.h"
#include "ringmta/spool/store.h"

namespace ringmta::server {

class relay;

// Where a destination's connections go.
struct relay_route {
  bool mx = true;    // MX lookup of the destination (RFC 5321 §5.1)
  std::string host;  // else this host (address literal or name: A/AAAA only)
  std::uint16_t port = 25;
  bool relayhost = false;  // the --relayhost (gets its AUTH credentials; a route does not)
};

struct relay_config {
  std::string hostname;  // HELO name, Reporting-MTA of DSNs
  std::uint16_t delivery_port = 25;
  bool has_relayhost = false;
  relay_route relayhost;
  // --relayhost-auth (read by make_relay_config: start-up or reload, never a shard): null
  // without it. Only connections to the relayhost carry them.
  std::shared_ptr<const outbound::client_credentials> relayhost_auth;
  bool relayhost_auth_plaintext = false;
  std::vector<config::route> routes;  // per-domain fixed hosts
  // Outbound TLS per destination (RFC 3207): "example.com" exactly, else the longest
  // ".parent" entry, else tls_default. Also with a relayhost (its name is what verify checks).
  outbound::tls_policy tls_default = outbound::tls_policy::opportunistic;
  std::unordered_map<std::string, outbound::tls_policy> tls_policies;
  std::string tls_description;  // for the start-up log
  queue::scheduler_config scheduler;
  // [[shaping]] and [[reply_rule]]: immutable, shared by every shard; a reload (update())
  // brings a new one: live queues are reshaped at once, open connections keep the timeouts
  // and EHLO name they were opened with.
  std::shared_ptr<const shaping_table> shaping;
  // [[source]] and [[pool]] (egress.h): immutable like shaping; a reload's pools apply to mail
  // routed from then on and the connections opened for it.
  std::shared_ptr<const egress_table> egress;
  outbound::outbound_config outbound;
  outbound::dns_client_config dns;
  std::vector<relay*>* shards = nullptr;  // every shard's relay, by shard id (set before start)
  // 8-bit mail to a next hop without 8BITMIME: converted to quoted-printable on this pool
  // (server/downgrade.h), or bounced 5.6.3 when mime_downgrade is off or the pool is null.
  bool mime_downgrade = true;
  core::work_pool<downgrade_request>* downgrader = nullptr;
  // Destinations an operator suspended (SPOOL/suspensions.json): each shard suspends those it
  // owns at start, before recovered mail is queued, so none of it is tried.
  std::vector<std::string> suspended_at_start;
  // Deferred and bounced records carry a class from these rules (bounce.classes_file).
  std::shared_ptr<const events::bounce_classifier> classifier;
  // MX site rollup (relay.site_rollup; docs/notes.md "MX sites"): an MX-routed domain is
  // looked up first, then its jobs join its site's queue on the site's owner shard.
  bool site_rollup = true;
  // relay.site_relearn: a domain's site is used this long, then its MX hosts are looked up
  // again (relay_site.cc roll_up).
  std::int64_t site_relearn_ms = 3'600'000;
};

// Per-shard counters, registered by the daemon.
struct relay_metrics {
  admin::counter routed_recipients;
  admin::counter delivered;
  admin::counter deferred;
  admin::counter bounced;
  admin::counter dsn_queued;
  admin::counter dsn_failed;   // given up: the DSN cannot be built (its bounces stand)
  admin::counter dsn_retries;  // the spool did not take a DSN: built again a second later
  admin::counter dsn_original_read_failures;  // a DSN quoting less of its original than asked
  admin::counter connections;
  admin::gauge queued_jobs;
  admin::gauge marks_waiting;  // recipient states waiting for room in the spool's journal
  // Queued messages' envelopes: packed in memory (a waiting one is evicted to the spool), and
  // read back from the spool's commit records through the ring (relay_envelopes.cc).
  admin::gauge envelopes_resident;
  admin::counter envelope_reads;
  admin::counter envelope_read_failures;
  // 8-bit messages to servers without 8BITMIME (server/downgrade.h).
  admin::counter downgrades_requested;
  admin::counter downgrades_converted;
  admin::counter downgrades_refused;  // bounced 5.6.3
  // Mirrored from the shard's outbound counters once per loop iteration.
  admin::counter bodies_bdat;     // small bodies sent as one BDAT chunk with the commands
  admin::counter bodies_data;     // small bodies sent after DATA's 354
  admin::counter bodies_spliced;  // large bodies spliced from the spool
  admin::counter bodies_copied;
  admin::counter body_bytes;
  admin::counter connect_failures;
  admin::counter outbound_timeouts;
  // Outbound TLS, mirrored the same way.
  admin::counter tls_handshakes;
  admin::counter tls_resumed;
  admin::counter tls_verified;
  std::array<admin::counter, static_cast<std::size_t>(tls::failure::count_)> tls_failures;
  admin::counter tls_timeouts;
  admin::counter tls_unavailable;
  admin::counter tls_plaintext_retries;
  admin::counter tls_plaintext_remembered;
  admin::counter tls_injections;
  admin::counter bodies_encrypted;
  // Outcomes by bounce class (bounded labels: events::bounce_classifier::classes()), and
  // reception → delivery latency in millisecond units (up to ~9 h, then +Inf).
  static constexpr std::size_t class_count = 11;
  std::array<admin::counter, class_count> deferred_by_class;
  std::array<admin::counter, class_count> bounced_by_class;
  admin::histogram delivery_latency{1000};
};

// Throws config::error (start-up): bad resolvers, an unreadable --tls-ca file.
relay_config make_relay_config(const config::settings& settings);
// Reads --relayhost-auth (relayhost_auth.cc): one "USER:PASSWORD" line; refuses a file that is
// group or world readable, empty, or whose fields are too long. Throws config::error naming
// the setting and the file. Null when the setting is empty.
std::shared_ptr<const outbound::client_credentials> load_relayhost_auth(
    const config::settings& settings);
// The TLS policy for a destination domain (lowercase).
outbound::tls_policy tls_policy_for(const relay_config& config, std::string_view destination);

class relay final : public outbound::delivery_handler, public shard::host_hook {
 public:
  // `owner` runs its IO, timers and clock; `peers` reaches the other shards' relays (the
  // daemon passes its shard::shard as both; tests/sim a simulated host and mesh).
  relay(const relay_config& config, shard::host& owner, shard::mesh& peers, spool::store& store,
        relay_metrics& metrics, admin::log_buffer& log);
  ~relay();
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;

  // Starts DNS and outbound on this shard and routes every queued message of the store (its
  // recovered state). On the shard's thread, once.
  core::result<void> start() noexcept;
  // A message of this shard's spool became durable: deliver it. `body` is where the spool
  // put it (store::commit told), so nothing is read back.
  // `pool`: the egress pool a trusted submitter asked for (X-Ringmta-Pool), or empty.
  void route(const spool::envelope& envelope, std::span<const spool::body_slice> body,
             std::string_view pool = {});
  // The spool reports a ticket; true when it was one of ours (a DSN being spooled).
  bool on_committed(std::uint64_t ticket, int error) noexcept;
  // Stop opening connections; finish or abandon deliveries. Queued mail stays in the spool.
  void begin_shutdown() noexcept;
  bool drained() const noexcept;
  void stop() noexcept;  // hard stop on the shard's thread (runtime on_stop)

  // A reload: routes, relayhost, delivery port, retry schedule, lifetime, destination limits
  // and the connect timeout of `next` apply to deliveries and connections started from now;
  // jobs keep their attempts, and take the new retry delays at their next deferral.
  void update(std::shared_ptr<const relay_config> next) noexcept;

  // Operator actions (admin API), on the shard that owns the destination. `action` is one of
  // suspend, resume, flush, bounce. Returns a one-line JSON result, or "" for a bad action.
  std::string operate(std::string_view destination, std::string_view action);
  // The destinations this shard owns, as a JSON array (at most `count_max`).
  std::string destinations_json(std::size_t count_max) const;
  // This shard's queue summed over its destinations, one small JSON object: {"destinations",
  // "ready", "scheduled", "in_flight", "connections"}. For GET /status, which a monitor polls:
  // no per-destination tree is built (10,000 destinations made ~15 MB per poll, kept by the
  // allocator: docs/notes.md "Backlog at scale").
  std::string queue_totals_json() const;
  // The names of the live [[source]] table as a JSON array (the admin API addresses every
  // source's queue of a domain: egress.h queues_of).
  std::string egress_sources_json() const;
  // Whether this shard has queue state for the destination (the admin API's 404).
  bool knows(std::string_view destination) const;
  // Asked on the destination's owner: the shard holding its queue (itself, or the owner of
  // the MX site the destination was rolled up into).
  unsigned holder_of(std::string_view destination) const;
  // Queued jobs (at most `count_max`) of one destination, or of all when it is empty, as a
  // JSON array: message id, destination, state, recipients, attempts, next attempt, last reply.
  std::string jobs_json(std::string_view destination, std::size_t count_max) const;
  // A downgrade worker's result for one of this shard's deliveries (relay_downgrade.cc).
  void on_downgraded(std::unique_ptr<downgrade_result> result) noexcept;

  // Per-message operator actions (admin API, relay_actions.cc), on the message's HOME shard
  // (the one whose spool holds it): hold, release, delete, retry or bounce. Journals the
  // action in the spool (store::act; retry is not persistent) and hands it to the owners of
  // the message's destinations, which apply it in their message order (races with a
  // delivery in flight: docs/notes.md). Returns JSON {"id", "action", "found", "ticket"};
  // the API answers once action_state(ticket) is no longer "pending". `by`: who asked.
  std::string act_on_message(spool::message_id id, std::string_view action,
                             std::string_view reason, std::string_view by);
  // "pending", "ok", or the error that kept the action's journal record from the disk.
  std::string action_state(std::uint64_t ticket);
  // The spool reports a mark ticket: true when it was an action's.
  bool on_marked(std::uint64_t ticket, int error) noexcept;
  // Where a queued message's commit record is (the admin thread reads the message from the
  // segment files itself: no pread on the shard), as JSON, or "" when it is not queued here.
  std::string message_location_json(spool::message_id id) const;

  // shard::host_hook
  void before_wait() noexcept override;
  // outbound::delivery_handler
  void on_ready(outbound::connection_handle connection,
                std::uint64_t destination) noexcept override;
  void on_recipient_result(outbound::connection_handle connection, std::uint64_t destination,
                           const outbound::recipient_result& result) noexcept override;
  void on_delivery_done(outbound::connection_handle connection, std::uint64_t destination,
                        const outbound::delivery_result& result) noexcept override;
  void on_closed(outbound::connection_handle connection, std::uint64_t destination,
                 const outbound::close_result& result) noexcept override;

  struct state;  // defined in relay_internal.h

 private:
  std::unique_ptr<state> _state;
};

}  // namespace ringmta::server
