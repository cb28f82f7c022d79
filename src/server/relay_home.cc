// server::relay, home role: routes this shard's spooled messages to the shards that own their
// destinations, records every recipient's outcome in the spool, and spools DSNs for bounces.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "relay_internal.h"
#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"

namespace ringmta::server {

namespace {

const char* event_name(outcome_kind kind) noexcept {
  switch (kind) {
    case outcome_kind::delivered: return "delivered";
    case outcome_kind::deferred: return "deferred";
    case outcome_kind::bounced: return "bounced";
    case outcome_kind::delayed: return "delayed";
    case outcome_kind::deleted: return "deleted";
  }
  return "?";
}

// A retry time as the journal and the log keep it: whole seconds, rounded up — recorded early,
// a restart would send mail up to a second before a reply rule's pause ends (ringmta-sim seed
// 7 --shards-max 3).
std::int64_t retry_seconds(std::int64_t ms) noexcept { return (ms + 999) / 1000; }

}  // namespace

// packed_message's encoding (relay_internal.h): first the body slices (count, then fd, length
// and offset of each), then the envelope: a flags byte (below), the reverse path, SIZE and
// ENVID when present, the recipient count, and per recipient notify·2 + (ORCPT present), its
// address and its ORCPT. Numbers and lengths are LEB128 varints (7 bits a byte, low first).
namespace {
namespace packing {

// The envelope's flags byte: body type (2 bits), RET (2 bits), SMTPUTF8, ENVID and SIZE present.
constexpr unsigned ret_shift = 2;
constexpr std::uint8_t smtputf8 = 1 << 4, has_envid = 1 << 5, has_size = 1 << 6;

void put_varint(std::string& out, std::uint64_t value) {
  for (; value >= 0x80; value >>= 7) out.push_back(static_cast<char>(value | 0x80));
  out.push_back(static_cast<char>(value));
}

void put_text(std::string& out, std::string_view text) {
  put_varint(out, text.size());
  out.append(text);
}

// Reads what pack() wrote; the bytes are our own and immutable, so no bounds to check.
struct reader {
  const char* at;
  std::uint64_t varint() noexcept {
    std::uint64_t value = 0;
    for (unsigned shift = 0;; shift += 7) {
      const auto byte = static_cast<std::uint8_t>(*at++);
      value |= std::uint64_t{byte & 0x7fu} << shift;
      if (byte < 0x80) return value;
    }
  }
  std::string_view text() noexcept {
    const auto size = static_cast<std::size_t>(varint());
    at += size;
    return {at - size, size};
  }
  void skip_body() noexcept {
    for (std::uint64_t values = varint() * 3; values > 0; --values) varint();
  }
};

}  // namespace packing
}  // namespace

void packed_message::pack(const spool::envelope& envelope,
                          std::span<const spool::body_slice> body) {
  // The encoding grows a string: one per thread, reused, keeps that off the per-message path.
  thread_local std::string bytes;
  bytes.clear();
  packing::put_varint(bytes, body.size());
  for (const auto& slice : body) {
    // An fd as its 32 bits (-1 stays exact); a real one is small: one byte.
    packing::put_varint(bytes, static_cast<std::uint32_t>(slice.fd));
    packing::put_varint(bytes, slice.length);
    packing::put_varint(bytes, slice.offset);
  }
  bytes.push_back(static_cast<char>(
      static_cast<unsigned>(envelope.body) |
      static_cast<unsigned>(envelope.ret) << packing::ret_shift |
      (envelope.smtputf8 ? packing::smtputf8 : 0) |
      (envelope.envid.empty() ? 0 : packing::has_envid) |
      (envelope.size_declared == 0 ? 0 : packing::has_size)));
  packing::put_text(bytes, envelope.reverse_path);
  if (envelope.size_declared != 0) packing::put_varint(bytes, envelope.size_declared);
  if (!envelope.envid.empty()) packing::put_text(bytes, envelope.envid);
  packing::put_varint(bytes, envelope.recipients.size());
  for (const auto& recipient : envelope.recipients) {
    packing::put_varint(bytes, std::uint64_t{recipient.notify} << 1 | !recipient.orcpt.empty());
    packing::put_text(bytes, recipient.address);
    if (!recipient.orcpt.empty()) packing::put_text(bytes, recipient.orcpt);
  }
  RINGMTA_ASSERT(state() != envelope_state::resident);
  char* const stored = new char[bytes.size()];
  std::memcpy(stored, bytes.data(), bytes.size());
  const auto address = reinterpret_cast<std::uintptr_t>(stored);
  RINGMTA_ASSERT((address & pin_mask) == 0);  // the low bits count pins
  _word.store(address, std::memory_order_release);  // pins acquire it: they see the bytes
}

envelope_state packed_message::state() const noexcept {
  const std::uintptr_t word = _word.load(std::memory_order_acquire);
  if ((word & ~pin_mask) != 0) return envelope_state::resident;
  return word == reading_word ? envelope_state::reading : envelope_state::evicted;
}

bool packed_message::evict() noexcept {
  std::uintptr_t word = _word.load(std::memory_order_relaxed);
  if ((word & ~pin_mask) == 0 || (word & pin_mask) != 0) return false;
  // acquire: a pin released just before (release) has finished reading the bytes.
  if (!_word.compare_exchange_strong(word, 0, std::memory_order_acq_rel)) return false;
  delete[] reinterpret_cast<char*>(word);
  return true;
}

void packed_message::set_reading() noexcept {
  RINGMTA_ASSERT(state() == envelope_state::evicted);
  _word.store(reading_word, std::memory_order_relaxed);
}

void packed_message::read_failed() noexcept {
  RINGMTA_ASSERT(state() == envelope_state::reading);
  _word.store(0, std::memory_order_relaxed);
}

void packed_message::release() noexcept {
  const std::uintptr_t word = _word.exchange(0, std::memory_order_acq_rel);
  RINGMTA_ASSERT((word & pin_mask) == 0 || (word & ~pin_mask) == 0);
  if ((word & ~pin_mask) != 0) delete[] reinterpret_cast<char*>(word);
}

packed_message& packed_message::operator=(packed_message&& other) noexcept {
  if (this == &other) return *this;
  release();
  _word.store(other._word.exchange(0, std::memory_order_acq_rel), std::memory_order_release);
  return *this;
}

packed_message::pin::pin(const packed_message& packed) noexcept {
  std::uintptr_t word = packed._word.load(std::memory_order_acquire);
  for (;;) {  // a full count (7) is no pin: the caller asks the home, as for an evicted one
    if ((word & ~pin_mask) == 0 || (word & pin_mask) == pin_mask) return;
    if (packed._word.compare_exchange_weak(word, word + 1, std::memory_order_acquire))
      break;
  }
  _packed = &packed;
}

packed_message::pin::~pin() {
  if (_packed != nullptr) _packed->_word.fetch_sub(1, std::memory_order_release);
}

const char* packed_message::data() const noexcept {
  const std::uintptr_t word = _word.load(std::memory_order_acquire);
  RINGMTA_ASSERT((word & ~pin_mask) != 0);
  return reinterpret_cast<const char*>(word & ~pin_mask);
}

spool::envelope packed_message::envelope(spool::message_id id,
                                         std::int64_t received_seconds) const {
  spool::envelope out;
  decode(out);
  out.id = id;
  out.received_seconds = received_seconds;
  return out;
}

const char* packed_message::decode(spool::envelope& out) const {
  packing::reader in{data()};
  in.skip_body();
  const auto flags = static_cast<std::uint8_t>(*in.at++);
  out.body = static_cast<spool::body_type>(flags & 3);
  out.ret = static_cast<spool::dsn_return>(flags >> packing::ret_shift & 3);
  out.smtputf8 = (flags & packing::smtputf8) != 0;
  out.reverse_path = in.text();
  if ((flags & packing::has_size) != 0) out.size_declared = in.varint();
  if ((flags & packing::has_envid) != 0) out.envid = in.text();
  out.recipients.resize(static_cast<std::size_t>(in.varint()));
  for (auto& recipient : out.recipients) {
    const std::uint64_t notify_orcpt = in.varint();
    recipient.notify = static_cast<std::uint8_t>(notify_orcpt >> 1);
    recipient.address = in.text();
    if ((notify_orcpt & 1) != 0) recipient.orcpt = in.text();
  }
  return in.at;
}

std::vector<spool::body_slice> packed_message::body() const {
  packing::reader in{data()};
  std::vector<spool::body_slice> out(static_cast<std::size_t>(in.varint()));
  for (auto& slice : out) {
    slice.fd = static_cast<int>(static_cast<std::uint32_t>(in.varint()));
    slice.length = static_cast<std::uint32_t>(in.varint());
    slice.offset = in.varint();
  }
  return out;
}

std::size_t packed_message::bytes() const {
  if (state() != envelope_state::resident) return 0;
  spool::envelope scratch;  // the walk that knows where the encoding ends (only tests ask)
  return static_cast<std::size_t>(decode(scratch) - data());
}

void spooled_message::set_received(std::int64_t ms, std::int64_t envelope_seconds) noexcept {
  // Both come from the wall clock (recovered: `ms` is the envelope's second), so the lag is a
  // few seconds at most, either way if the clock stepped. A step of more than 12 days between
  // the envelope and the 250 moves `ms` to the lag's bound: the arrival second stays exact (the
  // expiry and the DSN use it), only the log's delay of such a message counts from there.
  const std::int64_t lag = std::clamp(ms / 1000 - envelope_seconds, -spooled_lag_seconds_max,
                                      spooled_lag_seconds_max);
  if (ms / 1000 - envelope_seconds != lag) ms = (envelope_seconds + lag) * 1000;
  received_ms_bits = ms;
  received_lag_seconds = lag;
  RINGMTA_ASSERT(received_ms() == ms && received_seconds() == envelope_seconds);
}

spooled_message* relay::state::find_message(spool::message_id id) noexcept {
  const std::uint32_t index = message_ids.find(id);
  return index != message_ids.none ? &messages.at(index) : nullptr;
}

void relay::state::forget_message(const spooled_message& message) noexcept {
  if (message.resident()) metrics.envelopes_resident.add(-1);
  const std::uint32_t index = message_ids.erase(message.id);
  RINGMTA_ASSERT(&messages.at(index) == &message);
  messages.release(index);
}

// The message lives in the slab (slots do not move: jobs point to it).
spooled_message& relay::state::add_message(const spool::envelope& envelope,
                                           std::span<const spool::body_slice> body,
                                           std::uint64_t body_bytes,
                                           std::int64_t received_ms, bool resident) noexcept {
  // Ids are unique: a second one would free what jobs point to.
  RINGMTA_ASSERT(find_message(envelope.id) == nullptr);
  const std::uint32_t index = messages.allocate();
  spooled_message& message = messages.at(index);
  message.id = envelope.id;
  message_ids.insert(index);
  RINGMTA_ASSERT(peers.id() <= spool::message_id_shard_max);
  message.home = peers.id();
  if (resident) pack(message, envelope, body);
  RINGMTA_ASSERT(body_bytes < spooled_body_bytes_limit);
  message.body_bytes = body_bytes;
  message.set_received(received_ms, envelope.received_seconds);
  return message;
}

void relay::state::route(const spool::envelope& envelope,
                         std::span<const spool::body_slice> body, std::string_view pool) {
  std::uint64_t body_bytes = 0;
  for (const auto& slice : body) body_bytes += slice.length;
  spooled_message& message =
      add_message(envelope, body, body_bytes, owner.wall_ms());
  route_recipients(message, envelope, nullptr, 0, pool);
}

// The pool: a trusted X-Ringmta-Pool naming a known pool, else the sender domain's, else
// "default" (egress.h). After a restart the header's choice comes from the spool
// (stored_message::pool; route_recovered).
std::string relay::state::egress_name(const spooled_message& message, std::string_view sender,
                                      std::string destination, std::string_view pool) noexcept {
  const egress_table& egress = *live->egress;
  if (picker_table != &egress) {
    picker.reset(egress);
    picker_table = &egress;
  }
  std::optional<std::uint32_t> chosen = pool.empty() ? std::nullopt : egress.pool_named(pool);
  if (!chosen) {
    const auto at = sender.rfind('@');
    chosen = egress.pool_for_sender(
        at == std::string_view::npos ? std::string() : destination_of(sender, config.hostname));
    if (!pool.empty()) {
      log.set_time(owner.wall_ms());
      log.record("pool_unknown")
          .field("id", std::string_view(spool::format_message_id(message.id).data(), 16))
          .field("pool", pool)
          .field("used", chosen ? std::string_view(egress.pools()[*chosen].name) : "none")
          .end();
    }
  }
  if (!chosen) return destination;
  const auto source = picker.pick(egress, *chosen);
  return egress_destination(destination, egress.sources()[source].name);
}

// Start-up: every queued message of this shard's spool goes back to its destinations' queues
// with its recipients' attempts and retry times, oldest first. Each needs its commit record
// (the recipients' addresses): read through the ring, a bounded number at a time, and routed as
// the reads complete. With a million queued, routing them all before the first greeting took
// 20 s, and one pread each on the shard thread blocked its sessions on every cold page
// (bench/README.md, docs/notes.md "Recovery reads through the ring").
void relay::state::recover() noexcept {
  store.for_each_message([&](const spool::message_entry& entry) {
    if (entry.status == spool::message_status::queued) recovering.push_back(entry.id);
  });
  std::sort(recovering.begin(), recovering.end());
  recovering_next = 0;
  recovering_since_ms = owner.wall_ms();
  recover_more();
}

void relay::state::recover_more() noexcept {
  // Enough to keep a disk's queue busy on a cold start (each read is one small record) and to
  // route ~64 messages per loop turn on a warm one; few enough that a loop turn's routing stays
  // short for the shard's sessions.
  constexpr std::uint32_t reads_max = 64;
  while (recovery_reads < reads_max && recovering_next < recovering.size() && !shutting_down)
    read_recovered(recovering[recovering_next++]);
  if (recovery_reads > 0 || recovering.empty()) return;  // more to come, or nothing to report
  const std::int64_t now = owner.wall_ms();
  log.set_time(now);
  log.record("queue_recovered")
      .field("messages", static_cast<std::uint64_t>(recovering_next))
      .seconds_field("took", now - recovering_since_ms);
  std::vector<spool::message_id>().swap(recovering);
  recovering_next = 0;
}

// Starts the read of a queued message not routed yet (false: routed already, under way, final
// meanwhile, or its record cannot be located: logged, it stays in the spool).
bool relay::state::read_recovered(spool::message_id id) noexcept {
  if (find_message(id) != nullptr || envelope_read_keys.count(id) != 0) return false;
  const spool::message_entry* entry = store.find(id);
  if (entry == nullptr || entry->status != spool::message_status::queued) return false;
  int error = 0;
  if (read_commit(id, read_purpose::recovery, error) == nullptr) {
    log_read_failed(id, std::strerror(error));
    return false;
  }
  ++recovery_reads;
  return true;
}

// A queued message recovery could not read: it stays in the spool (the next start tries again).
void relay::state::log_read_failed(spool::message_id id, std::string_view error) noexcept {
  log.set_time(owner.wall_ms());
  log.record("spool_read_failed")
      .field("id", std::string_view(spool::format_message_id(id).data(), 16))
      .field("error", error);
}

// An operator action names an id not routed yet: its read starts now (unless under way) and
// the action waits for it (join_read), as for an evicted envelope (relay_actions.cc).
bool relay::state::recover_one(spool::message_id id) noexcept {
  if (envelope_read_keys.count(id) == 0) {
    const auto rest = recovering.begin() + static_cast<std::ptrdiff_t>(recovering_next);
    if (!std::binary_search(rest, recovering.end(), id) || !read_recovered(id)) return false;
  }
  envelope_read& read = *envelope_reads.at(envelope_read_keys.at(id));
  RINGMTA_ASSERT(read.purpose == read_purpose::recovery);
  const spool::message_entry* entry = store.find(id);
  if (!read.flags && entry != nullptr) read.flags = entry->flags;  // before the action's
  return true;
}

// A recovery read completed: the message is routed (not while shutting down: it stays in the
// spool), the actions that waited for it are sent, and the next reads start.
void relay::state::on_recovery_read(envelope_read& read, std::int32_t result) noexcept {
  RINGMTA_ASSERT(recovery_reads > 0);
  --recovery_reads;
  auto stored = parse_read(read, result);
  const spool::message_entry* entry = store.find(read.id);
  const bool routable = stored && !shutting_down && find_message(read.id) == nullptr &&
                        entry != nullptr && entry->status == spool::message_status::queued;
  if (!stored) {
    log_read_failed(read.id, stored.error_text());
  } else if (routable) {
    route_recovered(read, stored.value(), *entry);
  }
  for (auto& waiter : read.waiters) {  // operator actions; unsent ones are journaled already
    RINGMTA_ASSERT(std::holds_alternative<pending_action>(waiter));
    serve(waiter, routable && find_message(read.id) != nullptr ? &stored.value() : nullptr,
          stored ? ENOENT : stored.error());
  }
  recover_more();
}

void relay::state::route_recovered(const envelope_read& read, spool::stored_message& stored,
                                   const spool::message_entry& entry) noexcept {
  spool::envelope& envelope = stored.envelope;
  envelope.id = read.id;
  // Not kept packed: recovering millions must not hold millions of envelopes; a delivery
  // reads it back when its job's time comes (relay_envelopes.cc).
  spooled_message& message = add_message(envelope, stored.body, stored.body_bytes,
                                         envelope.received_seconds * 1000, false);
  route_recipients(message, envelope, &entry, read.flags.value_or(entry.flags), stored.pool);
}

// Groups the open recipients by destination (and, after a restart, by their retry state) and
// hands each group to the destination's owner.
void relay::state::route_recipients(spooled_message& message, const spool::envelope& envelope,
                                    const spool::message_entry* recovered,
                                    std::uint8_t flags, std::string_view pool) noexcept {
  using key = std::tuple<std::string, std::uint16_t, std::int64_t>;
  std::map<key, std::vector<std::uint16_t>> groups;
  const auto& recipients = envelope.recipients;
  for (std::size_t i = 0; i < recipients.size(); ++i) {
    std::uint16_t attempts = 0;
    std::int64_t not_before_ms = 0;
    if (recovered != nullptr && i < recovered->recipients.size()) {
      const auto& status = recovered->recipients[i];
      if (spool::is_final(status.state)) continue;
      attempts = static_cast<std::uint16_t>(std::min<std::uint32_t>(status.attempts, 0xffff));
      if (status.state == spool::recipient_state::deferred)
        not_before_ms = status.next_attempt_seconds * 1000;
    }
    groups[{destination_of(recipients[i].address, config.hostname), attempts, not_before_ms}]
        .push_back(static_cast<std::uint16_t>(i));
  }
  if (has_pools()) {  // each destination's queue leaves from its pool's next source
    decltype(groups) named;
    for (auto& [group, indices] : groups)
      named[{egress_name(message, envelope.reverse_path, std::get<0>(group), pool),
             std::get<1>(group), std::get<2>(group)}] = std::move(indices);
    groups = std::move(named);
  }
  const unsigned shards = static_cast<unsigned>(config.shards->size());
  for (auto& [group, indices] : groups) {
    // Fits: a message has at most spool::envelope_recipients_max (65,535) recipients.
    const std::size_t open = message.recipients_open + indices.size();
    RINGMTA_ASSERT(open <= UINT16_MAX);
    message.recipients_open = static_cast<std::uint16_t>(open);
    metrics.routed_recipients.add(indices.size());
    // Recovered operator actions travel with the job: held mail is never tried, a pending
    // bounce is carried out (a deleted message is final at recovery and never gets here).
    const auto carried = static_cast<std::uint8_t>(
        flags & (spool::message_flag_held | spool::message_flag_bounce));
    std::unique_ptr<routed_job> job(new routed_job{&message, std::get<0>(group),
                                                   std::move(indices), std::get<1>(group),
                                                   std::get<2>(group), carried});
    if ((carried & spool::message_flag_bounce) != 0)
      job->bounce_reason = store.bounce_reason(message.id);
    const unsigned to = owner_of(job->destination, shards);
    send(to, shard::make_parcel<&on_job_message>(std::move(job), *config.shards));
  }
  if (message.recipients_open == 0) forget_message(message);  // nothing left to do
}

void relay::state::on_outcomes(std::unique_ptr<outcome_batch> batch) noexcept {
  spooled_message& message = *batch->message;
  RINGMTA_ASSERT(message.home == peers.id());
  // The log records and DSNs name the addresses: an evicted envelope is read back first
  // (batches of one message keep their order behind that read).
  if (!message.resident()) return wait_for_envelope(message, std::move(batch));
  record_outcomes(std::move(batch));
}

void relay::state::record_outcomes(std::unique_ptr<outcome_batch> batch) noexcept {
  spooled_message& message = *batch->message;
  const spool::envelope envelope = message.envelope();
  std::vector<dsn_note> notes;  // what the DSN reports (most batches have none)
  for (const auto& r : batch->reports) record(message, envelope, r, notes);
  // The DSN reads the original before the marks let the spool reclaim its segment.
  if (!notes.empty())
    return read_dsn_original(message, envelope, std::move(notes), std::move(batch));
  apply_outcomes(message, *batch);
}

// The outcomes' new recipient states go to the spool; the message is forgotten once every
// recipient is final.
void relay::state::apply_outcomes(spooled_message& message, const outcome_batch& batch) noexcept {
  const std::int64_t now_seconds = owner.wall_ms() / 1000;
  bool waits = false;  // a recipient goes back to wait for its retry
  for (const auto& r : batch.reports) {
    spool::recipient_status status;
    status.attempts = r.attempts;
    switch (r.kind) {
      case outcome_kind::delivered: status.state = spool::recipient_state::delivered; break;
      case outcome_kind::bounced: status.state = spool::recipient_state::bounced; break;
      case outcome_kind::deleted: status.state = spool::recipient_state::deleted; break;
      case outcome_kind::deferred:
        status.state = spool::recipient_state::deferred;
        status.next_attempt_seconds =
            std::max<std::int64_t>(now_seconds, retry_seconds(r.next_attempt_ms));
        waits = true;
        break;
      case outcome_kind::delayed: continue;  // a notice, not a state change
    }
    // Losing a mark to a crash means a redelivery after restart, never a loss: the delivery
    // does not wait for the mark to be durable.
    mark_recipient(message.id, r.index, status);
    if (spool::is_final(status.state)) {
      RINGMTA_ASSERT(message.recipients_open > 0);
      --message.recipients_open;
    }
  }
  if (message.recipients_open == 0) return forget_message(message);
  // A deferred job needs nothing of the envelope until its retry (minutes to days away): it
  // leaves memory. Jobs of other destinations still on the wire have their own copy.
  if (waits) evict(message);
}

void relay::state::mark_recipient(spool::message_id id, std::uint16_t recipient,
                                  spool::recipient_status status) noexcept {
  // Behind a waiting mark, a newer state of the same recipient must wait too: order matters
  // (deferred, then delivered).
  if (marks_waiting.empty()) {
    const auto marked = store.mark(id, recipient, status);
    if (marked || marked.error() != ENOBUFS) return;  // ENOENT/EINVAL: nothing left to record
  }
  marks_waiting.push_back({id, recipient, status});
  metrics.marks_waiting.add(1);
}

void relay::state::on_marks_durable() noexcept {
  while (!marks_waiting.empty()) {
    const waiting_mark& next = marks_waiting.front();
    const auto marked = store.mark(next.id, next.recipient, next.status);
    if (!marked && marked.error() == ENOBUFS) return;  // still full: the next batch frees room
    marks_waiting.pop_front();
    metrics.marks_waiting.add(-1);
  }
}

// Logs one outcome and keeps what a DSN needs (RFC 3461: as NOTIFY asks; never for <>).
void relay::state::record(spooled_message& message, const spool::envelope& envelope,
                          const recipient_report& r, std::vector<dsn_note>& notes) noexcept {
  const auto& recipient = envelope.recipients.at(r.index);
  const std::int64_t now_ms = owner.wall_ms();
  log.set_time(now_ms);
  // What operators search for: the size, the MX host and its address apart, the attempt
  // number, the outbound session, and delays to the millisecond.
  auto line = log.record(event_name(r.kind));
  line.field("id", std::string_view(spool::format_message_id(message.id).data(), 16))
      .field("from", envelope.reverse_path)
      .field("to", recipient.address)
      .field("size", message.body_size())
      .field("mx", r.mx)
      .field("ip", r.ip)
      .field("reply", r.text)
      .field("attempt", static_cast<std::uint64_t>(r.attempts))
      .seconds_field("delay", now_ms - message.received_ms());
  if (r.attempt_ms >= 0) line.seconds_field("delay_attempt", r.attempt_ms);
  if (r.session != 0) line.hex_field("session", r.session);
  if (!r.source.empty()) line.field("source", r.source);
  if (r.kind == outcome_kind::deferred) line.field("retry_at_s", retry_seconds(r.next_attempt_ms));
  std::size_t klass = 0;
  if (r.kind != outcome_kind::delivered) {  // the enhanced code and its class (bounce rules)
    const auto status = queue::format_status_code(r.status);
    const std::string_view status_text(status.data());
    const std::string_view name = live->classifier
                                      ? live->classifier->classify(r.reply_code, status_text,
                                                                   r.text)
                                      : events::bounce_classifier::other;
    klass = events::bounce_classifier::class_index(name);
    RINGMTA_ASSERT(klass < relay_metrics::class_count);
    line.field("code", static_cast<std::uint64_t>(r.reply_code))
        .field("status", status_text)
        .field("class", name);
  }
  if (!r.tls.empty()) {  // the delivery's connection: protocol, cipher, verified, or why not
    line.field("tls", r.tls);
    if (r.tls_note.empty()) {
      line.field("tls_cipher", r.tls_cipher)
          .field("tls_bits", static_cast<std::uint64_t>(r.tls_bits))
          .field("tls_verified", r.tls_verified)
          .field("tls_resumed", r.tls_resumed);
    } else {
      line.field("tls_note", r.tls_note);
    }
  }
  line.end();
  queue::dsn_action action = queue::dsn_action::failed;
  switch (r.kind) {
    case outcome_kind::delivered:
      metrics.delivered.add();
      metrics.delivery_latency.record_us(
          static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_ms - message.received_ms())) *
          1000);
      // ringmta never delivers finally: it hands the message on. A next hop that offers DSN
      // got NOTIFY/ORCPT/ENVID/RET and reports success itself; we send nothing (RFC 3461
      // §5.2.2.1). One without DSN: we report "relayed" as NOTIFY=SUCCESS asks (§5.2.2.2).
      if (r.remote_dsn) return;
      action = queue::dsn_action::relayed;
      break;
    case outcome_kind::bounced:
      metrics.bounced.add();
      metrics.bounced_by_class[klass].add();
      action = queue::dsn_action::failed;
      break;
    case outcome_kind::delayed:
      action = queue::dsn_action::delayed;
      break;
    case outcome_kind::deferred:
      metrics.deferred.add();
      metrics.deferred_by_class[klass].add();
      return;
    case outcome_kind::deleted: return;  // no DSN: the operator deleted it (postsuper -d)
  }
  if (!queue::should_send_dsn(envelope.reverse_path, recipient.notify, action)) return;
  dsn_note note;
  note.index = r.index;
  note.action = action;
  note.status = r.status;
  if (!note.status.valid()) {
    note.status = {static_cast<std::uint8_t>(action == queue::dsn_action::failed ? 5
                                             : action == queue::dsn_action::delayed ? 4 : 2),
                   0, 0};
  }
  note.remote = r.mx;
  note.diagnostic = r.text;
  note.diagnostic_from_server = r.from_server;
  note.last_attempt_seconds = owner.wall_ms() / 1000;
  note.retry_until_seconds =
      message.received_seconds() + live->scheduler.lifetime_max_ms / 1000;
  notes.push_back(std::move(note));
}

