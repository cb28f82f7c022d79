// server::egress_table: [[source]] and [[pool]] (--source, --pool) as one immutable table, and
// the per-shard smooth weighted round robin that picks a pool's source (egress_picker).
//
// A source is a local address that outbound connections bind() to before connect, with the
// EHLO name that goes with it (its PTR name, as a receiver checks). A pool is a weighted set of
// sources. A message's pool is, in order: the X-Ringmta-Pool header of a trusted submitter
// (mynetworks or authenticated; stripped at reception, net/header_filter.h), the [[shaping]]
// entry for its sender's domain (exact, then the longest ".suffix"), the pool named
// "default"; none of them: no bind (the kernel's choice, as without pools). A header naming
// an unknown pool falls back to the sender's or default pool and is logged: the message was
// accepted already, and a reload that retires a pool must not refuse a tenant's mail.
//
// The source is chosen when a message is routed (egress_picker, per shard) and becomes part of
// the queue name ("example.com@ip2"): the scheduler's connection and per-connection limits and
// the MX site ("mx1,mx2@ip2") are then per source × destination, and a connection from one
// source never carries a job queued for another. Retries stay on the chosen source.
//
// Never: changes after construction (a reload builds a new table), binds on a shard (the
// start-up check binds each address once, off the shards).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ringmta/config/settings.h"
#include "ringmta/core/endpoint.h"

namespace ringmta::server {

inline constexpr std::string_view pool_header_name = "X-Ringmta-Pool";

struct egress_source {
  std::string name;
  core::endpoint address;  // port 0
  std::string ehlo_name;   // empty: the destination's
};

struct egress_pool {
  std::string name;
  std::vector<std::uint32_t> sources;  // indexes into egress_table::sources()
  std::vector<std::uint32_t> weights;  // >= 1, parallel to sources
};

class egress_table {
 public:
  // Throws config::error naming FILE:LINE and the key: a duplicate name, a pool naming an
  // unknown source (or a source twice), a sender_domain entry naming an unknown pool, and
  // (with check_addresses) an address this host cannot bind.
  explicit egress_table(const config::settings& settings, bool check_addresses = true);

  bool empty() const noexcept { return _pools.empty(); }
  const std::vector<egress_source>& sources() const noexcept { return _sources; }
  const std::vector<egress_pool>& pools() const noexcept { return _pools; }
  std::optional<std::uint32_t> pool_named(std::string_view name) const noexcept;
  std::optional<std::uint32_t> source_named(std::string_view name) const noexcept;
  // The pool of mail from `sender_domain` (lowercase): exact entry, longest suffix, default.
  std::optional<std::uint32_t> pool_for_sender(std::string_view sender_domain) const noexcept;

 private:
  std::vector<egress_source> _sources;
  std::vector<egress_pool> _pools;
  std::vector<std::pair<std::string, std::uint32_t>> _by_sender;  // sorted by domain
  std::optional<std::uint32_t> _default;
};

// Smooth weighted round robin (nginx's): each pick adds every weight to its source's credit
// and takes the largest, which then pays the total. Over any run of sum(weights) picks each
// source is chosen exactly `weight` times, interleaved (5:1:1 gives a a b a c a a).
// One per shard; reset() when the table changes (a reload).
class egress_picker {
 public:
  void reset(const egress_table& table);
  // Index into table.sources() of the next source of pool `pool`.
  std::uint32_t pick(const egress_table& table, std::uint32_t pool) noexcept;

 private:
  std::vector<std::vector<std::int64_t>> _credit;  // per pool, per member
};

// The queue name of mail for `destination` leaving from `source` ("example.com@ip2"), and
// the two parts back (source empty: no source).
std::string egress_destination(std::string_view destination, std::string_view source);
std::pair<std::string_view, std::string_view> split_egress(std::string_view name) noexcept;

// The queues an operator's destination name addresses (admin API; docs/notes.md "Egress"): a
// name with a source ("example.com@s3") only itself; a bare domain itself, "domain@S" for each
// source name S of `sources` (the configured ones: a suspension then covers mail not queued
// yet), and each name of `existing` (queues, suspensions: a retired source's too) whose domain
// part is exactly the domain, never a prefix ("example.com" never takes "example.com.au@s3").
// Sorted, without duplicates.
std::vector<std::string> queues_of(std::string_view name, const std::vector<std::string>& sources,
                                   const std::vector<std::string>& existing);

}  // namespace ringmta::server
