// core::base64_value: the value of one base64 character (RFC 4648 §4), for the decoders of
// SASL responses (auth) and DKIM key records (dkim). Pure; never allocates.
#pragma once

namespace ringmta::core {

// 0..63 for a character of the base64 alphabet, -1 for anything else ('=' included).
constexpr int base64_value(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace ringmta::core
