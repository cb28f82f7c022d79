// The envelope of a spooled message and the per-recipient delivery state, with their binary
// encoding inside commit records.
//
// Invariants: decode_envelope(encode_envelope(e)) == e; decode never reads past its input and
// turns any malformed input into EBADMSG (the input may be a corrupted or hostile file).
// Strings are stored as given (the SMTP engine has already validated them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/message_id.h"

namespace ringmta::spool {

// RFC 6152 / RFC 3030 BODY= parameter.
enum class body_type : std::uint8_t { unspecified = 0, seven_bit, eight_bit_mime, binary_mime };
// RFC 3461 §4.3 RET= parameter.
enum class dsn_return : std::uint8_t { unspecified = 0, full, headers };

// RFC 3461 §4.1 NOTIFY= values as bits; 0 means the parameter was absent.
enum notify_bits : std::uint8_t {
  notify_never = 1,
  notify_success = 2,
  notify_failure = 4,
  notify_delay = 8,
};

struct recipient {
  std::string address;   // forward path without the angle brackets
  std::uint8_t notify = 0;
  std::string orcpt;     // RFC 3461 §4.2 ORCPT "addr-type;address", address xtext-decoded
  bool operator==(const recipient&) const = default;
};

struct envelope {
  message_id id = 0;
  std::string reverse_path;  // empty for the null reverse path <>
  std::uint64_t size_declared = 0;  // RFC 1870 SIZE=, 0 when absent
  body_type body = body_type::unspecified;
  bool smtputf8 = false;  // RFC 6531
  dsn_return ret = dsn_return::unspecified;
  std::string envid;  // RFC 3461 §4.4 ENVID, xtext-decoded (re-encoded when relayed)
  std::vector<recipient> recipients;
  std::int64_t received_seconds = 0;  // wall clock
  std::string client_address;  // text, e.g. "192.0.2.1" or "[2001:db8::1]:5000"
  std::string helo;
  bool operator==(const envelope&) const = default;
};

// Delivery state of one recipient, kept by the state journal. queued and deferred are live;
// delivered, bounced and deleted (by an operator, no DSN) are final and never change again.
enum class recipient_state : std::uint8_t {
  queued = 0,
  deferred = 1,
  delivered = 2,
  bounced = 3,
  deleted = 4,
};
inline constexpr std::uint8_t recipient_state_max = 4;

inline bool is_final(recipient_state state) noexcept {
  return state == recipient_state::delivered || state == recipient_state::bounced ||
         state == recipient_state::deleted;
}
const char* recipient_state_name(recipient_state state) noexcept;

struct recipient_status {
  recipient_state state = recipient_state::queued;
  std::uint32_t attempts = 0;
  std::int64_t next_attempt_seconds = 0;  // wall clock; meaningful when deferred
  bool operator==(const recipient_status&) const = default;
};

// Limits enforced on encode (assert) and decode (EBADMSG): bounded memory for hostile files.
inline constexpr std::size_t envelope_string_bytes_max = 4096;
inline constexpr std::size_t envelope_recipients_max = 65535;  // recipient index is 16 bits

// `pool`: the egress pool a trusted X-Ringmta-Pool header chose (server/egress.h), stored as an
// optional tagged field after the recipients, absent when empty: an envelope without one
// encodes to the bytes written before the field existed, and those decode as before. It is
// kept out of `envelope` because the relay holds an envelope per queued message in memory
// (server/relay_internal.h, spooled_message: 256 bytes) and needs the pool only when it routes
// recovered mail. decode_envelope gives it through `pool` when asked (else it is checked and
// dropped).
void encode_envelope(const envelope& value, std::string& out, std::string_view pool = {});
core::result<envelope> decode_envelope(std::string_view bytes, std::string* pool = nullptr);

// What start-up recovery needs of each commit's envelope, without copying its strings (issue
// 15: millions of envelopes before the first greeting). Accepts exactly the inputs
// decode_envelope accepts (one shared walk), and its fields equal decode_envelope's.
struct envelope_summary {
  message_id id = 0;
  std::int64_t received_seconds = 0;
  std::uint32_t recipients = 0;
};
core::result<envelope_summary> decode_envelope_summary(std::string_view bytes);

}  // namespace ringmta::spool