namespace {

// What a DSN reports, per recipient (views into the read's envelope and notes).
std::vector<queue::dsn_recipient> dsn_recipients(const dsn_original_read& read) {
  std::vector<queue::dsn_recipient> recipients;
  for (const auto& note : read.notes) {
    const auto& original = read.envelope.recipients.at(note.index);
    const bool delayed = note.action == queue::dsn_action::delayed;
    recipients.push_back({original.address, original.orcpt, note.action, note.status, note.remote,
                          note.diagnostic, note.last_attempt_seconds,
                          delayed ? note.retry_until_seconds : 0,
                          note.diagnostic_from_server ? "smtp" : "X-Ringmta"});
  }
  return recipients;
}

}  // namespace

// A DSN quotes the original's headers or all of it (RFC 3461 RET): those bytes are read from
// the spool through the ring, never with a blocking pread on the shard (a message bounced
// after days in a large queue is rarely still in the page cache). The outcomes wait for the
// read, then the DSN is built (queue_dsn) and the outcomes applied.
void relay::state::read_dsn_original(spooled_message& message, const spool::envelope& envelope,
                                     std::vector<dsn_note> notes,
                                     std::unique_ptr<outcome_batch> outcomes) noexcept {
  auto read = std::make_unique<dsn_original_read>();
  read->id = message.id;
  read->body_bytes = message.body_bytes;
  read->envelope = envelope;
  read->notes = std::move(notes);
  read->outcomes = std::move(outcomes);
  read->recipients = dsn_recipients(*read);
  queue::dsn_request sizing;  // how much of the original it quotes
  sizing.original = &read->envelope;
  sizing.recipients = read->recipients;
  sizing.original_body_bytes = message.body_bytes;
  const std::uint64_t wanted = queue::dsn_original_bytes_needed(sizing);
  read->bytes.resize(static_cast<std::size_t>(wanted));
  const std::uint32_t key = next_dsn_read++;
  std::uint64_t queued = 0;  // bytes the queued reads will fill
  for (const auto& slice : message.body()) {
    if (queued >= wanted) break;
    const auto length =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(slice.length, wanted - queued));
    const auto index = static_cast<std::uint32_t>(read->starts.size());
    if (!owner.io().prep_read(slice.fd, read->bytes.data() + queued, length, slice.offset,
                              io::pack_user_data(dsn_read_kind, index, key)))
      break;  // the ring is full: the DSN quotes what was queued before
    read->starts.push_back(queued);
    queued += length;
    ++read->reads_in_flight;
  }
  read->bytes.resize(static_cast<std::size_t>(queued));
  read->valid = queued;  // lowered by a failed or short read
  const bool nothing_to_read = read->reads_in_flight == 0;
  dsn_reading.emplace(key, std::move(read));
  if (nothing_to_read) on_dsn_original_read(key, 0, 0);
}

