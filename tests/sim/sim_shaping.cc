#include "sim_shaping.h"

#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include <re2/re2.h>

#include "ringmta/config/settings.h"
#include "ringmta/server/shaping.h"

namespace ringmta::sim::internal {

namespace {
// The rules' patterns by their cues (bit 0 [TSS04], bit 1 [RL28]), compiled as the daemon
// compiles a [[reply_rule]]'s (shaping.cc): case-insensitive.
constexpr const char* rule_patterns[] = {"", R"(^421 4\.7\.0 \[TSS04\])",
                                         R"(^451 4\.7\.28 \[RL28\])", R"(\[(TSS04|RL28)\])"};
const RE2& compiled_pattern(unsigned cues) {
  static const auto compiled = [] {
    std::vector<std::unique_ptr<RE2>> out;
    RE2::Options options;
    options.set_case_sensitive(false);
    for (const char* pattern : rule_patterns) out.push_back(std::make_unique<RE2>(pattern, options));
    return out;
  }();
  return *compiled.at(cues);
}
}  // namespace

// ---- one destination's bounds

void rate_check::set(const sim_rate& rate, std::int64_t now_ns) {
  if (rate == _rate) return;
  _rate = rate;
  restart(now_ns);
}

void rate_check::restart(std::int64_t now_ns) {
  _epoch_ns = now_ns;
  _taken_after.clear();
}

std::string rate_check::on_transaction(std::int64_t after_ns, std::int64_t now_ns) {
  if (_rate.messages == 0 || after_ns < _epoch_ns) return {};
  while (!_taken_after.empty() && _taken_after.front() < now_ns - rate_horizon_ns)
    _taken_after.pop_front();
  _taken_after.insert(std::upper_bound(_taken_after.begin(), _taken_after.end(), after_ns),
                      after_ns);
  // The k latest lower bounds: k transactions taken within [that bound, now].
  std::size_t k = 0;
  for (auto at = _taken_after.rbegin(); at != _taken_after.rend(); ++at) {
    ++k;
    const double window_ms = static_cast<double>(now_ns - *at) / 1e6 + 1;
    const double allowed = _rate.burst + window_ms * _rate.messages / _rate.period_ms;
    if (static_cast<double>(k) <= allowed + 1e-9) continue;
    return fmt::format("{} transactions taken within {:.3f} s, beyond {} per {} ms with a burst "
                       "of {} ({:.2f} allowed)", k, window_ms / 1000, _rate.messages,
                       _rate.period_ms, _rate.burst, allowed);
  }
  return {};
}

// ---- the seed's shaping

shaping::shaping(std::uint64_t seed, bool enabled, bool faults,
                 std::vector<std::string> domains)
    : _rng(seed * 0x9e3779b97f4a7c15ull + 0x5ca1e), _domains(std::move(domains)),
      _cue_rng(seed * 0x9e3779b97f4a7c15ull + 0xc0e28),
      _reload_rng(seed * 0x9e3779b97f4a7c15ull + 0x4e10ad) {
  _per_second.resize(_domains.size());
  _checks.resize(_domains.size());
  _throttles.resize(_domains.size());
  _throttles_at_crash.resize(_domains.size());
  _throttles_recovered.assign(_domains.size(), 0);
  _tss04.assign(_domains.size(), 0.0);
  _rl28.assign(_domains.size(), 0.0);
  if (!enabled) return;
  _rates = _rng.chance(0.35);
  if (_rates) {
    if (_rng.chance(0.5)) _default_rate = draw_rate();
    for (auto& own : _per_second) {
      if (!_rng.chance(0.4)) continue;
      // "n per second" (burst n) or "one per k seconds" (burst 1): what a config can say.
      own = _rng.chance(0.5) ? static_cast<double>(_rng.between(1, 20))
                             : 1.0 / static_cast<double>(_rng.between(1, 10));
    }
    apply_rates(0);
  }
  if (faults && _rng.chance(0.25)) {
    sim_rule rule;
    rule.origin = "sim:rule";
    const std::uint64_t which = _rng.below(_domains.size() + 1);
    rule.domain = which < _domains.size() ? _domains[which] : std::string();
    rule.duration_s = static_cast<std::uint32_t>(_rng.between(1, 60));
    for (auto& chance : _tss04) chance = static_cast<double>(_rng.below(8)) / 100;
    draw_action(seed, rule);
    _throttle_rates = rule.per_second.has_value();
    _rules.push_back(std::move(rule));
    draw_more_rules(seed);
  }
  if (_rng.chance(0.3)) _delay_warning_ms = static_cast<std::int64_t>(_rng.between(2, 120)) * 1000;
}

// The rule's action and its MX pattern, from a stream of their own (session 13): every other
// draw stays; a seed whose rule stays a suspend naming a domain replays as before.
void shaping::draw_action(std::uint64_t seed, sim_rule& rule) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x7e1e5);
  draw_action_of(draw, rule);
}

