// Delivery status values shared by the scheduler and the DSN builder: the enhanced status code
// X.Y.Z (RFC 3463) and a failure reason as the SMTP client saw it.
//
// Invariants: a status_code's class is 2, 4 or 5 when valid; subject and detail are at most
// three digits (RFC 3463 §2). Parsing never reads past its input and rejects anything else.
// Never allocates.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringmta::queue {

// RFC 3463 §2: class "." subject "." detail, e.g. 5.1.1.
struct status_code {
  std::uint8_t klass = 0;  // 2 success, 4 persistent transient, 5 permanent; 0: unknown
  std::uint16_t subject = 0;
  std::uint16_t detail = 0;
  bool valid() const noexcept {
    return (klass == 2 || klass == 4 || klass == 5) && subject <= 999 && detail <= 999;
  }
  bool operator==(const status_code&) const = default;
};

std::optional<status_code> parse_status_code(std::string_view text) noexcept;
// "5.1.1" and a NUL, or "" for an invalid code.
std::array<char, 12> format_status_code(status_code code) noexcept;

// Why an attempt did not succeed. `text` is the remote reply as received (lines joined with
// a space), or a local description ("connection refused", "no MX"); it is copied when kept.
struct failure {
  std::uint16_t reply_code = 0;  // 0 when no SMTP reply was involved
  status_code status;            // 4.4.1 etc.; class 0 when unknown
  std::string_view text;
};

}  // namespace ringmta::queue
