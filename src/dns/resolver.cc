#include "ringmta/dns/resolver.h"

#include <algorithm>
#include <utility>

#include "ringmta/core/assert.h"
#include "ringmta/dns/wire.h"

namespace ringmta::dns {

namespace {

constexpr std::uint32_t lookup_index_bits = 20;
constexpr std::uint64_t lookup_index_mask = (1u << lookup_index_bits) - 1;
constexpr std::uint64_t exchange_slot_mask = 0xffff;

}  // namespace

// One question on the wire, shared by every lookup that wants it (coalescing).
struct resolver::query {
  bool active = false;
  record_type type = record_type::a;
  std::string name;       // the asked name: the coalescing and cache key
  std::string wire_name;  // the name on the wire: differs after a CNAME we had to chase
  std::uint32_t cname_links = 0;
  std::uint32_t chain_ttl_s = 0;  // smallest TTL of the CNAMEs chased so far
  std::uint16_t id = 0;
  std::uint32_t first_server = 0;
  std::uint32_t attempts_used = 0;
  std::uint32_t server = 0;
  std::uint32_t tried_mask = 0;  // servers this id went to over UDP: a late reply still counts
  bool tcp = false;
  bool edns = true;
  bool saw_server_failure = false;
  std::uint64_t exchange = 0;
  std::uint64_t deadline_ms = 0;
  std::vector<std::uint8_t> packet;
  std::vector<std::uint8_t> tcp_in;
  std::vector<std::uint64_t> waiters;  // lookup ids
};

// One (name, type) a lookup needs answered.
struct resolver::need {
  enum class state : std::uint8_t { idle, blocked, waiting, done };
  std::string name;
  record_type type = record_type::a;
  state progress = state::idle;
  std::uint32_t host = 0;  // index into lookup::hosts for address questions
  answer result;
};

struct resolver::lookup {
  bool active = false;
  bool mx = true;            // false: a host lookup (smarthost)
  bool addresses_stage = false;
  bool implicit_mx = false;
  bool queued_blocked = false;
  bool waiting = false;  // asked while lookups_max were running: in _waiting, no question yet
  std::uint64_t id = 0;
  std::uint64_t deadline_ms = 0;
  std::string domain;
  std::string asked;  // the name as the caller gave it (an address literal keeps its form)
  std::vector<need> needs;
  std::vector<mx_record> hosts;  // in delivery order, during the addresses stage
};

resolver::resolver(resolver_config config, random_source random)
    : _config(std::move(config)),
      _random(std::move(random)),
      _cache(_config.cache_entries_max, _config.cache_bytes_max, _config.ttl_max_s,
             _config.negative_ttl_max_s) {
  RINGMTA_ASSERT(_config.validate().empty());
  RINGMTA_ASSERT(_random != nullptr);
  _queries.resize(_config.queries_in_flight_max);
  _query_by_id.assign(65536, 0);
  for (std::uint32_t i = _config.queries_in_flight_max; i > 0; --i) _free_queries.push_back(i - 1);
  const std::uint32_t lookup_slots = _config.lookups_max + _config.lookups_waiting_max;
  // Lookup slots are made on first use (start_lookup), not all here: a restart would build and
  // destroy thousands of them (issue 16). Reserved, so a slot never moves once made.
  _lookups.reserve(lookup_slots);
  // Allocated at start-up: push_deadline keeps the heap below this (rebuilt past it).
  const std::size_t slots = std::size_t{_config.queries_in_flight_max} + lookup_slots;
  _deadlines.reserve(2 * slots + 65);
  _due_scratch.reserve(slots);
}

resolver::~resolver() = default;

action& resolver::push_action(action_kind kind) {
  if (_action_count == _actions.size()) _actions.emplace_back();
  action& next = _actions[_action_count++];
  next.kind = kind;
  next.exchange = 0;
  next.server_index = 0;
  next.via = transport::udp;
  next.bytes = {};
  next.lookup = 0;
  next.result = mx_result{};
  next.storage.clear();
  return next;
}

action* resolver::next_action() noexcept {
  if (_action_next < _action_count) return &_actions[_action_next++];
  _action_next = _action_count = 0;  // all drained: the elements are reused from the start
  return nullptr;
}

std::uint64_t resolver::next_deadline_ms() const noexcept {
  while (!_deadlines.empty() && !deadline_live(_deadlines.front())) {
    std::pop_heap(_deadlines.begin(), _deadlines.end(), deadline_later{});
    _deadlines.pop_back();
  }
  return _deadlines.empty() ? no_deadline : _deadlines.front().at_ms;
}

// ---- deadlines -----------------------------------------------------------------------------

void resolver::push_deadline(std::uint64_t at_ms, std::uint64_t key, bool is_query) {
  _deadlines.push_back(deadline_entry{at_ms, key, is_query});
  std::push_heap(_deadlines.begin(), _deadlines.end(), deadline_later{});
  // Stale entries below a live top stay until they surface: bound them by the live count.
  if (_deadlines.size() > 2 * (_queries_active + _lookups_active) + 64) rebuild_deadlines();
}

// Live: its owner is still waiting for exactly this deadline (same attempt, same lookup).
bool resolver::deadline_live(const deadline_entry& entry) const noexcept {
  if (entry.is_query) {
    const auto slot = static_cast<std::size_t>(entry.key & exchange_slot_mask);
    if (slot >= _queries.size()) return false;
    const query& q = _queries[slot];
    return q.active && q.exchange == entry.key && q.deadline_ms == entry.at_ms;
  }
  const auto index = static_cast<std::size_t>(entry.key & lookup_index_mask);
  if (index >= _lookups.size()) return false;
  const lookup& l = _lookups[index];
  return l.active && l.id == entry.key && l.deadline_ms == entry.at_ms;
}

// One pass over the slots, amortized over the pushes that made the heap this large.
void resolver::rebuild_deadlines() {
  _deadlines.clear();
  for (const auto& q : _queries)
    if (q.active) _deadlines.push_back(deadline_entry{q.deadline_ms, q.exchange, true});
  for (const auto& l : _lookups)
    if (l.active) _deadlines.push_back(deadline_entry{l.deadline_ms, l.id, false});
  std::make_heap(_deadlines.begin(), _deadlines.end(), deadline_later{});
}

// ---- lookups -------------------------------------------------------------------------------

std::uint64_t resolver::start_mx_lookup(std::string_view domain, std::uint64_t now_ms,
                                        std::uint64_t deadline_ms) {
  return start_lookup(true, domain, now_ms, deadline_ms);
}

std::uint64_t resolver::start_host_lookup(std::string_view host, std::uint64_t now_ms,
                                          std::uint64_t deadline_ms) {
  return start_lookup(false, host, now_ms, deadline_ms);
}

std::uint64_t resolver::start_lookup(bool mx, std::string_view name, std::uint64_t now_ms,
                                     std::uint64_t deadline_ms) {
  ++_counters.lookups_started;
  _last_now_ms = std::max(_last_now_ms, now_ms);
  const std::uint64_t sequence = ++_lookup_sequence;
  if (_free_lookups.empty() &&
      _lookups.size() < std::size_t{_config.lookups_max} + _config.lookups_waiting_max) {
    // The next slot never used. Slots are taken in the order a full free list would give
    // (0, 1, ...; then the last released first), so ids do not depend on when slots were made.
    _free_lookups.push_back(static_cast<std::uint32_t>(_lookups.size()));
    _lookups.emplace_back();
  }
  if (_free_lookups.empty()) {  // running and waiting slots all busy: refuse, the queue retries
    const std::uint64_t id = sequence << lookup_index_bits | lookup_index_mask;
    action& done = push_action(action_kind::lookup_done);
    done.lookup = id;
    done.result = failure_result(failure_kind::overloaded, "too many DNS lookups in progress");
    ++_counters.lookups_done;
    return id;
  }
  const std::uint32_t index = _free_lookups.back();
  _free_lookups.pop_back();
  ++_lookups_active;
  lookup& l = _lookups[index];
  l.active = true;
  l.mx = mx;
  l.addresses_stage = false;
  l.implicit_mx = false;
  l.queued_blocked = false;
  l.waiting = false;
  l.id = sequence << lookup_index_bits | index;
  // A waiting lookup's deadline counts from now too: the caller's wait is bounded the same.
  l.deadline_ms = deadline_ms != 0 ? deadline_ms : now_ms + _config.lookup_timeout_ms;
  push_deadline(l.deadline_ms, l.id, false);
  l.domain = normalize_name(name);
  l.asked.assign(name);
  l.needs.clear();
  l.hosts.clear();
  const std::uint64_t id = l.id;
  if (_lookups_running >= _config.lookups_max) {  // wait for a running one to end (FIFO)
    l.waiting = true;
    _waiting.push_back(id);
    return id;
  }
  ++_lookups_running;
  begin(l, now_ms);
  start_waiting(now_ms);
  return id;
}

// The lookup's first step: an address literal or a bad name ends it here, else its questions.
void resolver::begin(lookup& l, std::uint64_t now_ms) {
  const std::uint64_t id = l.id;
  if (const auto literal = parse_address_literal(l.asked)) {  // RFC 5321 §5.1: no DNS at all
    mx_result result;
    result.status = lookup_status::ok;
    result.hosts.push_back(mx_host{l.asked, 0, {*literal}});
    complete(id, std::move(result));
    return;
  }
  if (!is_valid_domain(l.asked)) {
    complete(id, failure_result(failure_kind::bad_domain,
                                "invalid domain name: " + l.asked.substr(0, 255)));
    return;
  }
  if (l.mx) {
    l.needs.emplace_back();
    l.needs.back().name = l.domain;
    l.needs.back().type = record_type::mx;
  } else {
    l.hosts.push_back(mx_record{0, l.domain});
    plan_addresses(l, now_ms);
  }
  advance(id, now_ms);
}

// Starts waiting lookups, oldest first, while fewer than lookups_max run. Called at the end of
// every entry point (never from inside one: begin() may complete a lookup, which frees a
// running slot, and a loop here instead of recursion keeps the stack flat).
void resolver::start_waiting(std::uint64_t now_ms) {
  while (_lookups_running < _config.lookups_max && !_waiting.empty()) {
    const std::uint64_t lookup_id = _waiting.front();
    _waiting.pop_front();
    lookup* l = find_lookup(lookup_id);
    if (l == nullptr || !l->waiting) continue;  // cancelled or past its deadline meanwhile
    l->waiting = false;
    ++_lookups_running;
    begin(*l, now_ms);
  }
  // Ids of lookups that ended while waiting stay until they reach the front: bound them.
  if (_waiting.size() > 2 * lookups_waiting() + 64) {
    std::erase_if(_waiting, [this](std::uint64_t lookup_id) {
      const lookup* l = find_lookup(lookup_id);
      return l == nullptr || !l->waiting;
    });
  }
}

void resolver::cancel(std::uint64_t lookup_id) noexcept {
  release_lookup(lookup_id);
  start_waiting(_last_now_ms);
}

void resolver::release_lookup(std::uint64_t lookup_id) noexcept {
  lookup* l = find_lookup(lookup_id);
  if (l == nullptr) return;
  l->active = false;
  --_lookups_active;
  if (!l->waiting) --_lookups_running;
  l->waiting = false;
  _free_lookups.push_back(static_cast<std::uint32_t>(lookup_id & lookup_index_mask));
}

resolver::lookup* resolver::find_lookup(std::uint64_t lookup_id) noexcept {
  const std::uint64_t index = lookup_id & lookup_index_mask;
  if (index >= _lookups.size()) return nullptr;
  lookup& l = _lookups[index];
  return l.active && l.id == lookup_id ? &l : nullptr;
}

void resolver::complete(std::uint64_t lookup_id, mx_result result) {
  lookup* l = find_lookup(lookup_id);
  RINGMTA_ASSERT(l != nullptr);
  RINGMTA_ASSERT(result.status != lookup_status::ok || !result.hosts.empty());
  release_lookup(lookup_id);  // not cancel(): waiting lookups start at the end of the entry
  action& done = push_action(action_kind::lookup_done);
  done.lookup = lookup_id;
  done.result = std::move(result);
  ++_counters.lookups_done;
}

// Replaces the lookup's questions by the A/AAAA questions of its hosts.
bool resolver::plan_addresses(lookup& l, std::uint64_t) {
  l.addresses_stage = true;
  l.needs.clear();
  for (std::uint32_t i = 0; i < l.hosts.size(); ++i) {
    for (const record_type type : {record_type::a, record_type::aaaa}) {
      if ((type == record_type::a && !_config.ipv4) || (type == record_type::aaaa && !_config.ipv6))
        continue;
      l.needs.emplace_back();
      l.needs.back().name = l.hosts[i].exchange;
      l.needs.back().type = type;
      l.needs.back().host = i;
    }
  }
  return !l.needs.empty();
}

// Asks every question the lookup still needs; when all are answered, takes the next step.
void resolver::advance(std::uint64_t lookup_id, std::uint64_t now_ms) {
  for (;;) {
    lookup* l = find_lookup(lookup_id);
    if (l == nullptr) return;
    bool all_done = true;
    for (auto& wanted : l->needs) {
      if (wanted.progress == need::state::idle || wanted.progress == need::state::blocked)
        ask(*l, lookup_id, wanted, now_ms);
      all_done = all_done && wanted.progress == need::state::done;
    }
    if (!all_done) return;
    if (l->addresses_stage) {
      complete(lookup_id, l->mx ? mx_outcome(*l) : host_outcome(*l));
      return;
    }
    // The MX answer is in: RFC 5321 §5.1.
    const answer& mx = l->needs.front().result;
    const std::string& domain = l->domain;
    if (is_temporary(mx.status)) {
      complete(lookup_id, failure_result(mx.status == answer_status::timeout
                                             ? failure_kind::timeout
                                             : failure_kind::server_failure,
                                         "MX lookup for " + domain + ": " +
                                             answer_status_name(mx.status)));
      return;
    }
    if (mx.status == answer_status::nxdomain) {
      complete(lookup_id,
               failure_result(failure_kind::no_such_domain, "domain " + domain + " not found"));
      return;
    }
    if (mx.status == answer_status::ok && is_null_mx(mx.mx)) {  // RFC 7505 §3
      complete(lookup_id, failure_result(failure_kind::null_mx,
                                         "domain " + domain + " does not accept mail (null MX)"));
      return;
    }
    if (mx.status == answer_status::ok) {
      l->hosts = order_mx(mx.mx, _random, _config.mx_hosts_max);
    } else {  // NODATA: the implicit MX of RFC 5321 §5.1 is the domain itself, preference 0
      l->implicit_mx = true;
      l->hosts.assign(1, mx_record{0, mx.canonical_name.empty() ? domain : mx.canonical_name});
    }
    if (l->hosts.empty()) {
      complete(lookup_id,
               failure_result(failure_kind::no_mail_route, "domain " + domain + " has no MX host"));
      return;
    }
    plan_addresses(*l, now_ms);
  }
}

mx_result resolver::mx_outcome(const lookup& l) const {
  mx_result result;
  bool temporary = false;
  bool timed_out = false;
  std::string failed_host;
  for (std::uint32_t i = 0; i < l.hosts.size(); ++i) {
    const answer* a = nullptr;
    const answer* aaaa = nullptr;
    for (const auto& wanted : l.needs) {
      if (wanted.host != i) continue;
      (wanted.type == record_type::a ? a : aaaa) = &wanted.result;
    }
    bool host_temporary = false;
    auto addresses = host_addresses(a, aaaa, _config.prefer_ipv6, host_temporary);
    if (!addresses.empty()) {
      result.hosts.push_back(mx_host{l.hosts[i].exchange, l.hosts[i].preference,
                                     std::move(addresses)});
    } else if (host_temporary) {  // skipped for now; a later attempt may find it
      temporary = true;
      timed_out = timed_out || (a != nullptr && a->status == answer_status::timeout) ||
                  (aaaa != nullptr && aaaa->status == answer_status::timeout);
      if (failed_host.empty()) failed_host = l.hosts[i].exchange;
    }
  }
  if (!result.hosts.empty()) {
    result.status = lookup_status::ok;
    result.implicit_mx = l.implicit_mx;
    return result;
  }
  if (temporary)
    return failure_result(timed_out ? failure_kind::timeout : failure_kind::server_failure,
                          "address lookup for " + failed_host + " (mail host of " + l.domain +
                              ") failed temporarily");
  if (l.implicit_mx)
    return failure_result(failure_kind::no_mail_route,
                          "domain " + l.domain + " has no MX and no address record");
  return failure_result(failure_kind::no_mail_route,
                        "no MX host of " + l.domain + " has an address");
}

mx_result resolver::host_outcome(const lookup& l) const {
  mx_result result = mx_outcome(l);
  if (result.status == lookup_status::ok) return result;
  bool all_nxdomain = true;
  for (const auto& wanted : l.needs)
    all_nxdomain = all_nxdomain && wanted.result.status == answer_status::nxdomain;
  if (all_nxdomain) return failure_result(failure_kind::no_such_domain,
                                          "host " + l.domain + " not found");
  if (result.failure == failure_kind::no_mail_route)
    result.text = "host " + l.domain + " has no address record";
  return result;
}

void resolver::wake_blocked(std::uint64_t now_ms) {
  while (!_blocked.empty() && !_free_queries.empty()) {
    const std::uint64_t lookup_id = _blocked.front();
    _blocked.pop_front();
    if (lookup* l = find_lookup(lookup_id)) {
      l->queued_blocked = false;
      advance(lookup_id, now_ms);
    }
  }
}

// ---- questions -----------------------------------------------------------------------------

// Answers `wanted` from the cache, joins a question already on the wire, or puts a new one there.
void resolver::ask(lookup& owner, std::uint64_t owner_id, need& wanted, std::uint64_t now_ms) {
  if (!is_valid_domain(wanted.name)) {  // an MX exchange that is no host name: nothing to find
    wanted.result = answer{};
    wanted.result.status = answer_status::nxdomain;
    wanted.progress = need::state::done;
    return;
  }
  if (const answer* cached = _cache.find(wanted.name, wanted.type, now_ms)) {
    ++_counters.cache_hits;
    wanted.result = *cached;
    wanted.progress = need::state::done;
    return;
  }
  for (auto& q : _queries) {
    if (q.active && q.type == wanted.type && q.name == wanted.name) {
      ++_counters.coalesced;
      if (std::find(q.waiters.begin(), q.waiters.end(), owner_id) == q.waiters.end())
        q.waiters.push_back(owner_id);
      wanted.progress = need::state::waiting;
      return;
    }
  }
  if (_free_queries.empty()) {  // bounded: wait for a slot (or the lookup's deadline)
    wanted.progress = need::state::blocked;
    if (!owner.queued_blocked) {
      owner.queued_blocked = true;
      _blocked.push_back(owner_id);
    }
    return;
  }
  ++_counters.cache_misses;
  const std::uint32_t slot = start_query(wanted.name, wanted.type, now_ms);
  _queries[slot].waiters.push_back(owner_id);
  wanted.progress = need::state::waiting;
}

std::uint16_t resolver::fresh_id() noexcept {
  for (;;) {  // terminates: at most 65535 of the 65536 ids are in use
    const auto id = static_cast<std::uint16_t>(_random() & 0xffff);
    if (_query_by_id[id] == 0) return id;
  }
}

std::uint32_t resolver::start_query(std::string_view name, record_type type,
                                    std::uint64_t now_ms) {
  RINGMTA_ASSERT(!_free_queries.empty());
  const std::uint32_t slot = _free_queries.back();
  _free_queries.pop_back();
  ++_queries_active;
  query& q = _queries[slot];
  q.active = true;
  q.type = type;
  q.name.assign(name);
  q.wire_name.assign(name);
  q.cname_links = 0;
  q.chain_ttl_s = std::numeric_limits<std::uint32_t>::max();
  q.id = fresh_id();
  _query_by_id[q.id] = static_cast<std::uint16_t>(slot + 1);
  const auto servers = static_cast<std::uint32_t>(_config.servers.size());
  q.first_server = _config.rotate ? _rotate_next++ % servers : 0;
  q.attempts_used = 0;
  q.tried_mask = 0;
  q.tcp = false;
  q.edns = _config.edns_payload_bytes != 0;
  q.saw_server_failure = false;
  q.waiters.clear();
  next_attempt(slot, now_ms);
  return slot;
}

// The next server in turn over UDP, or the end of the question when attempts are used up.
void resolver::next_attempt(std::uint32_t slot, std::uint64_t now_ms) {
  query& q = _queries[slot];
  const auto servers = static_cast<std::uint32_t>(_config.servers.size());
  if (q.attempts_used >= _config.attempts * servers) {
    answer failed;
    failed.status = q.saw_server_failure ? answer_status::server_failure : answer_status::timeout;
    failed.canonical_name = q.wire_name;
    finish_query(slot, std::move(failed), now_ms);
    return;
  }
  const std::uint32_t server = (q.first_server + q.attempts_used) % servers;
  ++q.attempts_used;
  transmit(slot, server, false, now_ms);
}

void resolver::transmit(std::uint32_t slot, std::uint32_t server, bool tcp,
                        std::uint64_t now_ms) {
  query& q = _queries[slot];
  q.server = server;
  q.tcp = tcp;
  q.tcp_in.clear();
  q.exchange = ++_exchange_sequence << 16 | slot;
  q.deadline_ms = now_ms + _config.timeout_ms;
  const auto built = build_query(q.id, q.wire_name, q.type,
                                 q.edns ? _config.edns_payload_bytes : 0, tcp, q.packet);
  if (!built) {  // names are checked before; should it still fail, time out (never recurse)
    q.deadline_ms = now_ms;
    push_deadline(q.deadline_ms, q.exchange, true);
    return;
  }
  push_deadline(q.deadline_ms, q.exchange, true);
  if (!tcp) q.tried_mask |= 1u << server;
  ++(tcp ? _counters.tcp_sent : _counters.udp_sent);
  action& send = push_action(action_kind::send);
  send.exchange = q.exchange;
  send.server_index = server;
  send.via = tcp ? transport::tcp : transport::udp;
  send.storage.assign(q.packet.begin(), q.packet.end());
  send.bytes = send.storage;
}

void resolver::close_tcp(query& q) {
  if (!q.tcp) return;
  action& close = push_action(action_kind::close);
  close.exchange = q.exchange;
  close.server_index = q.server;
  close.via = transport::tcp;
  q.tcp = false;
}

void resolver::attempt_failed(std::uint32_t slot, answer_status why, std::uint64_t now_ms) {
  query& q = _queries[slot];
  close_tcp(q);
  if (why == answer_status::server_failure) {
    q.saw_server_failure = true;
    ++_counters.server_failures;
  } else {
    ++_counters.timeouts;
  }
  next_attempt(slot, now_ms);
}

void resolver::handle_reply(std::uint32_t slot, std::span<const std::uint8_t> message, bool tcp,
                            std::uint64_t now_ms) {
  query& q = _queries[slot];
  parsed_response reply = parse_response(message, q.id, q.wire_name, q.type,
                                         _config.cname_depth_max);
  if (tcp) close_tcp(q);  // one query per connection: done with it whatever it said
  switch (reply.kind) {
    case response_kind::mismatch:
      ++_counters.mismatched;
      if (tcp) attempt_failed(slot, answer_status::server_failure, now_ms);
      return;  // UDP: maybe a spoofing attempt; keep waiting for the real reply
    case response_kind::malformed:
    case response_kind::server_failure:
      attempt_failed(slot, answer_status::server_failure, now_ms);
      return;
    case response_kind::format_error:
      if (!q.edns) {
        attempt_failed(slot, answer_status::server_failure, now_ms);
        return;
      }
      q.edns = false;  // RFC 6891 §7: ask the same server again without OPT
      transmit(slot, q.server, tcp, now_ms);
      return;
    case response_kind::truncated:
      if (tcp) {  // a truncated reply over TCP is useless
        attempt_failed(slot, answer_status::server_failure, now_ms);
        return;
      }
      ++_counters.truncated;
      transmit(slot, q.server, true, now_ms);  // RFC 7766 §5, RFC 1035 §4.2.2
      return;
    case response_kind::cname:
      if (++q.cname_links > _config.cname_depth_max) {
        attempt_failed(slot, answer_status::server_failure, now_ms);
        return;
      }
      q.chain_ttl_s = std::min(q.chain_ttl_s, reply.result.ttl_s);
      q.wire_name = std::move(reply.next_name);
      _query_by_id[q.id] = 0;  // a new question gets a new id and a fresh set of attempts
      q.id = fresh_id();
      _query_by_id[q.id] = static_cast<std::uint16_t>(slot + 1);
      q.attempts_used = 0;
      q.tried_mask = 0;
      next_attempt(slot, now_ms);
      return;
    case response_kind::answer:
      reply.result.ttl_s = std::min(reply.result.ttl_s, q.chain_ttl_s);
      finish_query(slot, std::move(reply.result), now_ms);
      return;
  }
}

void resolver::release_query(std::uint32_t slot) noexcept {
  query& q = _queries[slot];
  _query_by_id[q.id] = 0;
  q.active = false;
  --_queries_active;
  _free_queries.push_back(slot);
}

// Caches the answer, frees the slot, then hands the answer to every lookup waiting for it.
void resolver::finish_query(std::uint32_t slot, answer result, std::uint64_t now_ms) {
  query& q = _queries[slot];
  close_tcp(q);
  _cache.insert(q.name, q.type, result, now_ms);
  _name_scratch.swap(q.name);  // both keep their capacity
  const std::string& name = _name_scratch;
  const record_type type = q.type;
  // Never re-entered: advance() only starts questions, it never finishes one.
  std::vector<std::uint64_t> waiters = std::move(_waiters_scratch);
  waiters.clear();
  waiters.swap(q.waiters);  // the slot keeps the scratch's capacity for its next question
  release_query(slot);
  for (const std::uint64_t lookup_id : waiters) {
    lookup* l = find_lookup(lookup_id);
    if (l == nullptr) continue;  // cancelled or past its deadline
    for (auto& wanted : l->needs) {
      if (wanted.progress == need::state::waiting && wanted.type == type && wanted.name == name) {
        wanted.result = result;
        wanted.progress = need::state::done;
      }
    }
    advance(lookup_id, now_ms);
  }
  waiters.clear();
  _waiters_scratch = std::move(waiters);
  wake_blocked(now_ms);
}

// ---- events --------------------------------------------------------------------------------

// Every entry point below takes the event's time and, however it returns, ends by starting
// the lookups that waited for a slot one of its lookups freed.
class resolver::entry_point {
 public:
  entry_point(resolver& self, std::uint64_t now_ms) noexcept : _self(self), _now_ms(now_ms) {
    _self._last_now_ms = std::max(_self._last_now_ms, now_ms);
  }
  ~entry_point() { _self.start_waiting(_now_ms); }
  entry_point(const entry_point&) = delete;
  entry_point& operator=(const entry_point&) = delete;