void shaping::draw_action_of(random& draw, sim_rule& rule) {
  rule.action = config::reply_action::suspend;
  rule.connections.reset();
  rule.per_second.reset();
  const std::uint64_t action = draw.below(100);
  if (action >= 70) {
    rule.action = config::reply_action::bounce;
  } else if (action >= 40) {
    rule.action = config::reply_action::throttle;
    if (draw.chance(0.5)) rule.connections = static_cast<std::uint32_t>(draw.between(1, 2));
    if (!rule.connections || draw.chance(0.6)) {
      rule.per_second = draw.chance(0.5) ? static_cast<double>(draw.between(1, 5))
                                         : 1.0 / static_cast<double>(draw.between(2, 10));
    }
  }
  if (!draw.chance(0.3)) return;
  // Every MX host of one domain (not an implicit MX: the domain's own name), or of every one.
  const std::uint64_t which = draw.below(_domains.size() + 1);
  rule.mx = which < _domains.size() ? fmt::format("*.{}", _domains[which]) : "*.example";
  rule.domain.clear();
}

// Rules beyond the first (session 15), from a stream of their own: a seed that draws none
// replays as before. Half the seeds with a rule get one or two more, anywhere in the config's
// order, and some domains' remotes answer the second cue ([RL28], a 451 that does not end the
// session) too.
void shaping::draw_more_rules(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x5e7e2a1);
  if (draw.chance(0.5)) return;
  const std::uint64_t more = draw.between(1, 2);
  for (auto& chance : _rl28) chance = static_cast<double>(draw.below(8)) / 100;
  for (std::uint64_t n = 0; n < more; ++n) {
    sim_rule rule = draw_rule(draw);
    const std::uint64_t at = draw.below(_rules.size() + 1);
    _rules.insert(_rules.begin() + static_cast<std::ptrdiff_t>(at), std::move(rule));
  }
}

// A rule's cues: [TSS04] only, [RL28] only, or either (one pattern over both: it overlaps
// every other rule of the same destination).
shaping::sim_rule shaping::draw_rule(random& draw) {
  sim_rule rule;
  rule.origin = fmt::format("sim:rule{}", ++_rules_drawn);
  rule.cues = static_cast<unsigned>(draw.between(1, 3));
  rule.duration_s = static_cast<std::uint32_t>(draw.between(1, 60));
  const std::uint64_t which = draw.below(_domains.size() + 1);
  rule.domain = which < _domains.size() ? _domains[which] : std::string();
  draw_action_of(draw, rule);
  if (rule.per_second) _throttle_rates = true;
  return rule;
}

// The scheduler's own bucket (queue::destination_limits) takes any triple; the global
// default is drawn that way: 1-20 messages per 1-10 s, 1-5 banked.
sim_rate shaping::draw_rate() {
  sim_rate rate;
  rate.messages = static_cast<std::uint32_t>(_rng.between(1, 20));
  rate.period_ms = static_cast<std::uint32_t>(_rng.between(1, 10)) * 1000;
  rate.burst = static_cast<std::uint32_t>(_rng.between(1, 5));
  return rate;
}

namespace {
// shaping.h: "a rate below 1/s becomes one message per 1000/rate ms", a burst of the rate.
sim_rate per_second(double rate) {
  if (rate >= 1) {
    const auto n = static_cast<std::uint32_t>(rate);
    return {n, 1000, n};
  }
  return {1, static_cast<std::uint32_t>(1000 / rate), 1};
}
}  // namespace

sim_rate shaping::expected(std::uint32_t domain) const {
  const auto& own = _per_second[domain];
  return own ? per_second(*own) : _default_rate.value_or(sim_rate{});
}

