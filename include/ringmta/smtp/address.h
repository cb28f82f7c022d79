// Parsing of SMTP paths (RFC 5321 §4.1.2) and of xtext (RFC 3461 §4).
//
// parse_path() reads "<...>" at the start of a MAIL FROM / RCPT TO argument: quoted local parts,
// address literals ([IPv4], [IPv6:...]), the null reverse-path "<>", "<postmaster>", source
// routes (accepted and ignored, RFC 5321 §4.1.1.3 / Appendix C), UTF-8 only when SMTPUTF8 was
// given (RFC 6531 §3.3), length limits (§4.5.3.1.1-3). Results are views into the input.
// Never allocates, never reads past the view it is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ringmta::smtp {

// RFC 5321 §4.5.3.1: sizes in octets.
inline constexpr std::size_t local_part_bytes_max = 64;
inline constexpr std::size_t domain_bytes_max = 255;
inline constexpr std::size_t path_bytes_max = 256;  // including the angle brackets

struct mailbox {
  std::string_view address;     // "local@domain" (source route dropped); empty for <>
  std::string_view local_part;  // as sent: a quoted local part keeps its quotes
  std::string_view domain;      // domain, or address literal with its brackets; empty for
                                // <postmaster> and <>
  bool is_null = false;         // the null reverse-path <> (RFC 5321 §4.5.5)
  bool is_postmaster = false;   // <postmaster> without domain (RFC 5321 §4.1.1.3)
  bool is_utf8 = false;         // has octets above 127 (needs SMTPUTF8, RFC 6531)
  bool is_address_literal = false;
};

enum class path_kind : std::uint8_t { reverse, forward };

enum class path_error : std::uint8_t {
  none,
  syntax,               // 501 5.1.7 (reverse) / 501 5.1.3 (forward)
  local_part_too_long,  // 501 5.1.x too: RFC 5321 §4.5.3.1.1
  domain_too_long,
  path_too_long,
  utf8_not_allowed,     // 553 5.6.7 (RFC 6531 §3.7.4.1)
};

struct path_result {
  mailbox box;
  std::size_t consumed = 0;  // octets of the input up to and including '>'
  path_error error = path_error::none;
};

// `text` must start with '<'. utf8_allowed: SMTPUTF8 was given on MAIL.
path_result parse_path(std::string_view text, path_kind kind, bool utf8_allowed) noexcept;

// A short human text for a path error ("Bad address syntax", ...).
std::string_view describe(path_error error) noexcept;

// Domain syntax of RFC 5321 §4.1.2 (sub-domain *("." sub-domain)), or an address literal when
// it starts with '['. U-labels (UTF-8) accepted only when utf8_allowed. Used for EHLO too.
bool is_domain(std::string_view text, bool utf8_allowed) noexcept;
bool is_address_literal(std::string_view text) noexcept;

// Decodes xtext (RFC 3461 §4: "+" HEXCHAR HEXCHAR for octets outside "!".."~", '+' and '=')
// into `out`. Returns the decoded length, or -1 when malformed or longer than out.
std::ptrdiff_t decode_xtext(std::string_view text, std::span<char> out) noexcept;

// Whether two forward paths ("local@domain", as in mailbox::address) name the same mailbox for
// folding duplicate recipients: RFC 5321 §2.4 has the local part case-sensitive (only the
// destination host may decide otherwise), domains are not, so only the domain is compared
// without case. A quoted local part and its unquoted equivalent count as different (rare;
// the only cost is a second delivery).
bool same_mailbox(std::string_view a, std::string_view b) noexcept;

// True when `text` is well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool is_valid_utf8(std::string_view text) noexcept;

}  // namespace ringmta::smtp
