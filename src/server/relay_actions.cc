// server::relay: per-message operator actions (ringmta-ctl hold, release, delete, retry,
// bounce). The home journals the action in its spool (store::act) and sends it, as a typed
// cross-shard message, to the owner of each destination of the message's open recipients;
// the owner applies it to its scheduler (queue::scheduler::hold_message ...) in the order its
// queue delivers messages, after any job of the message routed to it before. Deliveries in
// flight finish first (docs/notes.md, "Per-message actions").
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "relay_internal.h"
#include "ringmta/core/clock.h"

namespace ringmta::server {

namespace {

std::string_view action_name(message_op op) {
  switch (op) {
    case message_op::hold: return "hold";
    case message_op::release: return "release";
    case message_op::remove: return "delete";
    case message_op::retry: return "retry";
    case message_op::bounce: return "bounce";
  }
  return "?";
}

std::optional<message_op> op_named(std::string_view action) {
  if (action == "hold") return message_op::hold;
  if (action == "release") return message_op::release;
  if (action == "delete") return message_op::remove;
  if (action == "retry") return message_op::retry;
  if (action == "bounce") return message_op::bounce;
  return std::nullopt;
}

// The spool's action record for `op`; retry ("try it now") is not a state worth keeping.
std::optional<spool::message_action> journaled(message_op op) {
  switch (op) {
    case message_op::hold: return spool::message_action::hold;
    case message_op::release: return spool::message_action::release;
    case message_op::remove: return spool::message_action::remove;
    case message_op::bounce: return spool::message_action::bounce;
    case message_op::retry: return std::nullopt;
  }
  return std::nullopt;
}

std::string id_text(spool::message_id id) {
  return std::string(spool::format_message_id(id).data(), 16);
}

}  // namespace

void relay::state::on_message_action_message(shard::mesh& target, std::vector<relay*>& shards,
                                             std::unique_ptr<message_action_job> job) noexcept {
  shards[target.id()]->_state->apply_message_action(*job);
}

void relay::state::send_message_action(const spooled_message& message,
                                       const std::string& destination, message_op op,
                                       std::string_view reason) noexcept {
  send_message_action_to(owner_of(destination, static_cast<unsigned>(config.shards->size())),
                         message_action_job{message.id, &message, destination, op,
                                            std::string(reason)});
}

void relay::state::send_message_action_to(unsigned to, message_action_job job) noexcept {
  send(to, shard::make_parcel<&on_message_action_message>(
                  std::make_unique<message_action_job>(std::move(job)), *config.shards));
}

// Owner side: the scheduler decides; jobs that leave come out as events (bounced: a DSN;
// removed: recorded deleted) and go home like any outcome.
void relay::state::apply_message_action(const message_action_job& job) noexcept {
  // MX site rollup: the domain's owner knows which shard queues it (its site's owner).
  if (const unsigned holder = self.holder_of(job.destination); holder != peers.id())
    return send_message_action_to(holder, job);
  amend_resolving(job);  // jobs still waiting for their MX site (relay_site.cc)
  // No job of the key here: every job of it has been reported (the message may be freed).
  // A job of the key: its message is alive, but is it the one meant (relay_internal.h)?
  const queue::message_key key = message_key_of(job.message);
  if (!scheduler.has_message(job.destination, key) || job.message->id != job.id) return;
  const std::int64_t now = owner.wall_ms();
  switch (job.op) {
    case message_op::hold: scheduler.hold_message(job.destination, key, now); break;
    case message_op::release: scheduler.release_message(job.destination, key, now); break;
    case message_op::retry: scheduler.retry_message(job.destination, key, now); break;
    case message_op::bounce: bounce_now(job.destination, *job.message, job.reason, now); break;
    case message_op::remove: scheduler.remove_message(job.destination, key, now); break;
  }
  drain_events(nullptr);
  poll();
}

// Home side.
std::string relay::act_on_message(spool::message_id id, std::string_view action,
                                  std::string_view reason, std::string_view by) {
  auto& s = *_state;
  const auto op = op_named(action);
  if (!op) return {};
  const std::int64_t now = s.owner.wall_ms();
  nlohmann::json out = {{"id", id_text(id)}, {"action", action}, {"found", false}};
  spooled_message* found = s.find_message(id);
  const bool recovering = found == nullptr && s.recover_one(id);  // read at start-up, not routed
  const spool::message_entry* entry = s.store.find(id);
  if ((found == nullptr && !recovering) || entry == nullptr ||
      entry->status != spool::message_status::queued ||
      (entry->flags & spool::message_flag_deleted) != 0)
    return out.dump();
  out["found"] = true;
  if (*op == message_op::release) {
    // Released mail is due now, after a restart too: the marks go ahead of the action
    // record, so they are durable with it.
    for (std::size_t i = 0; i < entry->recipients.size(); ++i) {
      spool::recipient_status status = entry->recipients[i];
      if (status.state != spool::recipient_state::deferred) continue;
      status.next_attempt_seconds = now / 1000;
      s.mark_recipient(id, static_cast<std::uint16_t>(i), status);
    }
  }
  std::uint64_t ticket = 0;
  if (const auto persistent = journaled(*op)) {
    // A bounce's reason is journaled with it: its DSNs give it after a restart too.
    const std::string_view journaled_reason = *op == message_op::bounce ? reason : "";
    auto acted = s.store.act(id, *persistent, now / 1000, journaled_reason);
    if (!acted) {
      out["error"] = fmt::format("cannot journal the action: {}", acted.error_text());
      return out.dump();
    }
    ticket = acted.value();
    if (s.action_tickets.size() >= 4096) {  // answers nobody asked for (the API timed out)
      std::erase_if(s.action_tickets, [](const auto& entry) { return entry.second >= 0; });
    }
    s.action_tickets[ticket] = -1;
  }
  out["ticket"] = ticket;
  pending_action pending{*op, std::string(reason), std::string(by), ticket};
  // Which destinations: the recipients' (the envelope read back first if it was evicted; the
  // owners apply it a moment later, as they do anyway: a cross-shard message).
  if (recovering || !found->resident()) {
    if (ticket != 0) s.actions_unsent.insert(ticket);
    if (recovering) s.join_read(id, std::move(pending));  // sent once it is routed
    else s.wait_for_envelope(*found, std::move(pending));
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  out["destinations"] = s.send_actions(id, found->envelope(), pending);
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::size_t relay::state::send_actions(spool::message_id id, const spool::envelope& envelope,
                                       const pending_action& action) noexcept {
  actions_unsent.erase(action.ticket);
  const spool::message_entry* entry = store.find(id);
  const spooled_message* message = find_message(id);
  if (entry == nullptr || message == nullptr) return 0;  // final meanwhile
  const auto& recipients = envelope.recipients;
  std::set<std::string> destinations;
  for (std::size_t i = 0; i < recipients.size() && i < entry->recipients.size(); ++i)
    if (!spool::is_final(entry->recipients[i].state))
      destinations.insert(destination_of(recipients[i].address, config.hostname));
  for (const auto& destination : destinations)
    send_message_action(*message, destination, action.op, action.reason);
  log.set_time(owner.wall_ms());
  auto line = log.record("operator");
  line.field("action", action_name(action.op)).field("id", id_text(id)).field("by", action.by)
      .field("destinations", static_cast<std::uint64_t>(destinations.size()));
  if (!action.reason.empty()) line.field("reason", action.reason);
  line.end();
  return destinations.size();
}

std::string relay::action_state(std::uint64_t ticket) {
  auto& tickets = _state->action_tickets;
  const auto found = tickets.find(ticket);
  if (found == tickets.end()) return "unknown ticket";
  if (found->second < 0 || _state->actions_unsent.count(ticket) != 0) return "pending";
  const int error = found->second;
  tickets.erase(found);
  return error == 0 ? "ok" : fmt::format("journal write failed: {}", std::strerror(error));
}

bool relay::on_marked(std::uint64_t ticket, int error) noexcept {
  _state->on_marks_durable();  // a journal batch landed: its buffer has room
  const auto found = _state->action_tickets.find(ticket);
  if (found == _state->action_tickets.end()) return false;
  found->second = error;
  return true;
}

std::string relay::message_location_json(spool::message_id id) const {
  const spool::message_entry* entry = _state->store.find(id);
  if (entry == nullptr || entry->status != spool::message_status::queued ||
      (entry->flags & spool::message_flag_deleted) != 0)
    return {};
  return nlohmann::json{{"shard", _state->peers.id()},
                        {"commit_segment", entry->commit_segment},
                        {"commit_offset", std::uint64_t{entry->commit_offset}},
                        {"commit_bytes", entry->commit_bytes},
                        {"held", (entry->flags & spool::message_flag_held) != 0}}
      .dump();
}

}  // namespace ringmta::server
