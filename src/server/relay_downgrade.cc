// server::relay: 8-bit mail to a next hop without 8BITMIME (RFC 6152 §3). The delivery's
// slot waits in flight_phase::converting while a downgrade worker (server/downgrade.h) reads
// and converts the body; the connection stays reserved for it (it reported on_ready and got
// nothing yet). The result comes back on this shard: a 7-bit body goes out as a memfd slice,
// a refusal bounces 554 5.6.3 with its reason, a failure defers 451 4.3.0.
#include <cstring>

#include <fmt/format.h>

#include "relay_internal.h"
#include "ringmta/core/assert.h"

namespace ringmta::server {
bool relay::state::request_downgrade(std::uint32_t slot) noexcept {
  if (!live->mime_downgrade || config.downgrader == nullptr) return false;  // engine: 5.6.3
  in_flight& flight = *flights[slot];
  auto request = std::make_unique<downgrade_request>();
  request->shard = peers.id();
  request->flight = slot;
  request->job = job_key(flight.job.id);
  const bool duplicated = duplicate_body(flight.body, *request);
  const int error = errno;
  if (!duplicated || !config.downgrader->submit(std::move(request))) {
    smtp::parsed_reply reply;
    reply.assign_local(451, {4, 3, 0},
                       duplicated ? std::string("7-bit conversion queue full, try again later")
                                  : fmt::format("cannot convert the message to 7 bits: {}",
                                                std::strerror(error)));
    const auto connection = flight.connection;
    fail_locally(slot, reply, outcome_kind::deferred);
    out.release(connection);  // its next job would meet the same wall
    return true;
  }
  flight.phase = flight_phase::converting;
  metrics.downgrades_requested.add();
  return true;
}

void relay::on_downgraded(std::unique_ptr<downgrade_result> result) noexcept {
  auto& s = *_state;
  const bool ours = result->flight < s.flights.size() &&
                    s.flights[result->flight]->phase == flight_phase::converting &&
                    job_key(s.flights[result->flight]->job.id) == result->job;
  if (!ours || s.shutting_down) {  // stopping: the message stays in the spool for next time
    if (result->fd >= 0) ::close(result->fd);
    if (ours) {
      smtp::parsed_reply reply;
      reply.assign_local(451, {4, 3, 0}, "shutting down");
      s.fail_locally(result->flight, reply, outcome_kind::deferred);
    }
    return;
  }
  const std::uint32_t slot = result->flight;
  in_flight& flight = *s.flights[slot];
  const auto connection = flight.connection;
  const std::uint64_t cookie = flight.cookie;
  s.log.set_time(s.owner.wall_ms());
  s.log.record("downgrade").field("id", fmt::format("{:016x}", flight.message->id))
      .field("session", flight.session).field("outcome", result->reason())
      .field("bytes", result->bytes);
  smtp::parsed_reply reply;
  switch (result->outcome) {
    case downgrade_outcome::converted:
      s.metrics.downgrades_converted.add();
      flight.converted = {result->fd, 0, static_cast<std::uint32_t>(result->bytes)};
      flight.converted_envelope = flight.storage.envelope();
      flight.converted_envelope.body = smtp::client_body_type::seven_bit;
      flight.converted_envelope.size_bytes = result->bytes;
      return s.hand_off(slot, flight.converted_envelope, {&flight.converted, 1});
    case downgrade_outcome::unchanged:  // labelled 8-bit, but nothing 8-bit in it
      flight.converted_envelope = flight.storage.envelope();
      flight.converted_envelope.body = smtp::client_body_type::seven_bit;
      return s.hand_off(slot, flight.converted_envelope, flight.body);
    case downgrade_outcome::refused:
    case downgrade_outcome::signed_message:
    case downgrade_outcome::too_large:
      s.metrics.downgrades_refused.add();
      // RFC 6152 §3 and RFC 3463 X.6.3: conversion required but not supported.
      reply.assign_local(554, {5, 6, 3},
                         fmt::format("8-bit message, the server does not offer 8BITMIME, and "
                                     "the message cannot be converted to 7 bits: {}",
                                     result->reason()));
      s.fail_locally(slot, reply, outcome_kind::bounced);
      break;
    case downgrade_outcome::failed:
      reply.assign_local(451, {4, 3, 0}, fmt::format("cannot convert the message to 7 bits: {}",
                                                     std::strerror(result->error)));
      s.fail_locally(slot, reply, outcome_kind::deferred);
      break;
  }
  if (s.out.can_deliver(connection)) on_ready(connection, cookie);  // the next job, if any
}

}  // namespace ringmta::server
