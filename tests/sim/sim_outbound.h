// sim::internal::outbound: the delivery side of the simulated MTA (issue 16, second slice).
//
// Real engines: queue::scheduler decides what to deliver and when (retry schedule, lifetime
// expiry, destination backoff, connection limits, operator actions); the REAL src/outbound
// (outbound::outbound over outbound::dns_client, on a sim_host: sim_host.h) resolves each
// destination from the wire bytes of a simulated DNS server (ldns builds its replies; queries
// are lost or answered SERVFAIL at random) and speaks SMTP to its remote MTAs over simulated
// TCP; queue::build_dsn writes the DSNs, which are committed to the real spool::store as new
// messages from <>. Each remote MTA is a real smtp::server_session whose handler answers
// 2xx/4xx/5xx at random per command and offers or withholds PIPELINING, 8BITMIME, SIZE,
// CHUNKING; the network between them refuses, drops connections and stalls past the client's
// timeouts. This file is the queue's side of the glue (what src/server/relay*.cc does in the
// daemon: jobs to connections, results to marks, bounces to DSNs); it is a second copy of
// that until src/server runs on a simulated host too.
//
// Invariants (each a violation with its message):
// - UNDELIVERED: at the end (faults healed, everything drained, a last restart), every
//   recipient of every durable message was delivered to its remote MTA, or bounced with a
//   DSN that was made durable and then delivered to (or refused 5xx by) the sender's MTA, or
//   bounced without a DSN because none is due (sender <>, NOTIFY=NEVER: queue::should_send_dsn);
// - DUPLICATE: no recipient is delivered again after its final state was durably recorded
//   (duplicates are allowed only for deliveries in flight at a crash or whose reply was lost);
// - REFUSED RECIPIENT: no remote MTA ever sees a recipient our server refused 5xx at RCPT;
// - CONNECTION LIMIT: open connections per destination never exceed its connections_max;
// - LIVENESS: once faults are healed the queue drains within a bounded simulated time.
// Never: reads a clock or draws from the world's random stream (its own stream, one seed).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "sim_world_internal.h"

namespace ringmta::sim::internal {

class outbound {
 public:
  outbound(world& owner, std::uint64_t seed);
  ~outbound();
  outbound(const outbound&) = delete;
  outbound& operator=(const outbound&) = delete;

  // A message reported durable (answered 250 or not): deliver it.
  void enqueue(spool::message_id id, const expected_message& message);
  // After recovery: every queued message of the new store, read back through store::read.
  void recovered(spool::store& store);
  // Power loss: the process state (scheduler, resolver, connections, pending DSNs) is gone;
  // the remote MTAs and their mailboxes are other machines and stay.
  void crash();
  // Faults stop (remotes and DNS answer, operator holds lifted): everything must drain.
  void heal();
  bool owns_ticket(std::uint64_t ticket) const;
  void on_committed(const spool::event& event);
  void on_mark_durable(spool::message_id id, std::uint16_t recipient);
  // The store completed something: retry DSNs and marks that waited for room.
  void on_completions();
  bool idle() const;
  std::string busy_reason() const;
  // The final invariant (UNDELIVERED), after the last restart.
  void check_final(spool::store& store);

 private:
  struct state;
  std::unique_ptr<state> _state;
};

}  // namespace ringmta::sim::internal
