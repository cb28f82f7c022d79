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

// The Received: fields a message arrives with are counted (RFC 5321 §6.3) by the inbound
// header walk, net::header_filter::received_fields() (header_filter.h).

}  // namespace ringmta::net
