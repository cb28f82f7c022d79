// ESMTP parameters of MAIL FROM and RCPT TO (RFC 5321 §4.1.2 Mail-parameters / Rcpt-parameters)
// and the set of extensions a server offers.
//
// Known parameters: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET, ENVID,
// NOTIFY, ORCPT (RFC 3461), AUTH (RFC 4954 §5). A parameter of an extension that is switched off
// is unknown (555 5.5.4). Each may appear once. Decoded values (ENVID, ORCPT) are written into a
// caller-owned scratch span; every other view points into the parsed text.
// Never allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ringmta::smtp {

// Extensions advertised in the EHLO reply; each can be switched off (e.g. a test sink that
// advertises a subset). STARTTLS and AUTH are offered through server_config.
struct extension_set {
  bool pipelining = true;             // RFC 2920
  bool size = true;                   // RFC 1870
  bool eight_bit_mime = true;         // RFC 6152
  bool smtputf8 = true;               // RFC 6531
  bool enhanced_status_codes = true;  // RFC 2034
  bool chunking = true;               // RFC 3030 (BDAT)
  bool binary_mime = true;            // RFC 3030 (needs chunking)
  bool dsn = true;                    // RFC 3461
};

enum class body_type : std::uint8_t { unspecified, seven_bit, eight_bit_mime, binary_mime };
enum class dsn_return : std::uint8_t { unspecified, full, headers };

// RFC 3461 §4.1 NOTIFY: NEVER, or any of SUCCESS, FAILURE, DELAY.
inline constexpr std::uint8_t notify_never = 1;
inline constexpr std::uint8_t notify_success = 2;
inline constexpr std::uint8_t notify_failure = 4;
inline constexpr std::uint8_t notify_delay = 8;

inline constexpr std::size_t envid_bytes_max = 100;  // RFC 3461 §4.4
inline constexpr std::size_t orcpt_bytes_max = 500;  // RFC 3461 §4.2

struct mail_parameters {
  bool has_size = false;
  std::uint64_t size = 0;             // SIZE=, octets declared by the client
  body_type body = body_type::unspecified;
  bool smtputf8 = false;
  dsn_return ret = dsn_return::unspecified;
  std::string_view envid;             // decoded xtext
  std::string_view auth;              // AUTH= as sent (xtext, "<>" for none)
};

struct rcpt_parameters {
  std::uint8_t notify = 0;            // notify_* bits, 0 when absent
  std::string_view orcpt_type;        // "rfc822", "utf-8", ... (RFC 3461 §4.2 addr-type)
  std::string_view orcpt;             // decoded xtext (utf-8 type: kept as sent)
};

enum class parameter_error : std::uint8_t {
  none,
  syntax,     // 501 5.5.4: bad keyword=value syntax
  value,      // 501 5.5.4: known keyword, bad value
  duplicate,  // 501 5.5.4
  unknown,    // 555 5.5.4 (RFC 5321 §4.1.1.11)
};

struct parameter_result {
  parameter_error error = parameter_error::none;
  std::string_view keyword;  // the offending keyword, for the reply text
};

// `text`: what follows the path, e.g. " SIZE=100 BODY=8BITMIME" (leading spaces allowed).
// auth_offered: AUTH= is known only when the server offers AUTH.
parameter_result parse_mail_parameters(std::string_view text, const extension_set& extensions,
                                       bool auth_offered, mail_parameters& out,
                                       std::span<char> scratch) noexcept;
parameter_result parse_rcpt_parameters(std::string_view text, const extension_set& extensions,
                                       rcpt_parameters& out, std::span<char> scratch) noexcept;

std::string_view to_string(body_type type) noexcept;  // "7BIT", "8BITMIME", "BINARYMIME", ""

}  // namespace ringmta::smtp
