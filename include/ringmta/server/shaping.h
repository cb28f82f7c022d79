// server::shaping_table: per-destination delivery overrides ([[shaping]], --shaping) as one
// immutable table. Shards hold it through a shared_ptr snapshot and look a destination up when
// its queue is created and when a connection is opened (never per message); a reload builds a
// new table off the shards and hands each shard the new pointer, so a lookup never sees a
// table change under it, and a table lives as long as a shard still uses it.
//
// Layers, most specific last (each sets only the fields it names):
//   global settings ← the first `mx` entry whose pattern matches every MX host of the
//   destination ← the longest ".suffix" entry ← the exact "domain" entry.
// The MX layer needs the destination's MX host names, which are known once a connection has
// resolved them (the relay then reshapes the live queue); until then only the domain layers
// apply. An MX pattern is a host name in which '*' matches any run of characters
// ("*.google.com", "mx?.example" is not a pattern: only '*').
//
// Never: reads a file, resolves a name, or changes after build().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/config/settings.h"
#include "ringmta/outbound/delivery.h"
#include "ringmta/queue/scheduler.h"

namespace re2 {
class RE2;
}

namespace ringmta::server {

// What applies to one destination, every field resolved.
struct shape {
  queue::destination_limits limits;  // connections, messages/connection, rate, retry, lifetime
  std::uint32_t timeout_connect_ms = 0;  // 0: the outbound's
  std::uint32_t timeout_reply_ms = 0;    // 0: the outbound's (each RFC 5321 §4.5.3.2 wait)
  bool tls_set = false;                  // a shaping entry chose the TLS policy
  outbound::tls_policy tls = outbound::tls_policy::opportunistic;
  std::string ehlo_name;                 // empty: the relay's host name
  std::string origin;                    // the entries applied, "FILE:LINE,...", for logs
};

// The scheduler's limits from the global settings' three numbers (a rate below 1/s becomes
// one message per 1000/rate ms, so the token bucket stays in integers).
queue::destination_limits limits_from(std::uint32_t connections_max,
                                      std::uint32_t messages_per_connection_max,
                                      double messages_per_second_max);
// `below` with what a layer names: connections and messages per connection as given; a rate
// given replaces the bucket (limits_from's rate and burst). Everything not named stays as
// below: a layer naming only connections keeps "20 per 10 s, burst 1" as it is (rebuilt from
// its per-second rate it became 2 per second, burst 2), and the retry schedule, lifetime and
// recipients per transaction.
queue::destination_limits layered_limits(const queue::destination_limits& below,
                                         std::optional<std::uint32_t> connections_max,
                                         std::optional<std::uint32_t> messages_per_connection_max,
                                         std::optional<double> messages_per_second_max);

// The site of a destination (KumoMTA's site_name): its MX host names, lowercase, sorted,
// without duplicates, joined by ','. Domains with the same MX set have the same site.
std::string site_name(std::span<const std::string_view> mx_hosts);
// '*' matches any run of characters (including dots); the rest compares exactly.
bool mx_pattern_matches(std::string_view pattern, std::string_view host) noexcept;

class shaping_table {
 public:
  // `defaults` is what applies where no entry says otherwise (the global settings).
  shaping_table(const config::settings& settings, const queue::destination_limits& defaults);

  // The domain layers only (no MX knowledge yet).
  shape for_domain(std::string_view domain) const;
  // Every layer, with the destination's MX host names (any order, lowercase).
  shape for_destination(std::string_view domain,
                        std::span<const std::string_view> mx_hosts) const;
  bool has_mx_entries() const noexcept { return !_by_mx.empty() || _rules_use_mx; }
  // Whether a domain entry names a TLS policy or an EHLO name (what a connection carries).
  bool has_domain_connection_entries() const noexcept { return _domain_connection_entries; }
  // Reply rules ([[reply_rule]]): the first rule for this destination whose RE2 pattern is
  // found in `reply` ("421 4.7.0 text"), or nullptr. A rule names a domain (or .suffix), an
  // MX pattern (needs the MX hosts), or nothing (every destination).
  const config::reply_rule_entry* match_reply(std::string_view domain,
                                              std::span<const std::string_view> mx_hosts,
                                              std::string_view reply) const noexcept;
  bool has_reply_rules() const noexcept { return !_rules.empty(); }
  ~shaping_table();
  std::size_t size() const noexcept { return _entries.size(); }

 private:
  const config::shaping_entry* exact(std::string_view domain) const noexcept;
  const config::shaping_entry* suffix(std::string_view domain) const noexcept;
  const config::shaping_entry* site(std::span<const std::string_view> mx_hosts) const noexcept;
  shape resolve(const config::shaping_entry* mx, const config::shaping_entry* parent,
                const config::shaping_entry* own) const;

  std::vector<config::shaping_entry> _entries;
  std::vector<std::uint32_t> _by_mx;  // indices into _entries, in file order
  // exact and ".suffix" names → index (the later entry wins, as in a file read top down)
  std::vector<std::pair<std::string, std::uint32_t>> _by_domain;  // sorted by name
  shape _defaults;
  std::vector<config::reply_rule_entry> _rules;
  std::vector<std::unique_ptr<re2::RE2>> _patterns;  // compiled, by rule
  bool _rules_use_mx = false;
  bool _domain_connection_entries = false;
};

// Builds the table from the settings; throws config::error naming the entry's origin.
std::shared_ptr<const shaping_table> build_shaping_table(const config::settings& settings);

// A configured TLS policy as the outbound connection's (relay defaults and shaping overrides).
outbound::tls_policy to_outbound(config::tls_policy policy) noexcept;

}  // namespace ringmta::server