// settings.h: a throttle's limits "become these", and a reply rule lowers, never raises
// (relay.cc shape_of): the lower of the two rates, with the smaller burst.
sim_rate shaping::throttled(std::uint32_t domain) const {
  const sim_rate own = expected(domain);
  const std::optional<double>& rate = _throttles[domain].per_second;
  if (!rate) return own;
  const sim_rate rule = per_second(*rate);
  if (own.messages == 0) return rule;
  const bool rule_lower = std::uint64_t{rule.messages} * own.period_ms <
                          std::uint64_t{own.messages} * rule.period_ms;
  sim_rate out = rule_lower ? rule : own;
  out.burst = std::min(rule.burst, own.burst);
  return out;
}

void shaping::apply_rates(std::int64_t now_ns) {
  for (std::uint32_t d = 0; d < _domains.size(); ++d) {
    const bool throttling = _throttles[d].until_ns > now_ns;
    _checks[d].set(throttling ? throttled(d) : expected(d), now_ns);
  }
}

// The daemon's make_relay_config always builds the shaping table, over the configured limits:
// every destination's limits come from it (the scheduler's limits_for). So does the simulation,
// drawn or not: a configuration without one made relay::update keep the table of the start and
// its limits, and the operator's reloads of connections_max never applied in seeds that drew no
// rates or rules (162000158 --arrival-ms 3000 --no-crashes --shards-max 3 on the simulator of
// 6ce4a71: connections_max reloaded to 1, sender.example kept 3).
void shaping::configure(server::relay_config& config) const {
  if (_delay_warning_ms > 0) config.scheduler.delay_warning_ms = _delay_warning_ms;
  auto& limits = config.scheduler.limits;
  if (!_rates && _rules.empty()) {
    config.shaping = std::make_shared<const server::shaping_table>(config::settings{}, limits);
    return;
  }
  if (_default_rate) {
    limits.rate_messages = _default_rate->messages;
    limits.rate_period_ms = _default_rate->period_ms;
    limits.rate_burst = _default_rate->burst;
  }
  config::settings settings;
  for (std::uint32_t d = 0; d < _domains.size(); ++d) {
    if (!_per_second[d]) continue;
    config::shaping_entry entry;
    entry.domain = _domains[d];
    entry.messages_per_second_max = *_per_second[d];
    entry.origin = fmt::format("sim:{}", d);
    settings.shaping.push_back(std::move(entry));
  }
  for (const auto& drawn : _rules) {
    config::reply_rule_entry rule;
    rule.domain = drawn.domain;
    rule.mx = drawn.mx;
    rule.pattern = rule_patterns[drawn.cues];
    rule.action = drawn.action;
    rule.duration_s = drawn.duration_s;
    rule.connections_max = drawn.connections;
    rule.messages_per_second_max = drawn.per_second;
    rule.origin = drawn.origin;
    settings.reply_rules.push_back(std::move(rule));
  }
  config.shaping = std::make_shared<const server::shaping_table>(settings, limits);
}

std::string shaping::describe() const {
  if (!_rates && _rules.empty() && _delay_warning_ms == 0) return {};
  std::string out = "shaping:";
  for (std::uint32_t d = 0; d < _domains.size() && _rates; ++d) {
    const sim_rate r = expected(d);
    out += fmt::format(" {} {}/{}ms burst {}", _domains[d], r.messages, r.period_ms, r.burst);
  }
  out += describe_rules();
  if (_delay_warning_ms > 0) out += fmt::format(" | delay warning {}s", _delay_warning_ms / 1000);
  return out;
}

// One rule as the seeds before session 15 wrote it; several with their cues and origins.
std::string shaping::describe_rules() const {
  constexpr const char* actions[] = {"suspend", "throttle", "bounce"};
  constexpr const char* cue_names[] = {"", "TSS04", "RL28", "TSS04|RL28"};
  std::string out;
  const bool several = _rules.size() > 1 || _rules_changed_ns >= 0;
  for (const auto& rule : _rules) {
    if (!several && rule.action == config::reply_action::suspend && rule.mx.empty()) {
      out += fmt::format(" | rule TSS04 on '{}' {}s", rule.domain, rule.duration_s);  // as before
      continue;
    }
    out += fmt::format(" | rule {} on {} '{}' {} {}s", cue_names[rule.cues],
                       rule.mx.empty() ? "domain" : "mx", rule.mx.empty() ? rule.domain : rule.mx,
                       actions[static_cast<int>(rule.action)], rule.duration_s);
    if (rule.connections) out += fmt::format(" connections {}", *rule.connections);
    if (rule.per_second) out += fmt::format(" rate {}/s", *rule.per_second);
    if (several) out += fmt::format(" ({})", rule.origin);
  }
  return out;
}