void relay::state::on_dsn_read_done(const io::completion& done) noexcept {
  const io::op_tag tag = done.tag();
  on_dsn_original_read(tag.slot, tag.generation, done.res);
}

// One read of a DSN's original completed (`result`: bytes or -errno). A failed or short read
// cuts the quoted original there (build_dsn then quotes headers only, or nothing).
void relay::state::on_dsn_original_read(std::uint32_t key, std::uint32_t index,
                                        std::int32_t result) noexcept {
  const auto found = dsn_reading.find(key);
  RINGMTA_ASSERT(found != dsn_reading.end());
  dsn_original_read& read = *found->second;
  if (read.reads_in_flight > 0) {
    --read.reads_in_flight;
    const std::uint64_t start = read.starts.at(index);
    const std::uint64_t end =
        index + 1 < read.starts.size() ? read.starts[index + 1] : read.bytes.size();
    if (result < 0 || start + static_cast<std::uint64_t>(result) < end) {
      read.valid = std::min<std::uint64_t>(read.valid,
                                           start + static_cast<std::uint64_t>(std::max(result, 0)));
      metrics.dsn_original_read_failures.add();
    }
    if (read.reads_in_flight > 0) return;
  }
  std::unique_ptr<dsn_original_read> finished = std::move(found->second);
  dsn_reading.erase(found);
  finished->bytes.resize(static_cast<std::size_t>(finished->valid));
  queue_dsn(std::move(finished));
}

