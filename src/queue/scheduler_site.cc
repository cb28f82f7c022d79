// queue::scheduler, MX sites (scheduler.h "MX sites"): destinations whose connections share
// one limit and carry each other's jobs. The hooks in scheduler.cc (can_open, compute_wake,
// service, release_connection, forget) call the site_* helpers here; a destination without a
// site (site == nil_slot) is untouched by them.
//
// Invariants: site.connections is the sum of its members' connections; a member is on
// site.waiting at most once (site_waiting); a site with no member is on free_sites.
#include <algorithm>

#include "ringmta/core/assert.h"
#include "scheduler_state.h"

namespace ringmta::queue {

bool scheduler::state::site_full(const destination_record& d) const noexcept {
  if (d.site == nil_slot) return false;
  const site_record& site = sites[d.site];
  return site.connections >= site.limits.connections_max;
}

void scheduler::state::site_wait(destination_record& d) noexcept {
  if (d.site_waiting) return;
  d.site_waiting = true;
  sites[d.site].waiting.push_back(d.slot);
}

void scheduler::state::site_connection_opened(destination_record& d) noexcept {
  if (d.site == nil_slot) return;
  ++sites[d.site].connections;
  ++sites[d.site].connections_starting;
}

void scheduler::state::site_connection_started(destination_record& d,
                                               std::int64_t now_ms) noexcept {
  if (d.site == nil_slot) return;
  RINGMTA_ASSERT(sites[d.site].connections_starting > 0);
  --sites[d.site].connections_starting;
  if (sites[d.site].limits.rate_messages != 0) wake_site_waiting(sites[d.site], now_ms);
}

// Members the site held (its connection limit, or its rate with too many starting) look
// again: a fresh heap entry each.
void scheduler::state::wake_site_waiting(site_record& site, std::int64_t now_ms) noexcept {
  std::vector<std::uint32_t> waiting;
  waiting.swap(site.waiting);
  for (const std::uint32_t slot : waiting) {
    destination_record& member = destinations[slot];
    member.site_waiting = false;
    member.wake_ms = no_wakeup_ms;  // force a fresh heap entry
    reschedule(slot, now_ms);
  }
}

// The site's rate (issue 15): every member's messages take from one bucket, so domains
// rolled up into a site never exceed the site's rate together (each member's own rate
// still applies too). Like a destination's, a connection is opened only when a token is
// there for it beyond those the site's starting connections will take.
std::int64_t scheduler::state::site_rate_time(destination_record& d, std::int64_t now_ms,
                                              bool reserve_starting) noexcept {
  if (d.site == nil_slot) return 0;
  site_record& site = sites[d.site];
  if (site.limits.rate_messages == 0) return 0;
  site.bucket.refill(site.limits, now_ms);
  // More starting than the burst: no_wakeup_ms, and compute_wake puts the member on the
  // site's waiting list, woken when one of them starts (site_connection_started).
  return site.bucket.time_for(site.limits, reserve_starting ? site.connections_starting + 1 : 1);
}

void scheduler::state::site_take(destination_record& d) noexcept {
  if (d.site != nil_slot) sites[d.site].bucket.take(sites[d.site].limits);
}

// A site connection ended: the members the limit held may open one now.
void scheduler::state::site_connection_released(destination_record& d,
                                                std::int64_t now_ms) noexcept {
  if (d.site == nil_slot) return;
  site_record& site = sites[d.site];
  RINGMTA_ASSERT(site.connections > 0);
  --site.connections;
  wake_site_waiting(site, now_ms);
}

void scheduler::state::leave_site(destination_record& d) noexcept {
  if (d.site == nil_slot) return;
  site_record& site = sites[d.site];
  const auto slot = d.slot;
  RINGMTA_ASSERT(d.connections == 0);
  std::erase(site.members, slot);
  std::erase(site.waiting, slot);
  d.site_waiting = false;
  d.leaving_site = false;
  if (site.members.empty()) {
    RINGMTA_ASSERT(site.connections == 0);
    sites_by_name.erase(site.name);
    site = site_record{};
    free_sites.push_back(d.site);
  }
  d.site = nil_slot;
}

// A member other than `except` that a connection of the site may serve now (round robin),
// looking at `scan_max` members at most.
std::uint32_t scheduler::state::site_member_with_work(const site_record& site,
                                                      std::uint32_t except, std::int64_t now_ms,
                                                      std::size_t scan_max) const noexcept {
  const std::size_t count = site.members.size();
  for (std::size_t i = 0; i < std::min(count, scan_max); ++i) {
    const std::uint32_t slot = site.members[(site.next_member_hint + i) % count];
    const destination_record& m = destinations[slot];
    if (slot == except || m.suspended || m.leaving_site || m.paused_until_ms > now_ms) continue;
    if (m.backoff_until_ms > now_ms) continue;
    const bool due = !m.scheduled.empty() && m.scheduled.front().time_ms <= now_ms;
    if (m.ready.count > m.connections_starting || due) return slot;
  }
  return nil_slot;
}

bool scheduler::join_site(std::string_view destination, std::string_view site_name,
                          const destination_limits& site_limits) {
  state& s = *_state;
  destination_record* d = s.find(destination);
  if (d == nullptr || site_name.empty()) return false;
  RINGMTA_ASSERT(site_limits.connections_max >= 1);
  std::uint32_t index;
  if (const auto found = s.sites_by_name.find(site_name); found != s.sites_by_name.end()) {
    index = found->second;
  } else if (!s.free_sites.empty()) {
    index = s.free_sites.back();
    s.free_sites.pop_back();
  } else {
    index = static_cast<std::uint32_t>(s.sites.size());
    s.sites.grow();
  }
  site_record& site = s.sites[index];
  if (site.members.empty()) {
    site.name.assign(site_name);
    s.sites_by_name.emplace(site.name, index);
    site.bucket.fill(site_limits, 0);  // full; the first refill moves its time to now
  }
  site.limits = site_limits;
  site.bucket.clamp(site_limits);
  if (d->site == index) return true;
  if (d->site != nil_slot || d->connections != 0) {
    // Moving between sites with connections open would break the counts: stay for now (the
    // caller joins again once they end; MX sets change rarely).
    if (d->connections != 0) return d->site == index;
    s.leave_site(*d);
  }
  d->site = index;
  site.members.push_back(d->slot);
  return true;
}

bool scheduler::leave_site(std::string_view destination, std::int64_t now_ms) noexcept {
  state& s = *_state;
  destination_record* d = s.find(destination);
  if (d == nullptr || d->site == nil_slot) return false;
  if (d->connections != 0) {
    d->leaving_site = true;  // release_connection completes it (and reschedules)
    return true;
  }
  s.leave_site(*d);
  // A member parked on the site's waiting list (the site's connections or rate) had no heap
  // entry; out of the site nothing would wake it again: 119 ready jobs and no connection for
  // two simulated days (ringmta-sim seed 197000189 --no-crashes --shards-max 3). A fresh entry.
  d->wake_ms = no_wakeup_ms;
  s.reschedule(d->slot, now_ms);
  return true;
}

bool scheduler::reshape_site(std::string_view site_name, const destination_limits& limits) {
  state& s = *_state;
  const auto found = s.sites_by_name.find(site_name);
  if (found == s.sites_by_name.end()) return false;
  RINGMTA_ASSERT(limits.connections_max >= 1);
  s.sites[found->second].limits = limits;
  s.sites[found->second].bucket.clamp(limits);
  return true;
}

// The connection (already started) changes hands within the site: the site's count is
// unchanged, the members' counts move; the round robin goes on after `to`.
void scheduler::state::move_within_site(connection_record& c, std::uint32_t to,
                                        std::int64_t now_ms) noexcept {
  const std::uint32_t from = c.destination;
  destination_record& d = destinations[from];
  site_record& site = sites[d.site];
  RINGMTA_ASSERT(c.started && d.connections > 0 && destinations[to].site == d.site);
  site.next_member_hint = static_cast<std::uint32_t>(
      (std::find(site.members.begin(), site.members.end(), to) - site.members.begin()) + 1);
  --d.connections;
  ++destinations[to].connections;
  c.destination = to;
  reschedule(from, now_ms);
}

take_result scheduler::take_for_site(connection_id id, std::int64_t now_ms) noexcept {
  state& s = *_state;
  RINGMTA_ASSERT(id.slot < s.connections.size());
  connection_record& c = s.connections[id.slot];
  RINGMTA_ASSERT(c.live && c.generation == id.generation);
  const destination_record& own = s.destinations[c.destination];
  const std::uint32_t site_slot = own.leaving_site ? nil_slot : own.site;
  if (site_slot != nil_slot) {
    const std::uint32_t per_connection = s.sites[site_slot].limits.messages_per_connection_max;
    if (per_connection != 0 && c.taken >= per_connection) {
      take_result result;
      result.status = take_status::close;
      return result;
    }
    // Fairness within the site: after each message the connection goes on with the next
    // member that has work (round robin), so no domain of a site waits for another's
    // backlog to empty; with no other member waiting it stays where it is. The look is
    // bounded per message (a site may have thousands of members, most without mail now).
    if (c.started && c.taken > 0) {
      constexpr std::size_t scan_max = 16;
      const std::uint32_t to =
          s.site_member_with_work(s.sites[site_slot], c.destination, now_ms, scan_max);
      if (to != nil_slot) s.move_within_site(c, to, now_ms);
      else s.sites[site_slot].next_member_hint += scan_max;  // the next message looks further
    }
  }
  take_result result = take_for_connection(id, now_ms);
  if (result.status != take_status::none) return result;
  const std::uint32_t from = c.destination;
  destination_record& d = s.destinations[from];
  if (d.site == nil_slot || d.leaving_site) return result;
  const std::uint32_t to = s.site_member_with_work(s.sites[d.site], from, now_ms);
  if (to == nil_slot) return result;
  s.move_within_site(c, to, now_ms);  // take_for_connection started it
  return take_for_connection(id, now_ms);
}

std::string_view scheduler::site_of(destination_id id) const noexcept {
  const state& s = *_state;
  if (id.slot >= s.destinations.size()) return {};
  const destination_record& d = s.destinations[id.slot];
  if (!d.live || d.generation != id.generation || d.site == nil_slot) return {};
  return s.sites[d.site].name;
}

std::string_view scheduler::site_of(std::string_view destination) const noexcept {
  const state& s = *_state;
  const destination_record* d = s.find(destination);
  return d == nullptr || d->site == nil_slot ? std::string_view{} : s.sites[d->site].name;
}

bool scheduler::has_sites() const noexcept { return !_state->sites_by_name.empty(); }

std::vector<std::string> scheduler::site_members(std::string_view destination) const {
  const state& s = *_state;
  std::vector<std::string> out;
  const destination_record* d = s.find(destination);
  if (d == nullptr || d->site == nil_slot) return out;
  for (const std::uint32_t member : s.sites[d->site].members) {
    if (&s.destinations[member] != d) out.push_back(s.destinations[member].name);
  }
  return out;
}

std::vector<std::string> scheduler::members_of_site(std::string_view site) const {
  const state& s = *_state;
  std::vector<std::string> out;
  const auto found = s.sites_by_name.find(site);
  if (found == s.sites_by_name.end()) return out;
  for (const std::uint32_t member : s.sites[found->second].members)
    out.push_back(s.destinations[member].name);
  return out;
}

std::vector<std::string> scheduler::site_names() const {
  std::vector<std::string> out;
  out.reserve(_state->sites_by_name.size());
  for (const auto& [name, index] : _state->sites_by_name) out.push_back(name);
  return out;
}

}  // namespace ringmta::queue
