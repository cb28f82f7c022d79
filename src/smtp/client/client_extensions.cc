#include "ringmta/smtp/client_extensions.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace ringmta::smtp {

namespace {

char to_upper(char c) noexcept { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }

// ESMTP keywords are case-insensitive (RFC 5321 §2.4).
bool keyword_is(std::string_view keyword, std::string_view expected) noexcept {
  if (keyword.size() != expected.size()) return false;
  for (std::size_t i = 0; i < keyword.size(); ++i) {
    if (to_upper(keyword[i]) != expected[i]) return false;
  }
  return true;
}

// RFC 1870 §3: "SIZE" [SP number]; an absent, zero or unreadable number means no fixed limit.
// A number too large for 64 bits is as good as no limit.
std::uint64_t parse_size(std::string_view params) noexcept {
  while (!params.empty() && params.front() == ' ') params.remove_prefix(1);
  std::uint64_t value = 0;
  std::size_t i = 0;
  for (; i < params.size() && params[i] >= '0' && params[i] <= '9'; ++i) {
    const auto digit = static_cast<std::uint64_t>(params[i] - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return 0;
    value = value * 10 + digit;
  }
  if (i == 0 || (i < params.size() && params[i] != ' ')) return 0;
  return value;
}

}  // namespace

void client_extensions::clear() noexcept {
  *this = client_extensions{};
}

void client_extensions::parse_line(std::string_view line) noexcept {
  const std::size_t space = line.find(' ');
  const std::string_view keyword = line.substr(0, space);
  const std::string_view params =
      space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  if (keyword_is(keyword, "PIPELINING")) {
    pipelining = true;
  } else if (keyword_is(keyword, "SIZE")) {
    size = true;
    size_bytes_max = parse_size(params);
  } else if (keyword_is(keyword, "8BITMIME")) {
    eight_bit_mime = true;
  } else if (keyword_is(keyword, "SMTPUTF8")) {
    smtputf8 = true;
  } else if (keyword_is(keyword, "ENHANCEDSTATUSCODES")) {
    enhanced_status_codes = true;
  } else if (keyword_is(keyword, "CHUNKING")) {
    chunking = true;
  } else if (keyword_is(keyword, "BINARYMIME")) {
    binary_mime = true;
  } else if (keyword_is(keyword, "DSN")) {
    dsn = true;
  } else if (keyword_is(keyword, "STARTTLS")) {
    starttls = true;
  } else if (keyword_is(keyword, "AUTH")) {
    auth = true;
    const std::size_t take = std::min(params.size(), sizeof(auth_mechanisms_data));
    if (take != 0) std::memcpy(auth_mechanisms_data, params.data(), take);
    auth_mechanisms_bytes = static_cast<std::uint8_t>(take);
  }
}

}  // namespace ringmta::smtp