// A reload that changes the reply rules (a stream of its own; only seeds that drew rules): adds
// one, removes one, or changes one's action or duration. Pauses and throttles already issued
// are the daemon's to keep until their end (docs/operations.md): the checks keep them too.
std::string shaping::reload_rules(std::int64_t now_ns) {
  if (_rules.empty() && _rules_changed_ns < 0) return {};
  const std::uint64_t what = _reload_rng.below(10);
  if (what < 5) return {};
  if (what < 7 && _rules.size() < 3) {
    sim_rule rule = draw_rule(_reload_rng);
    if ((rule.cues & 2) != 0 && std::all_of(_rl28.begin(), _rl28.end(), [](double c) {
          return c == 0;
        })) {
      for (auto& chance : _rl28) chance = static_cast<double>(_reload_rng.below(8)) / 100;
    }
    const std::uint64_t at = _reload_rng.below(_rules.size() + 1);
    _rules.insert(_rules.begin() + static_cast<std::ptrdiff_t>(at), std::move(rule));
  } else if (what < 8 && !_rules.empty()) {
    _rules.erase(_rules.begin() + static_cast<std::ptrdiff_t>(_reload_rng.below(_rules.size())));
  } else if (!_rules.empty()) {
    sim_rule& rule = _rules[_reload_rng.below(_rules.size())];
    if (_reload_rng.chance(0.5)) {
      rule.duration_s = static_cast<std::uint32_t>(_reload_rng.between(1, 60));
    } else {
      draw_action_of(_reload_rng, rule);
      if (rule.per_second) _throttle_rates = true;
    }
  } else {
    return {};
  }
  _rules_changed_ns = now_ns;
  return fmt::format("operator: reload changes the reply rules:{}",
                     _rules.empty() ? std::string(" none") : describe_rules());
}

std::string shaping::reload(std::int64_t now_ns) {
  if (!_rates) return {};
  if (_rng.chance(0.5)) {
    _default_rate = _rng.chance(0.8) ? std::optional<sim_rate>(draw_rate()) : std::nullopt;
  }
  for (auto& own : _per_second) {
    if (_rng.chance(0.3)) own = static_cast<double>(_rng.between(1, 20));
  }
  apply_rates(now_ns);
  return describe();
}

// The scheduler lives in memory: a new process starts every bucket full. A throttle is one
// journal record (s14-pause): restore_throttles brings back those whose record the spools
// recovered. (Pauses: forget_pauses and restart_pauses.)
void shaping::restart(std::int64_t now_ns) {
  for (std::uint32_t d = 0; d < _domains.size(); ++d) {
    if (_throttles[d].until_ns > now_ns) _throttles_at_crash[d] = _throttles[d];
    _throttles[d] = throttle{};
  }
  apply_rates(now_ns);
  for (auto& check : _checks) check.restart(now_ns);
}

std::string shaping::on_transaction(std::uint32_t domain, std::int64_t after_ns,
                                    std::int64_t now_ns) {
  if (!_rates && !_throttle_rates) return {};
  throttle_bound(domain, now_ns);  // a throttle that ended: the destination's own rate again
  ++_rate_checks;
  return _checks.at(domain).on_transaction(after_ns, now_ns);
}

int shaping::says_cue(std::uint32_t domain) {
  if (_tss04.at(domain) > 0 && _rng.chance(_tss04[domain])) return 0;
  if (_rl28.at(domain) > 0 && _cue_rng.chance(_rl28[domain])) return 1;
  return -1;
}

std::string shaping::reply_of(int c) {
  return fmt::format("{} {} {}", cues[c].code, cues[c].status, cues[c].text);
}

