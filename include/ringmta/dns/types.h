// Value types shared by the DNS resolver engine: addresses, record types, answers, MX results.
//
// Invariants: names are stored lower-case, without the trailing dot ("mx1.example.test"); the
// root is the empty string. An answer's status says which of its fields mean anything.
// Never: no ldns types appear here, so users of the resolver never include ldns.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"

namespace ringmta::dns {

// An IPv4 or IPv6 address in network byte order (IPv4 uses the first 4 bytes).
struct ip_address {
  std::uint8_t family = 0;  // 4 or 6; 0 = unset
  std::array<std::uint8_t, 16> bytes{};

  static ip_address v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) noexcept;
  // "127.0.0.1" or "::1" (no brackets, no port).
  static core::result<ip_address> parse(std::string_view text) noexcept;
  std::string to_string() const;
  bool operator==(const ip_address&) const noexcept = default;
};

// A DNS server the resolver may query (a nameserver line, or --resolver ADDR:PORT).
struct server_address {
  ip_address ip;
  std::uint16_t port = 53;

  // "127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353".
  static core::result<server_address> parse(std::string_view text) noexcept;
  std::string to_string() const;
  bool operator==(const server_address&) const noexcept = default;
};

// Query types the engine asks for (RFC 1035 §3.2.2, RFC 3596 §2.1).
enum class record_type : std::uint16_t { a = 1, cname = 5, mx = 15, txt = 16, aaaa = 28 };
const char* record_type_name(record_type type) noexcept;

// How a single (name, type) question ended.
enum class answer_status : std::uint8_t {
  ok,              // NOERROR with records of the asked type
  nodata,          // NOERROR, name exists, no records of that type (RFC 2308 §2.2)
  nxdomain,        // name does not exist (RFC 2308 §2.1)
  server_failure,  // SERVFAIL/REFUSED/malformed from every server tried (temporary)
  timeout,         // no usable reply within attempts x timeout (temporary)
};
const char* answer_status_name(answer_status status) noexcept;
inline bool is_temporary(answer_status status) noexcept {
  return status == answer_status::server_failure || status == answer_status::timeout;
}

struct mx_record {
  std::uint16_t preference = 0;
  std::string exchange;  // "" is the root: a null MX (RFC 7505)
  bool operator==(const mx_record&) const noexcept = default;
};

// The outcome of one question after CNAME chasing.
struct answer {
  answer_status status = answer_status::server_failure;
  std::string canonical_name;           // the name the records belong to (after CNAMEs)
  std::vector<mx_record> mx;            // for record_type::mx
  std::vector<ip_address> addresses;    // for record_type::a / aaaa
  std::vector<std::string> texts;       // for record_type::txt (character-strings joined)
  std::uint32_t ttl_s = 0;              // how long it may be cached (already capped)
};

// RFC 5321 §5.1: where to deliver mail for a domain.
struct mx_host {
  std::string name;                     // MX exchange, the domain (implicit MX), or "[1.2.3.4]"
  std::uint16_t preference = 0;
  std::vector<ip_address> addresses;    // never empty in a result
};

enum class lookup_status : std::uint8_t { ok, temporary_failure, permanent_failure };

// Why a lookup failed; each kind maps to one enhanced status code (RFC 3463).
enum class failure_kind : std::uint8_t {
  none,
  bad_domain,         // 5.1.3 the domain is not a valid name
  no_such_domain,     // 5.1.2 NXDOMAIN
  null_mx,            // 5.1.10 RFC 7505 §3 / RFC 7504
  no_mail_route,      // 5.4.4 no MX and no address, or no MX host has an address
  server_failure,     // 4.4.3 SERVFAIL / malformed replies / no server reachable
  timeout,            // 4.4.3 no reply in time or the lookup's deadline passed
  overloaded,         // 4.3.0 too many lookups in flight (resource bound reached)
};
const char* failure_enhanced_code(failure_kind kind) noexcept;  // "5.1.10"

struct mx_result {
  lookup_status status = lookup_status::temporary_failure;
  failure_kind failure = failure_kind::none;
  std::vector<mx_host> hosts;           // in delivery order; non-empty iff status == ok
  bool implicit_mx = false;             // RFC 5321 §5.1: no MX, the domain's own A/AAAA
  std::string text;                     // for a DSN / log line: what failed and for which name

  const char* enhanced_code() const noexcept { return failure_enhanced_code(failure); }
};

}  // namespace ringmta::dns
