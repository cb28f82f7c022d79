// The Received: trace header ringmta prepends to every message it accepts (RFC 5321 §4.4,
// RFC 5322 §3.6.7), e.g.
//
//   Received: from client.example (client.example [192.0.2.7])
//   	(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
//   	by mx.example.com (ringmta) with ESMTPS id 0GXK3M2Q7A1
//   	for <bob@example.com>; Sat, 21 Nov 2026 21:55:35 +0000
//
// Pure and allocation-free: formats into a caller's fixed buffer. We do no reverse DNS (it
// would put a DNS round trip on every connection), so the parenthesised part names the
// client's address only, as RFC 5321 §4.4 allows ("TCP-info" is the address literal).
// The "for" clause is given only for single-recipient messages, to not disclose Bcc lists.
// The protocol given here is the one the connection logs for the message: one source.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringmta::net {

struct received_fields {
  std::string_view helo;            // as the client gave it (sanitised here)
  std::string_view client_address;  // "192.0.2.7" or "2001:db8::1"
  std::string_view hostname;        // ours
  std::string_view protocol;        // SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848)
  std::string_view queue_id;
  std::string_view single_recipient;  // empty unless exactly one recipient
  std::int64_t unix_seconds = 0;
  // "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))" or empty (Postfix's
  // form, on its own line after the "from" clause).
  std::string_view tls;
  // An SMTPUTF8 message (RFC 6531): the "for" address keeps its UTF-8 (RFC 6532 §3.2); in any
  // other message a non-ASCII octet becomes '_'.
  bool utf8 = false;
};

inline constexpr std::size_t received_header_bytes_max = 1024;

// Writes the header (ending in CRLF) into out; returns its length. Fields too long for the
// buffer are truncated, never overflow it.
std::size_t format_received_header(const received_fields& fields, char* out,
                                   std::size_t out_bytes) noexcept;

// "Sat, 21 Nov 2026 21:55:35 +0000" (RFC 5322 §3.3), always in UTC. `out` ≥ 32 bytes.
std::size_t format_rfc5322_date(std::int64_t unix_seconds, char* out) noexcept;

// Counts the Received: fields in a message's header section, fed in pieces split anywhere
// (RFC 5321 §6.3: a relay counts them to stop mail loops). Only lines starting with
// "Received:" (any case) count; the header section ends at the first empty line. A few bytes of
// state, no allocation.
class received_counter {
 public:
  void feed(std::string_view bytes) noexcept;
  std::uint32_t count() const noexcept { return _count; }
  void reset() noexcept { *this = received_counter{}; }

 private:
  bool _in_headers = true;
  bool _line_start = true;
  bool _skip_line = false;        // this line is not a Received: field (or was counted)
  std::uint8_t _matched = 0;      // bytes of "received:" matched at this line's start
  std::uint32_t _count = 0;
};

}  // namespace ringmta::net
