// server::relay, MX site rollup (KumoMTA's site_name; docs/notes.md "MX sites"). Domains
// whose MX host sets are equal share one site: their queues live on the site's owner shard
// (hash of the site name), where the scheduler counts every member's connections against the
// site's limit and lets a connection carry any member's jobs (queue::scheduler::take_for_site).
//
// Path of a job: home → the domain's owner (hash of the domain, as without rollup) → MX lookup
// there (held meanwhile; the answer is cached per domain for an hour) → the site's owner, with
// routed_job::site set → queued under its domain, joined to the site. Jobs of a domain whose
// lookup fails, of a domain an operator suspended on its owner, of routes and of a relayhost
// are queued on the domain's owner as before — unless a reload changed the route while the
// site's owner held the domain's queue: then they follow it there (follow_site_queue), so a
// domain never has two queues at once. The same after a relearn found another MX set: the jobs
// go through the old site's owner while it holds the domain's queue (known_site.h,
// take_via_old_site). Per-domain operations keep working: the admin API asks the domain's
// owner where the queue is (holder_of).
//
// Never: blocks on DNS (the lookup is the shard's resolver over the ring), loses a held job
// (it stays owned by the held list until forwarded or queued), or moves a job that a scheduler
// already holds.
#include <algorithm>

#include <fmt/format.h>

#include "relay_internal.h"

