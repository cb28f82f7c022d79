// mime::downgrade_to_7bit: turns an 8-bit MIME message into a 7-bit one for a next hop that
// does not offer 8BITMIME (RFC 6152 §3: "either return the message as undeliverable or
// convert it to 7 bits"; Postfix converts). Pure: no syscalls, no I/O.
//
// What it does, entity by entity (RFC 2045, RFC 2046), recursing into multipart/* parts and
// message/rfc822 bodies up to downgrade_depth_max levels:
//   - a leaf body with 8-bit octets and Content-Transfer-Encoding 7bit, 8bit or none is
//     re-encoded as quoted-printable (RFC 2045 §6.7: hard line breaks stay CRLF, lines of at
//     most 76 characters, bare CR and LF encoded so the conversion is lossless for any type),
//     and its Content-Transfer-Encoding field says so (added when missing; the top level also
//     gets "MIME-Version: 1.0" when it had none);
//   - an entity labelled 8bit whose content is 7-bit is relabelled 7bit;
//   - everything else is copied byte for byte, header fields in their order.
// It refuses (status says why, nothing usable in `out`) rather than guess: 8-bit octets in a
// header field (that needs SMTPUTF8, RFC 6532, or RFC 2047 encoding by the author), in a
// base64 or quoted-printable body (corrupt), in a "binary" body, in a multipart preamble or
// epilogue or a multipart without boundary, in message/global or another message/* type, or
// nesting deeper than downgrade_depth_max.
//
// The input is the raw message (not dot-stuffed) as stored: lines end in CRLF. The caller
// decides about DKIM: `dkim_signed` says the top level carries a DKIM-Signature, which any
// conversion breaks (docs/interop.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringmta::mime {

inline constexpr int downgrade_depth_max = 16;
inline constexpr std::size_t qp_line_chars_max = 76;  // RFC 2045 §6.7 rule 5

enum class downgrade_status : std::uint8_t {
  converted,          // `out` holds the 7-bit message
  unchanged,          // no 8-bit octet anywhere: send the message as it is
  eight_bit_header,   // a header field (of any entity) has 8-bit octets
  encoded_8bit,       // a base64 or quoted-printable body has 8-bit octets
  binary_part,        // Content-Transfer-Encoding: binary with 8-bit octets
  unsupported,        // 8-bit octets where no encoding can hold them (see above)
  too_deep,           // more than downgrade_depth_max nested entities
};

struct downgrade_result {
  downgrade_status status = downgrade_status::unchanged;
  bool dkim_signed = false;  // the top-level header has a DKIM-Signature field
};

downgrade_result downgrade_to_7bit(std::string_view message, std::string& out);

// One phrase for a DSN or log record ("8-bit octets in a header field").
std::string_view describe(downgrade_status status) noexcept;

// Appends `text` encoded as quoted-printable (RFC 2045 §6.7); CRLF pairs stay hard line breaks.
void append_quoted_printable(std::string_view text, std::string& out);

}  // namespace ringmta::mime
