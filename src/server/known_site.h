// server::known_site: what a destination's owner shard knows of a domain's MX site
// (relay_site.cc, MX site rollup), and where the domain's queue may be after its MX set
// changed at a relearn (relay.site_relearn).
//
// A domain's queue lives on its site's owner (owner_of the site name). When a relearn finds
// another MX set, the new site has another owner, while the old one may still hold the
// domain's queue (jobs deferred, retried for days): a second queue on the new owner would get
// connections and a rate bucket of its own, and the two together exceed the domain's limits
// (ringmta-sim --shards-max 3, docs/notes.md s15-relearn). So the jobs keep going to the old
// site's owner first, which queues them while it holds the queue and sends them on to the new
// site once it holds none, telling the destination's owner (old_queue_gone) so that later jobs
// go straight to the new site. Per egress source: "example.com@ip2" has its own queue (on the
// owner of "site@ip2"), looked up as example.com on the same shard as "example.com" may be.
//
// Invariant: old_site is empty or differs from site. Never allocates but when a site is
// learned or a source moves (rare).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringmta::server {

struct known_site {
  std::string site;  // learned last: the sorted MX host names ("mx1.example,mx2.example")
  std::int64_t learned_ms = 0;
  // The site before the last change of the MX set, while its owner may hold the domain's
  // queue for some source; empty: none.
  std::string old_site;
  // Egress sources ("" for none) whose queue on old_site's owner is gone: they go to `site`.
  std::vector<std::string> moved_sources;

  // A lookup answered `fresh` at now_ms.
  void learn(std::string_view fresh, std::int64_t now_ms);
  // The site whose owner takes the next job of `source` (old_site while its queue may last).
  const std::string& holder_for(std::string_view source) const noexcept;
  bool via_old_site(std::string_view source) const noexcept;
  // The owner of `old` (for `source`) holds no queue of the domain any more.
  void old_queue_gone(std::string_view old, std::string_view source);
};

}  // namespace ringmta::server
