// What an SMTP server announced in its EHLO reply (RFC 5321 §4.1.1.1), as the client needs it.
//
// Filled one EHLO reply line at a time by parse_line(); unknown keywords are ignored. Fixed size:
// the AUTH mechanism list is kept in a small buffer and truncated past it. Never allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringmta::smtp {

inline constexpr std::size_t client_auth_mechanisms_bytes_max = 128;

struct client_extensions {
  bool esmtp = false;                  // EHLO was accepted (false after the HELO fallback)
  bool pipelining = false;             // RFC 2920
  bool size = false;                   // RFC 1870
  std::uint64_t size_bytes_max = 0;    // SIZE n; 0 = no fixed limit announced (RFC 1870 §4)
  bool eight_bit_mime = false;         // RFC 6152
  bool smtputf8 = false;               // RFC 6531
  bool enhanced_status_codes = false;  // RFC 2034
  bool chunking = false;               // RFC 3030 (BDAT)
  bool binary_mime = false;            // RFC 3030
  bool dsn = false;                    // RFC 3461
  bool starttls = false;               // RFC 3207
  bool auth = false;                   // RFC 4954; mechanisms recorded below
  std::uint8_t auth_mechanisms_bytes = 0;
  char auth_mechanisms_data[client_auth_mechanisms_bytes_max];

  // Space-separated mechanism names as the server listed them ("PLAIN LOGIN").
  std::string_view auth_mechanisms() const noexcept {
    return {auth_mechanisms_data, auth_mechanisms_bytes};
  }

  // Forgets everything (RFC 3207 §4.2: after STARTTLS the client discards what it learnt).
  void clear() noexcept;
  // Reads one ehlo-line (RFC 5321 §4.1.1.1: keyword *(SP param)), the text after "250-".
  void parse_line(std::string_view line) noexcept;
};

}  // namespace ringmta::smtp
