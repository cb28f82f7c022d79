// DNS wire format for the resolver engine: builds query packets and turns response packets into
// answers, with ldns doing the encoding and decoding.
//
// Invariants: every ldns object is freed before a function returns (nothing ldns escapes this
// layer); a response is judged against the question we asked (id, name, type, class) and one
// that does not match is reported as `mismatch`, never as an answer (anti-spoofing, RFC 5452 §9).
// Never: no I/O, no clock, no exceptions; malformed input gives `malformed`, never a crash.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/dns/types.h"

namespace ringmta::dns {

inline constexpr std::size_t dns_header_bytes = 12;      // RFC 1035 §4.1.1
inline constexpr std::size_t dns_message_bytes_max = 65535;  // RFC 1035 §4.2.2 (TCP length)

// Writes a recursive query (RD set) for `name` into `out` (replacing its contents, keeping its
// capacity). With edns_payload_bytes > 0 an OPT record advertises that UDP size (RFC 6891 §6).
// With tcp, the 2-byte length prefix of RFC 1035 §4.2.2 comes first.
// EINVAL when `name` is not a valid domain name (label over 63 octets, name over 255).
core::result<void> build_query(std::uint16_t id, std::string_view name, record_type type,
                               std::uint16_t edns_payload_bytes, bool tcp,
                               std::vector<std::uint8_t>& out);

// The id of a message, or -1 when it is too short to hold a header.
int message_id(std::span<const std::uint8_t> message) noexcept;

enum class response_kind : std::uint8_t {
  mismatch,        // not a reply to our question: ignore it and keep waiting
  malformed,       // ldns could not decode it: a failure of this attempt
  truncated,       // TC bit: ask again over TCP (RFC 7766 §5)
  format_error,    // FORMERR: the server may not speak EDNS0 (RFC 6891 §7)
  server_failure,  // SERVFAIL, REFUSED, NOTIMP, ...: try the next server
  answer,          // NOERROR or NXDOMAIN: `result` holds it
  cname,           // the answer ends in a CNAME whose target was not followed: ask for `next_name`
};

struct parsed_response {
  response_kind kind = response_kind::malformed;
  answer result;          // status ok / nodata / nxdomain; ttl_s uncapped
  std::string next_name;  // for kind == cname
};

// Decodes `message` as the reply to (id, name, type). `name` is lower-case without the final dot.
// CNAME chains inside the answer are followed from `name` (at most cname_depth_max links).
// Negative answers carry the RFC 2308 §5 TTL: min(SOA TTL, SOA MINIMUM), or 0 without an SOA.
parsed_response parse_response(std::span<const std::uint8_t> message, std::uint16_t id,
                               std::string_view name, record_type type,
                               std::uint32_t cname_depth_max = 8);

// Lower-cases `name` and strips one trailing dot: the form every name has inside the engine.
std::string normalize_name(std::string_view name);

}  // namespace ringmta::dns
