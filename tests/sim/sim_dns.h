// sim DNS helpers shared by the simulated delivery glue (sim_outbound.cc) and the simulated
// host's test (sim_host_test.cc): reply packets built with ldns, as tests/unit/dns does.
#pragma once

#include <cstdint>
#include <string>
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

}  // namespace ringmta::sim
