// RFC 5321 §5.1 mail routing policy as pure functions: which names are valid destinations,
// address literals, the order of MX hosts, and the result for a set of answers.
//
// Invariants: a result with status ok has at least one host and every host at least one
// address; a failed result has no hosts, a failure kind and a text naming the cause.
// Never: no I/O, no clock; randomness only from the function passed in (tests seed it).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/dns/types.h"

namespace ringmta::dns {

// 64 random bits per call. Production passes a CSPRNG-backed source: query ids are the
// resolver's anti-spoofing secret (RFC 5452 §9.2). Tests pass a seeded one.
using random_source = std::function<std::uint64_t()>;

// A deterministic source for tests and simulations (splitmix64).
random_source seeded_random(std::uint64_t seed);

// "[127.0.0.1]" or "[IPv6:::1]" (RFC 5321 §4.1.3); nullopt when `domain` is not a literal.
std::optional<ip_address> parse_address_literal(std::string_view domain) noexcept;

// A host name we may look up: LDH labels (plus '_'), 1..63 octets each, at most 253 in all,
// at least one label; one trailing dot allowed.
bool is_valid_domain(std::string_view name) noexcept;

// RFC 5321 §5.1: MX records sorted by preference, equal preferences in random order; duplicate
// exchanges keep their best preference; null MX records ("." exchange, RFC 7505) are dropped.
// At most hosts_max are kept.
std::vector<mx_record> order_mx(std::vector<mx_record> records, const random_source& random,
                                std::size_t hosts_max);

// RFC 7505 §3: a domain whose only MX is "." accepts no mail.
bool is_null_mx(const std::vector<mx_record>& records) noexcept;

// Joins a host's A and AAAA answers into its address list (the preferred family first).
// Sets `temporary` when either question failed temporarily.
std::vector<ip_address> host_addresses(const answer* a, const answer* aaaa, bool prefer_ipv6,
                                       bool& temporary);

mx_result failure_result(failure_kind kind, std::string text);

}  // namespace ringmta::dns
