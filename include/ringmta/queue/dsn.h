// queue::dsn: delivery status notifications (RFC 3464) as multipart/report (RFC 6522), built
// in SMTP wire form so the embedder can store them straight into the spool as a new message
// from the null reverse path, and the policy deciding whether to send one (RFC 3461).
//
// Choices (documented here because they are policy, not protocol):
// - NOTIFY absent means FAILURE,DELAY (RFC 3461 §4.1 leaves the choice to the MTA; a delayed
//   DSN is only built when the scheduler's delay_warning_ms says so). NEVER wins over all.
// - What is returned (RFC 3461 §4.3): only a DSN that reports a failure returns content; a
//   success or delay report returns the header section. RET=HDRS: headers. RET=FULL: the whole
//   message up to full_bytes_max_requested (1 MiB), else headers. RET absent: the whole
//   message up to full_bytes_max_default (64 KiB), else headers.
// - Types: message/rfc822 (full) or text/rfc822-headers (headers), 7bit or 8bit as the bytes
//   require (RFC 2046 §5.2.1 forbids encoding message/rfc822 otherwise). When the original was
//   SMTPUTF8, the RFC 6533 types: message/global-delivery-status, message/global or
//   message/global-headers, report-type=global-delivery-status, "utf-8;" address types. The
//   DSN needs SMTPUTF8 itself only when the address it goes to is not ASCII; 8-bit parts
//   travel with BODY=8BITMIME (RFC 6532 §3.5: message/global is for that).
// - A returned original whose lines break SMTP rules (longer than 998, NUL, bare CR or LF,
//   a leading "." not stuffed) falls back to headers; a header section that does so is cut
//   before the bad line. So the output is valid wire form whatever the input.
// - Field values (diagnostics, ENVID, ORCPT, remote names) are xtext-decoded where RFC 3461
//   says so, stripped of control characters, non-ASCII replaced by '?' unless in global mode,
//   cut to bounded lengths and folded at 78 columns.
//
// Invariants of the output: CRLF line endings, every line <= 998 octets, dot-stuffed (RFC 5321
// §4.5.2), without the final ".CRLF" (like every spooled body); the MIME boundary occurs in no
// part; size <= ~4 KiB + 3 KiB per recipient + the returned part (bounded by the policy).
// Never: builds a DSN for the null reverse path, throws on bad input, or reads a clock.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "ringmta/core/result.h"
#include "ringmta/queue/status.h"
#include "ringmta/spool/envelope.h"

namespace ringmta::queue {

// RFC 3464 §2.3.3 action-value.
enum class dsn_action : std::uint8_t { failed, delayed, delivered, relayed, expanded };

// Whether this recipient's outcome gets a DSN: never for the null reverse path (RFC 5321
// §4.5.5, RFC 3464 §4: no DSN about a DSN), never with NOTIFY=NEVER, else as NOTIFY asks
// (spool::notify_bits; 0 = absent = FAILURE,DELAY). relayed and expanded count as SUCCESS
// (RFC 3461 §5.2.2, §5.2.3).
bool should_send_dsn(std::string_view reverse_path, std::uint8_t notify,
                     dsn_action action) noexcept;

struct dsn_recipient {
  std::string_view address;        // final recipient, the forward path without <>
  std::string_view orcpt;          // ORCPT as received ("rfc822;a+2Bb@x"), may be empty
  dsn_action action = dsn_action::failed;
  status_code status;              // invalid: 5.0.0 / 4.0.0 / 2.0.0 from the action
  std::string_view remote_mta;     // host name (or "[192.0.2.1]"), may be empty; no port
  std::string_view diagnostic;     // the remote reply text, e.g. "550 5.1.1 no such user"
  std::int64_t last_attempt_seconds = 0;      // 0: not given
  std::int64_t will_retry_until_seconds = 0;  // delayed only; 0: not given
  // RFC 3464 §2.3.6 diagnostic-type: "smtp" only for a reply a server sent; our own reasons
  // (an operator bounce, an expired lifetime) use an X- type so no one reads them as SMTP.
  std::string_view diagnostic_type = "smtp";
};

struct dsn_policy {
  std::uint64_t full_bytes_max_default = 64u << 10;     // RET absent
  std::uint64_t full_bytes_max_requested = 1u << 20;    // RET=FULL
  std::uint64_t headers_bytes_max = 64u << 10;          // returned header section
  std::size_t recipients_max = 1000;                    // E2BIG beyond: split into several
  std::size_t diagnostic_bytes_max = 900;
};

struct dsn_request {
  std::string_view reporting_mta;         // our host name (Reporting-MTA, From, Message-ID)
  const spool::envelope* original = nullptr;  // reverse path, ENVID, RET, SMTPUTF8, arrival
  std::span<const dsn_recipient> recipients;
  // The original body in wire form (dot-stuffed, CRLF, no final ".CRLF"), in pieces; at least
  // dsn_original_bytes_needed() bytes of it (more is ignored).
  std::span<const std::string_view> original_body;
  std::uint64_t original_body_bytes = 0;  // the whole body's size
  spool::message_id dsn_id = 0;           // the DSN's own spool id (for its Message-ID)
  std::int64_t now_seconds = 0;           // Date:
  dsn_policy policy;
};

struct dsn_result {
  spool::body_type body = spool::body_type::seven_bit;  // eight_bit_mime when 8-bit inside
  bool smtputf8 = false;         // the DSN's recipient address is not ASCII
  bool returned_full = false;    // the whole message is returned (else its headers)
  bool original_cut = false;     // the returned header section was cut short
  std::size_t bytes = 0;         // appended to `out`
};

// How many bytes of the original body build_dsn looks at.
std::uint64_t dsn_original_bytes_needed(const dsn_request& request) noexcept;

// Appends the DSN body (headers included) in wire form to `out`. EINVAL: null reverse path,
// no recipient, empty reporting MTA or missing envelope; E2BIG: more than recipients_max.
// On error `out` is unchanged.
core::result<dsn_result> build_dsn(const dsn_request& request, std::string& out);

// RFC 5322 §3.3 date-time in UTC, e.g. "Tue, 14 Nov 2023 22:13:20 +0000".
std::string format_rfc5322_date(std::int64_t epoch_seconds);

}  // namespace ringmta::queue