 private:
  resolver& _self;
  std::uint64_t _now_ms;
};

void resolver::on_udp_packet(std::uint32_t server_index, std::span<const std::uint8_t> bytes,
                             std::uint64_t now_ms) {
  const entry_point entered(*this, now_ms);
  const int id = message_id(bytes);
  const std::uint16_t slot_plus_one = id < 0 ? 0 : _query_by_id[static_cast<std::size_t>(id)];
  if (slot_plus_one == 0 || server_index >= _config.servers.size()) {
    ++_counters.mismatched;
    return;
  }
  const std::uint32_t slot = slot_plus_one - 1u;
  const query& q = _queries[slot];
  if (!q.active || q.tcp || (q.tried_mask & (1u << server_index)) == 0) {
    ++_counters.mismatched;  // not a server we asked this question, or we moved to TCP
    return;
  }
  handle_reply(slot, bytes, false, now_ms);
}

void resolver::on_tcp_data(std::uint64_t exchange, std::span<const std::uint8_t> bytes,
                           std::uint64_t now_ms) {
  const entry_point entered(*this, now_ms);
  const auto slot = static_cast<std::uint32_t>(exchange & exchange_slot_mask);
  if (slot >= _queries.size()) return;
  query& q = _queries[slot];
  if (!q.active || !q.tcp || q.exchange != exchange) return;  // stale connection
  std::size_t wanted = 2;  // RFC 1035 §4.2.2: a two-octet length, then the message
  if (q.tcp_in.size() >= 2) wanted += std::size_t{q.tcp_in[0]} << 8 | q.tcp_in[1];
  while (!bytes.empty() && q.tcp_in.size() < wanted) {
    const std::size_t take = std::min(bytes.size(), wanted - q.tcp_in.size());
    q.tcp_in.insert(q.tcp_in.end(), bytes.begin(), bytes.begin() + static_cast<long>(take));
    bytes = bytes.subspan(take);
    if (q.tcp_in.size() == 2) wanted += std::size_t{q.tcp_in[0]} << 8 | q.tcp_in[1];
  }
  if (q.tcp_in.size() < 2 || q.tcp_in.size() < wanted) return;  // more to come
  // handle_reply parses before anything can touch tcp_in again (transmit clears it).
  handle_reply(slot, std::span(q.tcp_in).subspan(2), true, now_ms);
}

void resolver::on_tcp_closed(std::uint64_t exchange, std::uint64_t now_ms) {
  const entry_point entered(*this, now_ms);
  const auto slot = static_cast<std::uint32_t>(exchange & exchange_slot_mask);
  if (slot >= _queries.size()) return;
  query& q = _queries[slot];
  if (!q.active || !q.tcp || q.exchange != exchange) return;
  q.tcp = false;  // the embedder closed it already: no close action
  attempt_failed(slot, answer_status::server_failure, now_ms);
}

void resolver::on_send_failed(std::uint64_t exchange, std::uint64_t now_ms) {
  const entry_point entered(*this, now_ms);
  const auto slot = static_cast<std::uint32_t>(exchange & exchange_slot_mask);
  if (slot >= _queries.size()) return;
  query& q = _queries[slot];
  if (!q.active || q.exchange != exchange) return;
  attempt_failed(slot, answer_status::server_failure, now_ms);
}

void resolver::on_time(std::uint64_t now_ms) {
  const entry_point entered(*this, now_ms);
  _due_scratch.clear();
  while (!_deadlines.empty() && _deadlines.front().at_ms <= now_ms) {
    std::pop_heap(_deadlines.begin(), _deadlines.end(), deadline_later{});
    if (deadline_live(_deadlines.back())) _due_scratch.push_back(_deadlines.back());
    _deadlines.pop_back();
  }
  // The order the slot scan had: query attempts first (a timed-out attempt may end a lookup
  // with its own answer), then lookups past their deadline; each by slot.
  std::sort(_due_scratch.begin(), _due_scratch.end(),
            [](const deadline_entry& a, const deadline_entry& b) {
              if (a.is_query != b.is_query) return a.is_query;
              const std::uint64_t mask = a.is_query ? exchange_slot_mask : lookup_index_mask;
              return (a.key & mask) < (b.key & mask);
            });
  for (const deadline_entry& due : _due_scratch) {  // never re-entered: nothing calls on_time
    if (!deadline_live(due)) continue;  // ended by an earlier one of this pass
    if (due.is_query) {
      attempt_failed(static_cast<std::uint32_t>(due.key & exchange_slot_mask),
                     answer_status::timeout, now_ms);
      continue;
    }
    const lookup& l = _lookups[due.key & lookup_index_mask];
    complete(l.id, failure_result(failure_kind::timeout,
                                  "DNS lookup for " + l.domain + " did not finish in time" +
                                      (l.waiting ? " (waited for a lookup slot)" : "")));
  }
}

}  // namespace ringmta::dns
