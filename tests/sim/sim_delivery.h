// sim::internal::delivery: the world on the delivery side of the simulated MTA (issue 16), and
// the checks of what the daemon's relay does there.
//
// The process delivers through the daemon's own server::relay (src/server/relay*.cc: jobs to
// connections, outcomes to marks, DSNs), built by sim_world.cc on the process's host over its
// real spool::store, with the real outbound::outbound and dns_client inside. This file is what
// lies outside that process: the simulated DNS server (ldns-built answers: MX, implicit MX,
// null MX, NXDOMAIN; lost queries and SERVFAIL at seeded rates, random TTLs), the remote MTAs
// (real smtp::server_sessions answering 2xx/4xx/5xx at random per command, refusing, dropping
// and stalling connections, offering or withholding extensions and STARTTLS), their mailboxes
// (the oracle), the operator (suspend/resume, hold/release, bounce, flush, reload through the
// relay's admin entry points) and the relay's settings as the seed draws them.
//
// Invariants (each a violation with its message):
// - UNDELIVERED: at the end (faults healed, everything drained, a last restart), every
//   recipient of every durable message was delivered to its remote MTA, or bounced with a
//   DSN that was made durable and then delivered to the sender's MTA or bounced itself (the
//   relay's log says so: RFC 3464 §4, no DSN about a DSN), or no DSN was due (sender <>,
//   NOTIFY=NEVER: queue::should_send_dsn);
// - DUPLICATE: no recipient is delivered again after a recovery found its final state
//   (redelivery is allowed only for deliveries in flight at a crash, or whose reply was lost);
// - REFUSED RECIPIENT: no remote MTA ever sees a recipient our server refused 5xx at RCPT;
// - CONNECTION LIMIT: connections open to a destination's MTAs never exceed its
//   connections_max (the limit in force, or the one a connection still open was opened under);
// - RATE LIMIT, PAUSE IGNORED (sim_shaping.h): transactions within each destination's token
//   bucket (a reply rule's throttle's while it holds); none new while a reply rule's pause
//   holds, and after a restart none recovered deferred to its end before the end;
// - RULE MISAPPLIED, BOUNCE RULE IGNORED/MISAPPLIED, DELIVERED AFTER BOUNCE: a reply rule acts
//   on the destinations it names (domain or MX pattern); a bounce rule bounces the recipients
//   a matching reply was about, and no others; nothing the relay logged bounced is delivered
//   later in the same process;
// - DELAY DSN: a "delayed" DSN only for a recipient whose sender asked for it, not after the
//   relay logged it delivered or a recovery found it final, once per process;
// - UNAUTHENTICATED RELAY, RELAYHOST BYPASSED, AUTH BOUNCED (a quarter of the seeds send all
//   mail to a relay host with STARTTLS and AUTH, RFC 4954): MAIL there only after AUTH with
//   the configured credentials, credentials only under TLS unless relayhost_auth_plaintext;
//   no connection to any other MTA; an AUTH refusal (535, 454) defers, it bounces only at the
//   end of the message's lifetime;
// - TLS POLICY BYPASSED, UNVERIFIED TLS, TLS BOUNCED (TLS policies, also at an MX site shared
//   by two domains: the recipient's domain's policy), VERIFIED WITHOUT VERIFY (a connection
//   the relay opened after a reload weakened `verify` never refuses a certificate);
// - LIVENESS (sim_world.cc): once faults are healed the queue drains within a bounded
//   simulated time, and the last restart finds nothing queued.
// Never: reads a clock or draws from the world's random stream (its own stream, one seed).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringmta/server/relay.h"
#include "sim_host.h"
#include "sim_world_internal.h"

namespace ringmta::sim::internal {

class delivery {
 public:
  delivery(world& owner, std::uint64_t seed);
  ~delivery();
  delivery(const delivery&) = delete;
  delivery& operator=(const delivery&) = delete;

  // The process host's network: stream connects reach the remote MTAs, datagrams the DNS
  // server.
  sim_network network();
  // The relay's settings in force (the seed's, then the operator's reloads; suspended
  // destinations as the daemon keeps them across a restart: suspended_at_start).
  server::relay_config relay_config(std::vector<server::relay*>& relays);
  // A new process's relay, started (null at a crash: the operator waits for the next one).
  void attach(server::relay* relay);
  // A durable message the process must deliver (a client's, or a DSN the relay spooled).
  void on_message(spool::message_id id, const expected_message& message);
  // After a recovery: recipients found final must never be delivered again (DUPLICATE).
  void on_recovered(const std::vector<const spool::store*>& stores);
  // One record of the process's log (the relay's delivered/bounced/dsn_queued lines).
  void on_log_record(std::string_view line);
  // An operator action's journal record was synced (relay::on_marked took its ticket): the
  // API's poll of it would answer now.
  void on_action_durable();
  // Faults stop (remotes and DNS answer, holds and suspensions lifted, queues flushed).
  void heal();
  // Empty when the delivery side is idle; else what is still going on.
  std::string busy_reason(const std::vector<const spool::store*>& stores) const;
  // The final invariant (UNDELIVERED), after the last restart.
  void check_final(const std::vector<const spool::store*>& stores);

 private:
  struct state;
  std::unique_ptr<state> _state;
};

}  // namespace ringmta::sim::internal
