// smtp::parse_xclient: the argument of Postfix's XCLIENT command (XCLIENT_README), by which a
// trusted front end (a proxy, a content filter, a test rig) passes the original client's
// attributes: "XCLIENT" 1*( SP name "=" xtext ), names NAME ADDR PORT PROTO HELO LOGIN DESTADDR
// DESTPORT. Values are xtext (RFC 3461 §4) and decoded into caller storage; "[UNAVAILABLE]" and
// "[TEMPUNAVAIL]" say the front end does not know the value (the attribute is then reset).
// Pure: no syscalls, no allocation; who may send XCLIENT is the embedder's decision.
// Invariants: on xclient_error::none every present value is decoded and valid for its
// attribute (an address parses as IPv4 or IPv6, a port is 0..65535, PROTO is SMTP or ESMTP, a
// name or login has only printable ASCII); views point into the storage given.
// Never: a value that could break a log record or a Received: field (controls, spaces).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace ringmta::smtp {

enum class xclient_state : std::uint8_t {
  absent,       // not in the command: the session keeps what it had
  value,        // a value was given
  unavailable,  // [UNAVAILABLE] or [TEMPUNAVAIL]: the session forgets what it had
};

struct xclient_value {
  xclient_state state = xclient_state::absent;
  std::string_view text;  // decoded; for ADDR/DESTADDR without an "IPV6:" prefix
  bool given() const noexcept { return state == xclient_state::value; }
};

struct xclient_attributes {
  xclient_value name;      // the client's host name (reverse DNS, as the front end saw it)
  xclient_value address;   // ADDR: IPv4 or IPv6 ("IPV6:" prefix removed)
  xclient_value port;      // PORT: 0..65535
  xclient_value protocol;  // PROTO: "SMTP" or "ESMTP" (upper case)
  xclient_value helo;      // HELO: the name the client gave in HELO/EHLO
  xclient_value login;     // LOGIN: the SASL login name (the session becomes authenticated)
  xclient_value destination_address;  // DESTADDR: the address the client connected to
  xclient_value destination_port;     // DESTPORT
  bool address_v6 = false;            // address is IPv6
};

enum class xclient_error : std::uint8_t {
  none,
  empty,           // no attribute at all
  syntax,          // not name=value, or malformed xtext
  unknown_name,    // an attribute we do not implement (501, as Postfix)
  bad_value,       // a value invalid for its attribute
  too_long,        // decoded values exceed the storage
};

struct xclient_result {
  xclient_error error = xclient_error::none;
  std::string_view attribute;  // the offending attribute name (for the 501 text)
};

// The attribute names offered in EHLO ("250-XCLIENT " + this).
inline constexpr std::string_view xclient_attribute_names =
    "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";

// Parses `argument` (what follows "XCLIENT", with its leading space). Decoded values are
// written to `storage` (as large as the argument suffices). A later duplicate wins (Postfix).
xclient_result parse_xclient(std::string_view argument, xclient_attributes& out,
                             std::span<char> storage) noexcept;

std::string_view describe(xclient_error error) noexcept;

}  // namespace ringmta::smtp