// The outcomes that waited for the DSN. The message is gone when every recipient became
// final meanwhile: these (deferred) marks are stale then.
void relay::state::apply_original_outcomes(const dsn_original_read& read) noexcept {
  if (spooled_message* message = find_message(read.id)) apply_outcomes(*message, *read.outcomes);
}

// Builds the DSN for the notes gathered on a message and starts spooling it from <> to the
// original sender (RFC 3464). The bytes go into the spool over the next iterations if the
// spool's buffers are busy.
void relay::state::queue_dsn(std::unique_ptr<dsn_original_read> original) noexcept {
  const dsn_original_read& read = *original;
  const spool::envelope& original_envelope = read.envelope;
  const std::int64_t now_seconds = owner.wall_ms() / 1000;
  auto handle = store.begin(now_seconds);
  if (!handle) return retry_dsn_later(std::move(original));  // EAGAIN: pending_messages_max
  auto pending = std::make_unique<pending_dsn>();
  pending->handle = handle.value();
  pending->id = store.id_of(handle.value());
  queue::dsn_request request;
  request.reporting_mta = config.hostname;
  request.original = &original_envelope;
  request.recipients = read.recipients;
  request.original_body_bytes = read.body_bytes;
  request.dsn_id = pending->id;
  request.now_seconds = now_seconds;
  const std::string_view pieces[] = {read.bytes};
  request.original_body = pieces;
  auto built = queue::build_dsn(request, pending->bytes);
  if (!built) {  // it never will be: the bounces stand without it (counted, logged)
    store.abort(pending->handle);
    metrics.dsn_failed.add();
    log.set_time(owner.wall_ms());
    log.record("dsn_failed")
        .field("id", std::string_view(spool::format_message_id(read.id).data(), 16))
        .field("error", built.error_text());
    return apply_original_outcomes(read);
  }
  auto& envelope = pending->envelope;
  envelope.id = pending->id;
  envelope.reverse_path.clear();  // from <>: never bounced again (RFC 5321 §4.5.5)
  envelope.recipients.push_back({original_envelope.reverse_path, 0, {}});
  envelope.body = built.value().body;
  envelope.smtputf8 = built.value().smtputf8;
  envelope.received_seconds = now_seconds;
  envelope.client_address = "local";
  envelope.helo = config.hostname;
  pending->original = std::move(original);
  dsns.push_back(std::move(pending));
  continue_dsns();
}