namespace ringmta::server {

namespace {
constexpr std::size_t sites_max = 100'000;           // known domains per shard (then cleared)
constexpr std::size_t resolving_max = 10'000;        // domains being looked up per shard
// Site lookups in flight per shard. After a restart every recovered domain wants its site at
// once (10,000 domains per shard in bench/e2e/backlog.py): unbounded, they filled the
// resolver's 1,024 slots and 4,096 waiting places, the rest failed "too many DNS lookups in
// progress", their jobs were queued without their site (its limit not applied to them) and
// the connections' own MX lookups failed the same way (1,933 deferrals at 200,000 queued).
// A quarter of the resolver's slots leaves the rest to the connections.
constexpr std::size_t site_lookups_max = 256;
// A domain that waited this long for a slot is not looked up: its jobs are queued here, as
// after a failed lookup. Held jobs are not in the scheduler (not listed, out of reach of an
// operator's hold or delete), and with a resolver that does not answer, 10,000 domains at 256
// per 30-second lookup timeout would hold some for 20 minutes.
constexpr std::int64_t site_lookup_wait_max_ms = 30'000;

std::vector<std::string_view> hosts_of(std::string_view site) {
  std::vector<std::string_view> hosts;
  while (!site.empty()) {
    const auto comma = site.find(',');
    hosts.push_back(site.substr(0, comma));
    if (comma == std::string_view::npos) break;
    site.remove_prefix(comma + 1);
  }
  return hosts;
}
}  // namespace

unsigned relay::holder_of(std::string_view destination) const {
  const auto& s = *_state;
  if (s.queued_here(destination)) return s.peers.id();
  const auto [domain, source] = split_egress(destination);  // "example.com@s3": its site's
  const auto known = s.sites.find(std::string(domain));
  if (known == s.sites.end()) return s.peers.id();
  return owner_of(egress_destination(known->second.holder_for(source), source),
                  static_cast<unsigned>(s.config.shards->size()));
}

// A change of the MX set: the owner of the site in use until now may hold the domain's queue
// (of every source that had one), so that site becomes old_site. A change while an old_site
// is kept: when some source moved on, its queue is on the owner of the site in use until now
// (for the usual single source, every queue: old_site is then that site); when none did,
// every queue is still on old_site's owner, which stays — unless the MX set went back to
// old_site, whose owner then takes the jobs directly. (With several egress sources, a third
// MX set before every source moved may leave an unmoved source's old queue unfollowed.)
void known_site::learn(std::string_view fresh, std::int64_t now_ms) {
  learned_ms = now_ms;
  if (fresh == site) return;
  if (!site.empty()) {
    if (old_site.empty() || !moved_sources.empty()) {
      old_site = site;
      moved_sources.clear();
    } else if (fresh == old_site) {
      old_site.clear();
    }
  }
  site.assign(fresh);
}

const std::string& known_site::holder_for(std::string_view source) const noexcept {
  return via_old_site(source) ? old_site : site;
}

bool known_site::via_old_site(std::string_view source) const noexcept {
  return !old_site.empty() &&
         std::find(moved_sources.begin(), moved_sources.end(), source) == moved_sources.end();
}

void known_site::old_queue_gone(std::string_view old, std::string_view source) {
  if (old != old_site || !via_old_site(source)) return;  // a later change: not that queue
  moved_sources.emplace_back(source);
}

void relay::state::accept_job(std::unique_ptr<routed_job> job) noexcept {
  if (job->via_old_site) return take_via_old_site(std::move(job));
  if (job->site.empty() && roll_up(job)) return;
  queue_job(std::move(job));
}

// On the domain's owner: true when the job was taken (forwarded to its site, or held until
// the domain's MX lookup answers); false: queue it here.
// Egress: "example.com@ip2" is looked up as example.com (one lookup for every source) and
// joins the site of its source, "mx1,mx2@ip2": site limits are per source × site.
bool relay::state::roll_up(std::unique_ptr<routed_job>& job) noexcept {
  const std::string domain(split_egress(job->destination).first);
  if (domain.empty() || domain.front() == '[') return false;
  if (!rolls_up(domain)) return follow_site_queue(job, domain);
  if (queued_here(job->destination)) return false;
  if (const auto known = sites.find(domain); known != sites.end()) {
    if (owner.wall_ms() - known->second.learned_ms < live->site_relearn_ms) {
      send_to_site(std::move(job), known->second, at_site::join);
      return true;
    }
    // Stale: looked up again below; kept until then, so that a failed or late lookup sends
    // the jobs on to the queue the site's owner may still hold, not to a second one here.
  }
  auto held = resolving.find(domain);
  if (held == resolving.end()) {
    if (resolving.size() >= resolving_max) return false;
    held = resolving.emplace(domain, std::vector<std::unique_ptr<routed_job>>{}).first;
    site_lookups_waiting.push_back({domain, owner.wall_ms()});
    start_site_lookups();
  }
  held->second.push_back(std::move(job));
  return true;
}

// Jobs of the domain join its MX site: MX routing, rollup on, and no TLS policy or EHLO name
// of its own.
bool relay::state::rolls_up(const std::string& domain) const {
  return live->site_rollup && route_for(domain).mx && !connects_its_own_way(domain);
}

// A domain that is not rolled up (any more): a reload added a relay host or a route for it,
// gave it a TLS policy or EHLO name of its own, or turned rollup off. Its queue may still be on
// its site's owner, where the jobs taken before the reload wait: a second queue here would get
// connections and a rate bucket of its own, and the two together exceed the domain's limits
// (ringmta-sim --shards-max 3: seed 170001082, a relay host added, two DSNs to sender.example
// 0.1 s apart under 1 per second, one from each queue; 170002219, sender.example made
// `verify`, a second connection beside a stalled one under a limit of 1). So the jobs keep
// going to the shard that may hold the queue — queued there under the domain, not joined to
// the site (its connections would carry other members' jobs on this route) — for as long as
// the site is remembered: until the sites are forgotten (a restart, sites_max), one hop more
// per job. The way back (the relay host removed) is queued_here.
bool relay::state::follow_site_queue(std::unique_ptr<routed_job>& job,
                                     const std::string& domain) noexcept {
  if (job->to_queue_holder) return false;
  const auto known = sites.find(domain);
  if (known == sites.end() || queued_here(job->destination)) return false;
  send_to_site(std::move(job), known->second, at_site::queue_only);
  return true;
}

// Jobs held for their site's lookup are in no scheduler: an operator's action on their message
// rides on them instead (queue_job applies their flags), or a release after a restart left the
// recovered hold in place for good — the spool said released, the job joined its queue held
// (ringmta-sim seed 190292682438239, docs/notes.md s10-simworld). A delete rides the same way:
// uncarried, the spool said deleted while the job joined its queue as it was — held for good
// (a release then finds the message deleted), or delivered after the operator's delete
// (seed 183000137: a delete 0.5 s after a restart, the job waiting for its site's answer).
void relay::state::amend_resolving(const message_action_job& action) noexcept {
  const auto held = resolving.find(std::string(split_egress(action.destination).first));
  if (held == resolving.end()) return;
  for (const auto& job : held->second) {
    if (job->message->id != action.id) continue;
    switch (action.op) {
      case message_op::hold: job->flags |= spool::message_flag_held; break;
      case message_op::release:
        job->flags = static_cast<std::uint8_t>(job->flags & ~spool::message_flag_held);
        job->not_before_ms = 0;  // released mail is due now (act_on_message)
        break;
      case message_op::bounce:
        job->bounce_reason = action.reason;
        job->flags |= spool::message_flag_bounce;
        break;
      case message_op::retry: job->not_before_ms = 0; break;
      case message_op::remove: job->flags |= spool::message_flag_deleted; break;
    }
  }
}

// Starts waiting site lookups, oldest first, while fewer than site_lookups_max run; those that
// waited past site_lookup_wait_max_ms are queued here unrolled instead.
// (Lookups complete asynchronously: on_lookup_done never runs from inside this loop.)
void relay::state::start_site_lookups() noexcept {
  const std::int64_t now_ms = owner.wall_ms();
  while (lookups.size() < site_lookups_max && !site_lookups_waiting.empty()) {
    std::string domain = std::move(site_lookups_waiting.front().domain);
    const std::int64_t since_ms = site_lookups_waiting.front().since_ms;
    site_lookups_waiting.pop_front();
    if (now_ms - since_ms > site_lookup_wait_max_ms) {
      release_held(domain);
      continue;
    }
    const std::uint64_t cookie = ++next_lookup;
    const std::string& name = lookups.emplace(cookie, std::move(domain)).first->second;
    dns.start_mx_lookup(name, site_lookups, cookie);
  }
}

// The domain's MX hosts are known: its held jobs go to the site, or are queued here when the
// lookup failed (the connection's own lookup then reports the failure as before).
void relay::state::site_resolver::on_lookup_done(std::uint64_t cookie,
                                                 dns::mx_result& result) noexcept {
  const auto name = s.lookups.find(cookie);
  if (name == s.lookups.end()) return;
  const std::string domain = std::move(name->second);
  s.lookups.erase(name);
  s.start_site_lookups();
  // (A failed relearn keeps the stale site.)
  if (result.status == dns::lookup_status::ok && !result.hosts.empty()) {
    std::vector<std::string_view> hosts;
    for (const auto& host : result.hosts) hosts.push_back(host.name);
    if (s.sites.size() >= sites_max && s.sites.count(domain) == 0) s.sites.clear();
    s.sites[domain].learn(site_name(hosts), s.owner.wall_ms());
  }
  s.release_held(domain);
}

// A destination with a queue here (an operator suspended it here, its site lookup failed or
// waited too long) keeps its jobs here until that queue is gone: a second queue on the site's
// owner would get connections of its own, and the two together exceed the destination's
// connection limit (ringmta-sim seed 280203166620281). A suspension recovered from the journal
// makes no queue of its own: every shard knows it (relay.cc restore_pauses).
bool relay::state::queued_here(std::string_view destination) const noexcept {
  queue::destination_info info;
  return scheduler.inspect(destination, info);
}

void relay::state::release_held(const std::string& domain) noexcept {
  const auto held = resolving.find(domain);
  if (held == resolving.end()) return;
  std::vector<std::unique_ptr<routed_job>> jobs = std::move(held->second);
  resolving.erase(held);
  const auto known = sites.find(domain);
  // A reload meanwhile may have changed the domain's route or TLS policy (roll_up's test).
  const bool joins = rolls_up(domain);
  for (auto& job : jobs) {
    // A queue made here meanwhile (the operator suspended the domain while it was looked up:
    // holder_of named this shard) keeps them (seed 55001145, 2 shards).
    if (known == sites.end() || queued_here(job->destination)) queue_job(std::move(job));
    else send_to_site(std::move(job), known->second, joins ? at_site::join : at_site::queue_only);
  }
}

// On the destination's owner. After a change of the domain's MX set the old site's owner may
// still hold the domain's queue: the job goes there first (take_via_old_site), one hop more,
// until that owner reports the queue gone (ringmta-sim --shards-max 3 --no-crashes: seeds
// 152000004, 152000044, two connections open at a limit of one, one per queue).
void relay::state::send_to_site(std::unique_ptr<routed_job> job, const known_site& known,
                                at_site how) noexcept {
  if (known.via_old_site(split_egress(job->destination).second)) {
    job->via_old_site = std::make_unique<routed_job::site_change>(
        routed_job::site_change{known.old_site, known.site});
    return forward_to_site(std::move(job), known.old_site, how);
  }
  forward_to_site(std::move(job), known.site, how);
}

// On the old site's owner: queued here, where the domain's queue is (joining the old site as
// its earlier jobs did), or, with no queue here any more, on to the new site; the destination's
// owner then sends the next jobs there directly. The jobs of one destination reach this shard
// in the order its owner sent them, so once none is queued here none will be: later ones were
// sent before the owner heard, and go on too. (An operator's suspend in that moment, sent here
// by holder_of, would make a queue here beside the new one: one parcel's latency, not closed.)
void relay::state::take_via_old_site(std::unique_ptr<routed_job> job) noexcept {
  const auto change = std::move(job->via_old_site);
  if (queued_here(job->destination)) return queue_job(std::move(job));
  const at_site how = job->to_queue_holder ? at_site::queue_only : at_site::join;
  job->site.clear();
  job->to_queue_holder = false;
  const unsigned to = owner_of(job->destination, static_cast<unsigned>(config.shards->size()));
  std::unique_ptr<old_queue_gone> gone(new old_queue_gone{job->destination, change->from});
  forward_to_site(std::move(job), change->to, how);
  if (to == peers.id()) return note_old_queue_gone(*gone);
  send(to, shard::make_parcel<&on_old_queue_gone_message>(std::move(gone), *config.shards));
}

void relay::state::on_old_queue_gone_message(shard::mesh& target, std::vector<relay*>& shards,
                                             std::unique_ptr<old_queue_gone> gone) noexcept {
  shards[target.id()]->_state->note_old_queue_gone(*gone);
}

void relay::state::note_old_queue_gone(const old_queue_gone& gone) noexcept {
  const auto [domain, source] = split_egress(gone.destination);
  const auto known = sites.find(std::string(domain));
  if (known != sites.end()) known->second.old_queue_gone(gone.old_site, source);
}

void relay::state::forward_to_site(std::unique_ptr<routed_job> job, const std::string& site,
                                   at_site how) noexcept {
  std::string where = egress_destination(site, split_egress(job->destination).second);
  const unsigned to = owner_of(where, static_cast<unsigned>(config.shards->size()));
  if (how == at_site::join) job->site = std::move(where);
  else job->to_queue_holder = true;  // queued under its domain there (follow_site_queue)
  if (to == peers.id())
    return job->via_old_site ? take_via_old_site(std::move(job)) : queue_job(std::move(job));
  send(to, shard::make_parcel<&on_job_message>(std::move(job), *config.shards));
}

// A site's connections carry any member's jobs (take_for_site), with the TLS policy and EHLO
// name of the member they were opened for. A domain whose own policy_for or [[shaping]] entry
// asks for another TLS policy (verify where the rest is opportunistic) or EHLO name is not
// rolled up: its mail would otherwise ride a connection that never verified the certificate,
// or said another name. Its queue keeps its own limits (the site's does not count it).
bool relay::state::connects_its_own_way(const std::string& domain) const {
  // Most configurations have neither: no shape is built per job then.
  if (live->tls_policies.empty() && !shaping->has_domain_connection_entries()) return false;
  const shape own = shaping->for_domain(domain);
  const outbound::tls_policy policy = own.tls_set ? own.tls : tls_policy_for(*live, domain);
  return policy != live->tls_default || !own.ehlo_name.empty();
}

// The site's limits: the MX layer of shaping over the global settings (a domain's own
// [[shaping]] entry still limits that domain's queue within the site).
shape relay::state::site_shape(std::string_view site) const {
  const auto hosts = hosts_of(split_egress(site).first);
  return shaping->for_destination("", hosts);
}

// On the site's owner, after the job was added under its domain: the domain joins the site
// (once; the scheduler forgets idle domains, which then join again with their next job).
// The scheduler keeps the membership; idle_key and site_members ask it.
void relay::state::join_site(const routed_job& job, queue::destination_id destination) noexcept {
  if (scheduler.site_of(destination) == job.site) return;
  if (shaping->has_mx_entries() && mx_hosts.count(job.destination) == 0) {
    std::vector<std::string> hosts;
    for (const auto host : hosts_of(split_egress(job.site).first)) hosts.emplace_back(host);
    constexpr std::size_t destinations_max = 100'000;
    if (mx_hosts.size() >= destinations_max) mx_hosts.clear();
    mx_hosts.emplace(job.destination, std::move(hosts));
    scheduler.reshape(job.destination, shape_of(job.destination).limits);  // the MX layer
  }
  scheduler.join_site(job.destination, job.site, site_shape(job.site).limits);
}

void relay::state::reshape_sites() noexcept {
  for (const auto& site : scheduler.site_names())
    scheduler.reshape_site(site, site_shape(site).limits);
}

// After a reload: a member whose domain now connects its own way (connects_its_own_way) leaves
// its site, so that no connection of the site carries its jobs (a `verify` domain's mail on
// a member's unverified connection; session 13's bug 7, by a reload) once its own connections
// have ended. Connections opened before the reload take no more jobs (opened_before_reload).
void relay::state::release_own_way_members() noexcept {
  if (!scheduler.has_sites()) return;
  for (const auto& site : scheduler.site_names()) {
    for (const auto& member : scheduler.members_of_site(site)) {
      if (connects_its_own_way(std::string(split_egress(member).first)))
        scheduler.leave_site(member, owner.wall_ms());
    }
  }
}

// Idle connections wait per site for the members of a site, per destination otherwise. The
// scheduler is where a destination's site is kept (no second map here: it cost ~100 bytes
// per destination, more with long MX host lists, and a scan of every destination per rule).
std::string relay::state::idle_key(const std::string& destination) const {
  if (!scheduler.has_sites()) return destination;
  const std::string_view site = scheduler.site_of(std::string_view(destination));
  return site.empty() ? destination : "site " + std::string(site);
}

std::vector<std::string> relay::state::site_members(const std::string& destination) const {
  return scheduler.site_members(destination);
}

void relay::state::follow_job(std::uint64_t cookie, const queue::job_view& job) noexcept {
  if (scheduler.site_of(job.destination).empty()) return;
  const auto name = connection_names.find(cookie);
  if (name == connection_names.end()) return;
  queue::destination_info info;
  if (scheduler.inspect(job.destination, info) && name->second != info.name)
    name->second.assign(info.name);
}

}  // namespace ringmta::server