bool shaping::applies(const sim_rule& rule, std::uint32_t domain,
                      const std::vector<std::string>& mx_hosts) const {
  if (rule.mx.empty()) return rule.domain.empty() || rule.domain == _domains.at(domain);
  return !mx_hosts.empty() &&
         std::all_of(mx_hosts.begin(), mx_hosts.end(), [&](const std::string& host) {
           return server::mx_pattern_matches(rule.mx, host);
         });
}

const shaping::sim_rule* shaping::winner(std::uint32_t domain, std::string_view reply,
                                         const std::vector<std::string>& mx_hosts) const {
  for (const auto& rule : _rules) {
    if (applies(rule, domain, mx_hosts) &&
        RE2::PartialMatch(re2::StringPiece(reply.data(), reply.size()),
                          compiled_pattern(rule.cues)))
      return &rule;
  }
  return nullptr;
}

bool shaping::covered(std::uint32_t domain, const std::vector<std::string>& mx_hosts) const {
  return std::any_of(_rules.begin(), _rules.end(),
                     [&](const sim_rule& rule) { return applies(rule, domain, mx_hosts); });
}

namespace {
std::optional<double> lower(std::optional<double> a, std::optional<double> b) {
  if (!a || !b) return a ? a : b;
  return std::min(*a, *b);
}
std::optional<std::uint32_t> lower(std::optional<std::uint32_t> a,
                                   std::optional<std::uint32_t> b) {
  if (!a || !b) return a ? a : b;
  return std::min(*a, *b);
}
}  // namespace

// A throttle firing while another holds the destination: a rule lowers, never raises, so each
// limit is the lower of the two until the later end.
void shaping::on_throttle(std::uint32_t domain, std::int64_t until_ns, std::uint32_t connections,
                          std::int64_t now_ns, const sim_rule& rule) {
  throttle& t = _throttles.at(domain);
  throttle next{until_ns, connections, rule.connections, rule.per_second};
  if (t.until_ns > now_ns) {
    next.until_ns = std::max(t.until_ns, until_ns);
    next.connections_then = std::max(t.connections_then, connections);
    next.connections = lower(t.connections, rule.connections);
    next.per_second = lower(t.per_second, rule.per_second);
  }
  t = next;
  _checks[domain].set(throttled(domain), now_ns);
}

void shaping::lifted(std::uint32_t domain, std::int64_t now_ns) {
  _paused.erase(_domains.at(domain));
  throttle& t = _throttles.at(domain);
  if (t.until_ns == 0) return;
  t = throttle{};
  _checks[domain].set(expected(domain), now_ns);
}

std::int64_t shaping::live_pause_until(const std::string& destination,
                                       std::int64_t now_ns) const {
  const auto found = _paused.find(destination);
  if (found == _paused.end() || found->second.restarted || found->second.until_ns <= now_ns)
    return 0;
  return found->second.until_ns;
}

void shaping::recovered_throttle(std::uint32_t domain, std::int64_t until_ns) {
  _throttles_recovered.at(domain) = std::max(_throttles_recovered[domain], until_ns);
}

// The daemon re-applies a recovered throttle where the destination's queue is (relay.cc
// restore_pause). Its record carries the combined limits that were in force (throttle_by); a
// record ending earlier than the throttle the world saw was lost or older: not held to it.
void shaping::restore_throttles(std::int64_t now_ns) {
  for (std::uint32_t d = 0; d < _domains.size(); ++d) {
    const throttle crashed = _throttles_at_crash[d];
    const std::int64_t recovered = _throttles_recovered[d];
    _throttles_at_crash[d] = throttle{};
    _throttles_recovered[d] = 0;
    if (crashed.until_ns <= now_ns || recovered + 1'000'000 < crashed.until_ns) continue;
    _throttles[d] = throttle{crashed.until_ns, 0, crashed.connections, crashed.per_second};
    _checks[d].set(throttled(d), now_ns);
    ++_throttles_restored;
  }
}

std::uint32_t shaping::throttle_bound(std::uint32_t domain, std::int64_t now_ns) {
  throttle& t = _throttles.at(domain);
  if (t.until_ns == 0) return UINT32_MAX;
  if (now_ns >= t.until_ns) {  // ended (relay.cc expire_throttles): a fresh bucket from then
    _checks[domain].set(expected(domain), t.until_ns);
    t = throttle{};
    return UINT32_MAX;
  }
  if (!t.connections) return UINT32_MAX;
  ++_throttles_checked;
  return std::max(*t.connections, t.connections_then);
}