void relay::state::retry_dsn_later(std::unique_ptr<dsn_original_read> read) noexcept {
  metrics.dsn_retries.add();
  dsn_retry.push_back(std::move(read));
  if (!dsn_retry_timer.armed()) owner.timers().schedule_after(dsn_retry_timer, 1000);
}

void relay::state::retry_dsns() noexcept {
  auto due = std::move(dsn_retry);
  dsn_retry.clear();
  for (auto& read : due) queue_dsn(std::move(read));
}

// Appends and commits the DSNs in progress as far as the spool takes them now.
void relay::state::continue_dsns() noexcept {
  for (std::size_t i = 0; i < dsns.size();) {
    pending_dsn& dsn = *dsns[i];
    if (dsn.appended < dsn.bytes.size()) {
      auto taken = store.append(dsn.handle, std::string_view(dsn.bytes).substr(dsn.appended));
      if (!taken) {
        store.abort(dsn.handle);
        retry_dsn_later(std::move(dsn.original));
        dsns.erase(dsns.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      dsn.appended += taken.value();
      if (dsn.appended < dsn.bytes.size()) { ++i; continue; }  // buffers full: next iteration
    }
    auto committed = store.commit(dsn.handle, dsn.envelope, &dsn.body);
    if (!committed && committed.error() == EAGAIN) { ++i; continue; }
    if (!committed) {
      retry_dsn_later(std::move(dsn.original));
    } else {
      dsn.bytes = std::string();  // the spool has them now
      dsn_tickets[committed.value()] = std::move(dsns[i]);
    }
    dsns.erase(dsns.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

bool relay::state::on_committed(std::uint64_t ticket, int error) noexcept {
  const auto found = dsn_tickets.find(ticket);
  if (found == dsn_tickets.end()) return false;
  const std::unique_ptr<pending_dsn> dsn = std::move(found->second);
  dsn_tickets.erase(found);
  if (error != 0) {
    retry_dsn_later(std::move(dsn->original));
    return true;
  }
  // Durable: now the bounces it reports may be final (RFC 5321 §6.1).
  apply_original_outcomes(*dsn->original);
  metrics.dsn_queued.add();
  log.set_time(owner.wall_ms());
  log.record("dsn_queued")
      .field("id", std::string_view(spool::format_message_id(dsn->id).data(), 16));
  route(dsn->envelope, dsn->body);
  return true;
}

}  // namespace ringmta::server
