// Private helpers of the SMTP client engine: syntax checks of what it writes into commands, so
// that nothing from an envelope can inject a CR, LF or a second command. Pure functions.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ringmta/smtp/client_session.h"

namespace ringmta::smtp::client_syntax {

inline client_outcome outcome_of(const parsed_reply& reply) noexcept {
  if (reply.positive()) return client_outcome::accepted;
  return reply.transient() ? client_outcome::transient_failure : client_outcome::permanent_failure;
}

// A path as we put it between <> (RFC 5321 §4.1.2): bounded, no controls, no brackets. Bytes
// >= 0x80 are allowed and make the transaction need SMTPUTF8 (RFC 6531 §3.3).
inline bool path_ok_bytewise(std::string_view path, bool& eight_bit) noexcept {
  for (const char c : path) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '<' || c == '>') return false;
    if (byte >= 0x80) eight_bit = true;
  }
  return true;
}

// Each byte's class for path_ok: what path_ok_bytewise tests, one table load per byte.
inline constexpr std::uint8_t path_byte_refused = 1;
inline constexpr std::uint8_t path_byte_eight_bit = 2;
inline constexpr auto path_byte_classes = [] {
  std::array<std::uint8_t, 256> classes{};
  for (unsigned byte = 0; byte < 256; ++byte) {
    if (byte < 0x20 || byte == 0x7f || byte == '<' || byte == '>') {
      classes[byte] = path_byte_refused;
    } else if (byte >= 0x80) {
      classes[byte] = path_byte_eight_bit;
    }
  }
  return classes;
}();

// path_ok_bytewise's answer, without a branch per byte (paths are checked several times per
// transaction; issue 16): the classes of all bytes ORed, and only a refused path scanned again
// byte by byte, so eight_bit counts exactly the bytes before the first refused one, as before.
inline bool path_ok(std::string_view path, bool& eight_bit) noexcept {
  if (path.size() > client_path_bytes_max) return false;
  unsigned seen = 0;
  for (const char c : path) seen |= path_byte_classes[static_cast<unsigned char>(c)];
  if ((seen & path_byte_refused) != 0) return path_ok_bytewise(path, eight_bit);
  if ((seen & path_byte_eight_bit) != 0) eight_bit = true;
  return true;
}

// An ESMTP parameter value (RFC 5321 §4.1.2 esmtp-value, RFC 3461 xtext): printable, no SP.
inline bool parameter_ok(std::string_view value, std::size_t bytes_max) noexcept {
  if (value.empty() || value.size() > bytes_max) return false;
  return std::all_of(value.begin(), value.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte > 0x20 && byte < 0x7f;
  });
}

// ESMTP keywords and values such as RET=FULL are case-insensitive (RFC 5321 §2.4).
inline bool equals_upper(std::string_view value, std::string_view upper) noexcept {
  if (value.size() != upper.size()) return false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i] >= 'a' && value[i] <= 'z' ? static_cast<char>(value[i] - 32) : value[i];
    if (c != upper[i]) return false;
  }
  return true;
}

constexpr reply_enhanced_code enhanced(std::uint8_t status_class, std::uint16_t subject,
                                       std::uint16_t detail) noexcept {
  return {status_class, subject, detail};
}

}  // namespace ringmta::smtp::client_syntax
