// server::relay: envelopes of waiting messages read back from the spool (issue 15, memory per
// queued message; docs/notes.md, "Envelopes read back from the spool").
// A message whose recipients went back to wait for a retry drops its packed envelope (evict),
// and a recovered one is never packed: the spool's commit record has every byte. Whoever needs
// it again waits for one read of that record through the home's ring (never a blocking pread
// on the shard): a delivery (its flight waits in flight_phase::reading, the connection
// reserved), outcome batches (log records and DSNs name the addresses), operator actions (the
// recipients say which destinations), a queue listing. Waiters of one message share the read
// and are served in arrival order; the read makes the message resident again until its next
// deferral. A failed read never loses mail: a delivery is deferred (451 4.3.0), outcomes are
// still applied to the spool (without their log records and DSNs: counted and logged).
#include <cstring>

#include <fmt/format.h>

#include "relay_internal.h"
#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"

namespace ringmta::server {

// ---- home: the packed envelope in and out of memory

namespace {

// A message is routed, and its deliveries started, within milliseconds of being packed when
// its destinations can take it; one still resident after this long waits for a backoff, a
// connection slot or a retry. Its delivery reads it back (one read; the spool's pages are
// likely still cached). Deliveries on the wire have their own copy meanwhile.
constexpr std::uint64_t resident_ms_max = 2000;
// Evictions per loop turn: a burst of a million routed messages must not stall the shard.
constexpr std::size_t evictions_per_turn = 4096;

}  // namespace

void relay::state::pack(spooled_message& message, const spool::envelope& envelope,
                        std::span<const spool::body_slice> body) noexcept {
  message.packed.pack(envelope, body);
  metrics.envelopes_resident.add(1);
  const std::uint64_t now = owner.now_ms();
  packed_order.push_back({message.id, now});
  if (!eviction_timer.armed()) owner.timers().schedule_at(eviction_timer, now + resident_ms_max);
}

void relay::state::evict_aged() noexcept {
  const std::uint64_t now = owner.now_ms();
  for (std::size_t done = 0;
       !packed_order.empty() && packed_order.front().ms + resident_ms_max <= now; ++done) {
    if (done == evictions_per_turn) return owner.timers().schedule_at(eviction_timer, now);
    // Gone (delivered), evicted already, or packed again later: evict() sorts that out (a
    // message packed again since goes early; its delivery's outcome then reads it once more).
    if (spooled_message* message = find_message(packed_order.front().id)) evict(*message);
    packed_order.pop_front();
  }
  if (!packed_order.empty())
    owner.timers().schedule_at(eviction_timer, packed_order.front().ms + resident_ms_max);
}

void relay::state::evict(spooled_message& message) noexcept {
  // Pinned: another shard is unpacking it this instant; it goes at the next deferral.
  if (message.packed.evict()) metrics.envelopes_resident.add(-1);
}

// ---- home: one read per message, its waiters served in order

void relay::state::wait_for_envelope(spooled_message& message, envelope_waiter waiter) noexcept {
  RINGMTA_ASSERT(!message.resident());
  if (message.packed.state() == envelope_state::reading)
    return join_read(message.id, std::move(waiter));
  int error = 0;
  envelope_read* const read = read_commit(message.id, read_purpose::envelope, error);
  if (read == nullptr) {  // its segment is gone (cannot happen while a recipient is open)
    metrics.envelope_read_failures.add();
    return serve(waiter, nullptr, error);
  }
  read->waiters.push_back(std::move(waiter));
  message.packed.set_reading();
  metrics.envelope_reads.add();
}

envelope_read* relay::state::read_commit(spool::message_id id, read_purpose purpose,
                                         int& error) noexcept {
  auto where = store.locate(id);
  if (!where) {
    error = where.error();
    return nullptr;
  }
  auto read = std::make_unique<envelope_read>();
  read->id = id;
  read->purpose = purpose;
  read->where = where.value();
  read->record.resize(read->where.bytes);
  envelope_read& started = *read;
  const std::uint32_t key = next_envelope_read++;
  envelope_reads.emplace(key, std::move(read));
  envelope_read_keys.emplace(id, key);
  if (!queue_envelope_read(key)) envelope_reads_unqueued.push_back(key);
  return &started;
}

void relay::state::join_read(spool::message_id id, envelope_waiter waiter) noexcept {
  const auto key = envelope_read_keys.find(id);
  RINGMTA_ASSERT(key != envelope_read_keys.end());
  envelope_reads.at(key->second)->waiters.push_back(std::move(waiter));
}

bool relay::state::queue_envelope_read(std::uint32_t key) noexcept {
  envelope_read& read = *envelope_reads.at(key);
  return static_cast<bool>(owner.io().prep_read(read.where.fd, read.record.data(),
                                                read.where.bytes, read.where.offset,
                                                io::pack_user_data(envelope_read_kind, 0, key)));
}

// Each loop turn: the reads a full submission queue refused go now, in order.
void relay::state::queue_envelope_reads() noexcept {
  std::size_t queued = 0;
  while (queued < envelope_reads_unqueued.size() &&
         queue_envelope_read(envelope_reads_unqueued[queued]))
    ++queued;
  envelope_reads_unqueued.erase(envelope_reads_unqueued.begin(),
                                envelope_reads_unqueued.begin() +
                                    static_cast<std::ptrdiff_t>(queued));
}

void relay::state::on_envelope_read_done(const io::completion& done) noexcept {
  on_envelope_read(done.tag().slot, done.res);
}

// `result`: bytes read or -errno. The record is checked (the spool's header, id and checksum)
// and decoded.
core::result<spool::stored_message> relay::state::parse_read(const envelope_read& read,
                                                             std::int32_t result) const {
  if (result < 0) return core::fail(-result);
  if (static_cast<std::uint32_t>(result) != read.where.bytes) return core::fail(EIO);
  return store.parse_commit(read.id, read.where, read.record);
}

// The message is packed again and its waiters are served (a recovery read: relay_home.cc).
void relay::state::on_envelope_read(std::uint32_t key, std::int32_t result) noexcept {
  const auto found = envelope_reads.find(key);
  RINGMTA_ASSERT(found != envelope_reads.end());
  const std::unique_ptr<envelope_read> read = std::move(found->second);
  envelope_reads.erase(found);
  envelope_read_keys.erase(read->id);
  if (read->purpose == read_purpose::recovery) return on_recovery_read(*read, result);
  spooled_message* const message = find_message(read->id);
  core::result<spool::stored_message> stored = core::fail(ENOENT);
  if (message != nullptr) stored = parse_read(*read, result);
  if (message != nullptr) {
    if (stored) {
      pack(*message, stored.value().envelope, stored.value().body);
    } else {
      message->packed.read_failed();
      metrics.envelope_read_failures.add();
      log.set_time(owner.wall_ms());
      log.record("envelope_read_failed")
          .field("id", std::string_view(spool::format_message_id(read->id).data(), 16))
          .field("error", stored.error_text());
    }
  }
  const spool::stored_message* value = stored ? &stored.value() : nullptr;
  for (auto& waiter : read->waiters) {
    // Every recipient final meanwhile (a DSN's marks landed): nothing is left to serve.
    if (message != nullptr && find_message(read->id) != message) break;
    // An earlier waiter may have evicted it again (a deferral's outcomes leave memory:
    // apply_outcomes), and the next one needs it: a delay warning's notice waiting behind the
    // same read aborted the daemon here (--delay-warning, test_delivery), packed from the read.
    if (message != nullptr && stored && !message->resident())
      pack(*message, stored.value().envelope, stored.value().body);
    serve(waiter, value, stored ? 0 : stored.error());
  }
}

void relay::state::serve(envelope_waiter& waiter, const spool::stored_message* stored,
                         int error) noexcept {
  if (auto* request = std::get_if<std::unique_ptr<envelope_request>>(&waiter)) {
    if ((*request)->listing) return;  // the listing asks again and finds it resident
    if (stored != nullptr) {
      (*request)->envelope = stored->envelope;
      (*request)->body = stored->body;
    }
    (*request)->error = stored != nullptr ? 0 : error;
    const unsigned to = (*request)->from;
    return send(to, shard::make_parcel<&on_envelope_reply_message>(std::move(*request),
                                                                    *config.shards));
  }
  if (auto* batch = std::get_if<std::unique_ptr<outcome_batch>>(&waiter)) {
    if (stored != nullptr) return record_outcomes(std::move(*batch));
    return outcomes_unrecorded(**batch);
  }
  // Unread: the journaled action is carried out after a restart (recovery reads the flags).
  const auto& action = std::get<pending_action>(waiter);
  if (stored != nullptr) send_actions(stored->envelope.id, stored->envelope, action);
  else actions_unsent.erase(action.ticket);
}

// No envelope to name the recipients with: the outcomes still reach the spool (a delivered
// recipient must not be delivered again, a deferred one keeps its retry time) without their
// log records (the failure is logged: on_envelope_read). A bounce is not marked: without the
// envelope there is no DSN, and a bounce is final only with its DSN (pending_dsn), so the
// recipient stays queued in the spool and is tried, and bounced, again after a restart.
void relay::state::outcomes_unrecorded(const outcome_batch& batch) noexcept {
  spooled_message* const message = find_message(batch.message->id);
  if (message != batch.message) return;
  outcome_batch kept;
  kept.message = batch.message;
  for (const auto& report : batch.reports)
    if (report.kind != outcome_kind::bounced) kept.reports.push_back(report);
  apply_outcomes(*message, kept);
}

// An owner's request: a resident envelope (a read by another waiter just finished) is
// answered at once.
void relay::state::serve_request(std::unique_ptr<envelope_request> request) noexcept {
  spooled_message* const message = find_message(request->id);
  // A flight's job is open: the message is alive. A listed job may have ended since.
  RINGMTA_ASSERT(request->listing || message == request->message);
  if (message != request->message) return;
  // A listing only wants it resident: a read under way does that already.
  if (request->listing && message->packed.state() != envelope_state::evicted) return;
  if (!message->resident()) return wait_for_envelope(*message, std::move(request));
  request->envelope = message->envelope();
  request->body = message->body();
  const unsigned to = request->from;
  send(to, shard::make_parcel<&on_envelope_reply_message>(std::move(request), *config.shards));
}

// ---- owner: a flight (or a listing) asks the message's home

void relay::state::request_envelope(spooled_message& message,
                                    std::optional<std::uint32_t> slot) noexcept {
  auto request = std::make_unique<envelope_request>();
  request->message = &message;
  request->id = message.id;
  request->from = peers.id();
  request->listing = !slot;
  if (slot) {
    in_flight& flight = *flights[*slot];
    RINGMTA_ASSERT(flight.phase == flight_phase::delivering && flight.message == &message);
    flight.phase = flight_phase::reading;
    request->flight = *slot;
    request->job = job_key(flight.job.id);
  }
  send(message.home,
       shard::make_parcel<&on_envelope_request_message>(std::move(request), *config.shards));
}

void relay::state::on_envelope_reply(std::unique_ptr<envelope_request> reply) noexcept {
  const std::uint32_t slot = reply->flight;
  const bool ours = slot < flights.size() && flights[slot]->phase == flight_phase::reading &&
                    job_key(flights[slot]->job.id) == reply->job;
  RINGMTA_ASSERT(ours);  // nothing else ends a reading flight
  in_flight& flight = *flights[slot];
  flight.phase = flight_phase::delivering;
  if (reply->error != 0 || shutting_down) {  // stopping: the message stays in the spool
    const auto connection = flight.connection;
    const std::uint64_t cookie = flight.cookie;
    smtp::parsed_reply failed;
    failed.assign_local(451, {4, 3, 0},
                        shutting_down ? std::string("shutting down")
                                      : fmt::format("cannot read the envelope from the spool: {}",
                                                    std::strerror(reply->error)));
    fail_locally(slot, failed, outcome_kind::deferred);
    if (!shutting_down && out.can_deliver(connection)) self.on_ready(connection, cookie);
    return;
  }
  flight.body = std::move(reply->body);
  continue_delivery(slot, reply->envelope);
}

// ---- cross-shard messages

void relay::state::on_envelope_request_message(
    shard::mesh& target, std::vector<relay*>& shards,
    std::unique_ptr<envelope_request> request) noexcept {
  shards[target.id()]->_state->serve_request(std::move(request));
}

void relay::state::on_envelope_reply_message(shard::mesh& target, std::vector<relay*>& shards,
                                             std::unique_ptr<envelope_request> reply) noexcept {
  shards[target.id()]->_state->on_envelope_reply(std::move(reply));
}

}  // namespace ringmta::server
