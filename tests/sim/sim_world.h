// sim::run: one seeded run of the simulated MTA (issue 16).
//
// A world of SMTP clients talks to the daemon's own inbound sessions (server::inbound_sessions,
// with the real smtp::server_session engine) on a simulated host (sim_host.h); each accepted
// message goes through the real spool::store on a simulated disk (sim_disk.h), the world
// being the store's driver; the 250 after the end of data is given only when the store
// reports the commit ticket durable. Delivered recipients are marked (store::mark). Crashes
// come at random moments; after each, the real spool::recover() reads the disk's durable
// image (from memory: disk::image()) and a new store (and a new process's sessions) continue
// from what it found.
//
// Invariants, checked at every step (a violation ends the run with its message):
// - no 250 to an end of data before the message's body and commit record are durable on the
//   simulated disk (name, size and bytes);
// - after a crash, every message answered 250 is recovered with its exact envelope and body,
//   every recipient durably marked delivered is still delivered, every recipient never marked
//   is still queued (at-least-once);
// - nothing is recovered that was never answered 250, except a message whose commit ticket
//   was issued and not answered 250: its commit was in flight at the crash, or it failed
//   (452) or its client had gone — the store may have made it durable all the same;
//   such a message is adopted (it must then survive later crashes);
// - the store keeps its bounds (buffered bytes, open messages) and keeps its promises
//   (append takes what can_append allowed);
// - once faults stop and clients are done, everything drains (no session left waiting, every
//   durable message handed on: one whose client left before its 250 too).
// Delivery: the daemon's own server::relay (src/server/relay*.cc) in the same process, over the
// real queue::scheduler, outbound and dns_client, delivers every durable message to simulated
// remote MTAs (sim_delivery.h: DNS, remote MTAs, the operator; its invariants are listed there).
// The same seed gives the same events and the same digest of the event log.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim_disk.h"

namespace ringmta::sim {

// A bug planted in the world's glue between the inbound sessions and the relay, to show the
// delivery invariants catch it. The relay's own bugs are not planted (no test hooks in
// production code): docs/simulation.md says how its mutations were checked by hand.
enum class glue_bug : std::uint8_t {
  none,
  deliver_refused,  // a recipient answered 550 at RCPT is routed all the same
};

struct options {
  std::uint64_t seed = 1;
  std::uint32_t messages = 300;  // transactions the clients attempt in all
  disk_bug bug = disk_bug::none;
  glue_bug glue = glue_bug::none;
  bool crashes = true;
  bool faults = true;
  bool verbose = false;          // print every event as it happens
  std::uint32_t arrival_ms = 0;  // mean time between client arrivals; 0: drawn from the seed
  bool ack_check = true;         // false: only recovery after crashes can find lost mail
  bool outbound = true;          // false: no relay, recipients marked at random
  bool shaping = true;           // false: no rates, reply rules or delay warnings drawn
  // The process's shards are drawn from 1..shards_max (1-3). Default 1, so that the regression
  // seeds replay the runs they were found in; CI's sim_search_shards searches 1-3.
  std::uint32_t shards_max = 1;
  // Replay of a failure: only events naming one of these tokens (message ids, connections)
  // are kept, all of them (sim_main.cc's shortest trace).
  std::vector<std::string> trace_filter;
};

struct outcome {
  bool ok = true;
  std::string violation;
  std::vector<std::string> last_events;  // the events before the violation, oldest first
  std::uint64_t digest = 0;              // FNV-1a of the whole event log
  std::uint64_t events = 0;
  std::int64_t simulated_ns = 0;
  std::uint64_t sessions = 0;
  std::uint64_t acknowledged = 0;        // 250 after end of data
  std::uint64_t refused = 0;             // 4xx/5xx after end of data
  std::uint64_t delivered_marks = 0;     // marks reported durable
  std::uint64_t crashes = 0;
  std::uint64_t recovered_checked = 0;   // acknowledged messages verified after crashes
  std::uint64_t adopted = 0;             // recovered though never answered 250 (in flight)
  std::uint64_t resurrected = 0;         // answered 452, gone, then back (docs/notes.md)
  std::vector<std::string> filtered_events;  // with trace_filter: the matching events
  // delivery (the relay's log, the remote MTAs: sim_delivery.cc)
  std::uint64_t remote_deliveries = 0;   // recipients accepted by remote MTAs (duplicates too)
  std::uint64_t duplicates = 0;          // of those, deliveries of a recipient seen before
  std::uint64_t bounces = 0;             // recipients bounced (5xx, expiry, operator)
  std::uint64_t dsns = 0;                // DSNs made durable in the spool
  std::uint64_t outbound_connections = 0;
  std::uint64_t tls_sessions = 0;  // remote connections that completed a TLS handshake
  std::uint64_t tls_broken = 0;    // STARTTLS handshakes a remote MTA broke (sim_tls.h)
  std::uint64_t tls_resumed = 0;   // of tls_sessions, abbreviated (the outbound's cache)
  std::uint64_t dns_queries = 0;
  std::uint64_t operator_actions = 0;
  std::uint64_t suspended_arrivals = 0;  // transactions at a suspended destination (in flight)
  std::uint64_t rate_checks = 0;         // transactions checked against a rate (sim_shaping.h)
  std::uint64_t rules_fired = 0;         // reply rules that paused a destination
  std::uint64_t rules_throttled = 0;     // reply rules that throttled one (sim_shaping.h)
  std::uint64_t throttle_checks = 0;     // connections checked against a throttle's limit
  std::uint64_t rule_bounces_checked = 0;    // recipients a bounce rule bounced, checked
  std::uint64_t restart_pauses_checked = 0;  // recipients held by a pause across a restart
  std::uint64_t delay_dsns = 0;          // "delayed" DSN recipients checked
  std::uint64_t deletions = 0;           // recipients the relay logged deleted (operator)
  std::uint64_t reasons_checked = 0;     // DSNs checked to name the operator's bounce reason
  std::uint64_t bodies_checked = 0;      // deliveries whose body was compared (BODY ALTERED)
  std::uint64_t relayhost_auths = 0;        // AUTHs the relay host accepted (sim_delivery.cc)
  std::uint64_t relayhost_auth_refused = 0;  // AUTHs it answered 535 or 454
  std::uint64_t tls_policy_checks = 0;  // RCPTs checked under a policy demanding TLS
  std::uint64_t tls_verify_checks = 0;  // of those, under `verify`
  std::uint64_t shared_site_checks = 0;  // of those, at another domain's MX host (shared site)
  std::uint64_t certificate_refusals_checked = 0;  // handshakes the client ended, checked
  std::uint64_t mx_set_changes = 0;  // a domain's MX set changed (sim_dns.h mx_change_plan)
  std::uint32_t shards = 1;               // the process's shards (1-3 per seed with the relay)
  std::uint64_t parcels_crossed = 0;      // jobs, outcomes, actions sent to another shard
  std::uint64_t parcels_refused = 0;      // a full pair queue: the relay's backlog kept them
  std::uint64_t accepts = 0;              // connections the daemon's acceptor took
  std::uint64_t accepts_failed = 0;       // accepts that failed EMFILE (the acceptor paused)
  std::uint64_t refused_at_limit = 0;     // clients given the acceptor's 421 (session limit)
  disk_stats disk;
};

outcome run(const options& settings);

}  // namespace ringmta::sim
