// net::idna: internationalized domain names (IDNA 2008, RFC 5890-5893, with the UTS #46
// mapping browsers and MTAs use) through libidn2: a domain as a user typed it or an SMTPUTF8
// client sent it ("Bücher.test") becomes its A-label form ("xn--bcher-kva.test") for DNS,
// routing, shaping and relay-domain matching, so every comparison is between one spelling.
//
// An all-ASCII name is only lowercased (no library call: the common case stays cheap); an
// A-label in it is taken as written. A non-ASCII name that IDNA 2008 rejects (disallowed code
// points, invalid UTF-8, a label over 63 octets) has no A-label form: the caller refuses it.
// Look-alikes are not folded: "bücher" with a Cyrillic "ѕ" or a Latin "u" is another name.
// Never: throws, blocks, or accepts a name that is not valid UTF-8.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ringmta::net {

// Lowercase A-label form of `domain`, or nullopt when it is not a valid IDNA 2008 name.
std::optional<std::string> domain_to_ascii(std::string_view domain);

// True when every octet is ASCII.
bool is_ascii(std::string_view text) noexcept;

// "local@domain" with its domain in A-labels; nullopt when the domain has none. The local part
// is kept as written (only SMTPUTF8 can carry a non-ASCII one: RFC 6531 §3.2).
std::optional<std::string> address_to_ascii_domain(std::string_view address);

}  // namespace ringmta::net
