// server::shaping_table: see shaping.h for the layers and the snapshot rule.
#include "ringmta/server/shaping.h"

#include <algorithm>

#include <fmt/format.h>
#include <re2/re2.h>

namespace ringmta::server {

queue::destination_limits limits_from(std::uint32_t connections_max,
                                      std::uint32_t messages_per_connection_max,
                                      double messages_per_second_max) {
  queue::destination_limits out;
  out.connections_max = std::max<std::uint32_t>(1, connections_max);
  out.messages_per_connection_max = messages_per_connection_max;
  const double rate = messages_per_second_max;
  if (rate > 0) {  // "0.5 per second" = 1 per 2000 ms; keep integer arithmetic exact
    out.rate_messages = rate >= 1 ? static_cast<std::uint32_t>(rate) : 1;
    out.rate_period_ms = rate >= 1 ? 1000 : static_cast<std::uint32_t>(1000 / rate);
    out.rate_burst = std::max<std::uint32_t>(1, out.rate_messages);
  }
  return out;
}

queue::destination_limits layered_limits(const queue::destination_limits& below,
                                         std::optional<std::uint32_t> connections_max,
                                         std::optional<std::uint32_t> messages_per_connection_max,
                                         std::optional<double> messages_per_second_max) {
  queue::destination_limits out = below;
  if (connections_max) out.connections_max = std::max<std::uint32_t>(1, *connections_max);
  if (messages_per_connection_max) out.messages_per_connection_max = *messages_per_connection_max;
  if (messages_per_second_max) {
    const auto rated = limits_from(1, 0, *messages_per_second_max);
    out.rate_messages = rated.rate_messages;
    out.rate_period_ms = rated.rate_period_ms;
    out.rate_burst = rated.rate_burst;
  }
  return out;
}

std::string site_name(std::span<const std::string_view> mx_hosts) {
  std::vector<std::string> hosts;
  hosts.reserve(mx_hosts.size());
  for (const auto host : mx_hosts) {
    std::string name(host);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!name.empty() && name.back() == '.') name.pop_back();
    hosts.push_back(std::move(name));
  }
  std::sort(hosts.begin(), hosts.end());
  hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());
  std::string out;
  for (const auto& host : hosts) {
    if (!out.empty()) out += ',';
    out += host;
  }
  return out;
}

