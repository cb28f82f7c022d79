// sim DNS helpers shared by the simulated delivery glue (sim_outbound.cc) and the simulated
// host's test (sim_host_test.cc): reply packets built with ldns, as tests/unit/dns does; and
// the MX set that changes during a run (mx_change_plan).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/dns/types.h"

namespace ringmta::sim {

// A reply to (id, name, type) with `rcode` (LDNS_RCODE_*) and the answer records given as
// zone-file text; an empty answer section gets an SOA in the authority section (RFC 2308 §5:
// the negative TTL) unless the rcode is SERVFAIL.
std::vector<std::uint8_t> encode_reply(std::uint16_t id, const std::string& name,
                                       dns::record_type type, int rcode,
                                       const std::vector<std::string>& answer,
                                       std::uint64_t ttl);

// The id, normalized name and type of a query's first question; false when ldns cannot
// decode it.
bool decode_query(const std::uint8_t* bytes, std::size_t size, std::uint16_t& id,
                  std::string& name, dns::record_type& type);

// An MX set that changes during the run (issue 16, docs/notes.md s15-relearn), in about a
// third of the seeds that may have one (sim_delivery.cc draw_mx_change): one domain's MX
// records name only one of its two hosts from a drawn time on, both again from the next, and
// so on (1-4 changes, 0.5-30 s after the first start: while the clients' mail arrives), while
// the relay relearns MX sites every 1-8 s (relay.site_relearn) instead of hourly, and the
// domain's records live 0-2 s in its DNS cache. The scheduler forgets an idle destination
// after 1-10 s (1 h in the daemon) and a ready connection waits 2 s for work (60 s in the
// other seeds), so that a domain's old queue can end within a run and its jobs move to the
// new site (with sparse arrivals: --arrival-ms 3000). The one-host set is another MX site (another
// site name, with 3 shards another owner two times in three): the relay must not give the
// domain a second queue on the new site's owner while the old one still holds its jobs
// (CONNECTION LIMIT, RATE LIMIT). Drawn from a stream of its own: a seed without it draws,
// logs and replays exactly as before.
struct mx_change_plan {
  static constexpr std::uint32_t none = UINT32_MAX;
  std::uint32_t domain = none;
  int kept_host = 0;                    // 0: mx1, 1: mx2 — the host of the one-host set
  std::vector<std::int64_t> changes_ns;  // after the first start, ascending
  std::uint32_t relearn_s = 3600;       // relay.site_relearn
  // The scheduler forgets an idle destination after this (1 h in the daemon): within a run
  // the old site's queue of the domain then goes, and its jobs move to the new site.
  std::int64_t idle_forget_ms = 3'600'000;
  bool one_host = false;                // the set in force now
  bool on() const noexcept { return domain != none; }
  // The MX records' host labels for the domain now ("mx1", "mx2"), when it is `domain`.
  std::vector<std::string_view> labels() const;
  std::string describe(std::string_view domain_name) const;
};

// Draws the plan for one of `candidates` (domains with two MX hosts); none when empty.
mx_change_plan draw_mx_change(std::uint64_t seed, const std::vector<std::uint32_t>& candidates);

}  // namespace ringmta::sim