void shaping::on_pause(const std::string& destination, std::int64_t until_ns,
                       std::set<std::pair<std::string, std::string>> on_wire) {
  _paused[destination] = pause{until_ns, std::move(on_wire)};
}

std::string shaping::check_pause(const std::string& destination, std::string_view key,
                                 const std::vector<std::string>& recipients,
                                 std::int64_t now_ns) {
  const auto found = _paused.find(destination);
  if (found == _paused.end()) return {};
  if (now_ns >= found->second.until_ns) {
    _paused.erase(found);
    return {};
  }
  if (found->second.restarted && found->second.journaled) {
    if (found->second.released_keys.count(std::string(key)) != 0) return {};
    return fmt::format("{} for {} arrived {} ms before the reply rule's pause of {} ended, "
                       "after a restart that recovered the pause from the journal", key,
                       recipients.front(), (found->second.until_ns - now_ns) / 1'000'000,
                       destination);
  }
  if (found->second.restarted) {
    for (const auto& rcpt : recipients) {
      if (found->second.recovered.count({std::string(key), rcpt}) == 0) continue;
      return fmt::format("{} for {} arrived {} ms before the reply rule's pause of {} ended, "
                         "after a restart that recovered it deferred to the pause's end", key,
                         rcpt, (found->second.until_ns - now_ns) / 1'000'000, destination);
    }
    return {};
  }
  for (const auto& rcpt : recipients) {
    if (found->second.on_wire.count({std::string(key), rcpt}) != 0) continue;
    return fmt::format("{} for {} arrived {} ms before the reply rule's pause of {} ended, "
                       "and was not on the wire when it began", key, rcpt,
                       (found->second.until_ns - now_ns) / 1'000'000, destination);
  }
  return {};
}

std::string shaping::on_connect(const std::string& destination, std::uint32_t opening_max,
                               std::int64_t now_ns) {
  const auto found = _paused.find(destination);
  if (found == _paused.end() || now_ns >= found->second.until_ns || found->second.restarted)
    return {};  // (after a restart, new mail may open connections at once)
  if (++found->second.connects <= 2 * opening_max) return {};
  return fmt::format("{} connections reached {}'s MTAs while a reply rule's pause held ({} ms "
                     "left; at most {} were being opened when it began)", found->second.connects,
                     destination, (found->second.until_ns - now_ns) / 1'000'000, opening_max);
}

void shaping::forget_pauses() {
  for (auto& [name, p] : _paused) p = pause{p.until_ns, {}, 0, true, {}, false, {}};
}

std::vector<std::string> shaping::kept_pauses() const {
  std::vector<std::string> out;
  for (const auto& [name, p] : _paused) out.push_back(name);
  return out;
}

// After a restart: the pause's journal record recovered (`journaled_until_ns` at its end or
// later) holds every transaction to the destination until the end (relay.cc restore_pauses);
// a recipient recovered with a retry time at the end or later (deferred past it) must not go
// before it either, journal record or not.
void shaping::restart_pauses(const std::string& destination,
                             const std::vector<recovered_slot>& deferred, std::int64_t now_ns,
                             std::int64_t journaled_until_ns) {
  const auto found = _paused.find(destination);
  if (found == _paused.end()) return;
  pause& p = found->second;
  if (now_ns >= p.until_ns) {
    _paused.erase(found);
    return;
  }
  // A later restart without it (its snapshot kept it: never) keeps what the earlier one saw.
  if (journaled_until_ns >= p.until_ns && !p.journaled) {
    p.journaled = true;
    ++_journaled_kept;
  }
  for (const auto& [key, rcpt, retry_ns] : deferred) {
    if (retry_ns < p.until_ns || !p.recovered.emplace(key, rcpt).second) continue;
    ++_restart_checked;
  }
}

void shaping::released(const std::string& destination, const std::string& key) {
  for (auto& [name, p] : _paused) {
    if (!destination.empty() && name != destination) continue;
    if (key.empty()) p.journaled = false;  // a flush: everything may go
    else p.released_keys.insert(key);
    std::erase_if(p.recovered, [&](const auto& slot) { return key.empty() || slot.first == key; });
  }
}

}  // namespace ringmta::sim::internal