bool mx_pattern_matches(std::string_view pattern, std::string_view host) noexcept {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  // Iterative glob with one backtracking point: linear in practice, never recursive.
  std::size_t p = 0, h = 0, star = std::string_view::npos, resume = 0;
  while (h < host.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = h;
    } else if (p < pattern.size() &&
               pattern[p] == static_cast<char>(std::tolower(static_cast<unsigned char>(host[h])))) {
      ++p;
      ++h;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      h = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

namespace {

// One layer over what the layers below gave.
void apply(shape& out, const config::shaping_entry& e) {
  auto& l = out.limits;
  l = layered_limits(l, e.connections_max, e.messages_per_connection_max,
                     e.messages_per_second_max);
  if (e.retry_schedule_s) {
    auto delays = std::make_shared<std::vector<std::int64_t>>();
    for (const auto seconds : *e.retry_schedule_s)
      delays->push_back(std::max<std::int64_t>(1, seconds) * 1000);
    l.retry_delays_ms = std::move(delays);
  }
  if (e.queue_lifetime_s) l.lifetime_max_ms = std::max<std::int64_t>(1, *e.queue_lifetime_s) * 1000;
  if (e.timeout_connect_ms) out.timeout_connect_ms = *e.timeout_connect_ms;
  if (e.timeout_reply_ms) out.timeout_reply_ms = *e.timeout_reply_ms;
  if (e.tls) {
    out.tls_set = true;
    out.tls = to_outbound(*e.tls);
  }
  if (e.ehlo_name) out.ehlo_name = *e.ehlo_name;
  if (!out.origin.empty()) out.origin += ',';
  out.origin += e.origin;
}

}  // namespace

shaping_table::~shaping_table() = default;

shaping_table::shaping_table(const config::settings& settings,
                             const queue::destination_limits& defaults)
    : _entries(settings.shaping), _rules(settings.reply_rules) {
  _defaults.limits = defaults;
  for (const auto& rule : _rules) {
    RE2::Options options;
    options.set_log_errors(false);
    options.set_case_sensitive(false);
    auto compiled = std::make_unique<re2::RE2>(rule.pattern, options);
    if (!compiled->ok())
      throw config::error(fmt::format("{}: reply_rule.pattern: {}", rule.origin,
                                      compiled->error()));
    _patterns.push_back(std::move(compiled));
    _rules_use_mx |= !rule.mx.empty();
  }
  for (std::uint32_t i = 0; i < _entries.size(); ++i) {
    const auto& e = _entries[i];
    if (!e.mx.empty()) {
      _by_mx.push_back(i);
      continue;
    }
    _domain_connection_entries |= e.tls.has_value() || e.ehlo_name.has_value();
    const auto at = std::lower_bound(
        _by_domain.begin(), _by_domain.end(), e.domain,
        [](const auto& entry, const std::string& name) { return entry.first < name; });
    if (at != _by_domain.end() && at->first == e.domain) at->second = i;  // later one wins
    else _by_domain.insert(at, {e.domain, i});
  }
}

const config::shaping_entry* shaping_table::exact(std::string_view domain) const noexcept {
  const auto at = std::lower_bound(
      _by_domain.begin(), _by_domain.end(), domain,
      [](const auto& entry, std::string_view name) { return entry.first < name; });
  return at != _by_domain.end() && at->first == domain ? &_entries[at->second] : nullptr;
}

// ".example.com" covers every name below it; the longest such suffix wins (as
// relay.tls.policy_for and Postfix's transport maps).
const config::shaping_entry* shaping_table::suffix(std::string_view domain) const noexcept {
  for (std::size_t dot = domain.find('.'); dot != std::string_view::npos;
       dot = domain.find('.', dot + 1)) {
    if (const auto* found = exact(domain.substr(dot))) return found;
  }
  return nullptr;
}

const config::shaping_entry* shaping_table::site(
    std::span<const std::string_view> mx_hosts) const noexcept {
  if (mx_hosts.empty()) return nullptr;
  for (const auto index : _by_mx) {
    const auto& pattern = _entries[index].mx;
    const bool all = std::all_of(mx_hosts.begin(), mx_hosts.end(), [&](std::string_view host) {
      return mx_pattern_matches(pattern, host);
    });
    if (all) return &_entries[index];
  }
  return nullptr;
}

const config::reply_rule_entry* shaping_table::match_reply(
    std::string_view domain, std::span<const std::string_view> mx_hosts,
    std::string_view reply) const noexcept {
  for (std::size_t i = 0; i < _rules.size(); ++i) {
    const auto& rule = _rules[i];
    bool applies = rule.domain.empty() && rule.mx.empty();
    if (!rule.domain.empty()) {
      applies = rule.domain.front() == '.'
                    ? domain.size() > rule.domain.size() && domain.ends_with(rule.domain)
                    : domain == rule.domain;
    } else if (!rule.mx.empty()) {
      applies = !mx_hosts.empty() &&
                std::all_of(mx_hosts.begin(), mx_hosts.end(), [&](std::string_view host) {
                  return mx_pattern_matches(rule.mx, host);
                });
    }
    if (applies && RE2::PartialMatch(re2::StringPiece(reply.data(), reply.size()), *_patterns[i]))
      return &rule;
  }
  return nullptr;
}

shape shaping_table::resolve(const config::shaping_entry* mx, const config::shaping_entry* parent,
                             const config::shaping_entry* own) const {
  shape out = _defaults;
  for (const auto* layer : {mx, parent, own})
    if (layer != nullptr) apply(out, *layer);
  return out;
}

shape shaping_table::for_domain(std::string_view domain) const {
  if (_entries.empty()) return _defaults;
  return resolve(nullptr, suffix(domain), exact(domain));
}

shape shaping_table::for_destination(std::string_view domain,
                                     std::span<const std::string_view> mx_hosts) const {
  if (_entries.empty()) return _defaults;
  return resolve(site(mx_hosts), suffix(domain), exact(domain));
}

std::shared_ptr<const shaping_table> build_shaping_table(const config::settings& settings) {
  const auto& d = settings.default_destination_limits;
  return std::make_shared<const shaping_table>(
      settings, limits_from(d.connections_max, d.messages_per_connection_max,
                            d.messages_per_second_max));
}

outbound::tls_policy to_outbound(config::tls_policy policy) noexcept {
  switch (policy) {
    case config::tls_policy::none: return outbound::tls_policy::none;
    case config::tls_policy::opportunistic: return outbound::tls_policy::opportunistic;
    case config::tls_policy::required: return outbound::tls_policy::required;
    case config::tls_policy::verify: return outbound::tls_policy::verify;
  }
  return outbound::tls_policy::opportunistic;
}

}  // namespace ringmta::server
