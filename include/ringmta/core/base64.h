// core::base64_value: the value of one base64 character (RFC 4648 §4), for the decoders of
// SASL responses (auth) and DKIM key records (dkim); core::base64_encode for the SASL client
// (smtp client AUTH). Pure; never allocates.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

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

// Octets base64_encode writes for `bytes` input octets (with '=' padding).
constexpr std::size_t base64_encoded_bytes(std::size_t bytes) noexcept {
  return (bytes + 2) / 3 * 4;
}

// RFC 4648 §4 with padding; returns the octets written, or 0 when `out` is too small (and
// the input was not empty).
inline std::size_t base64_encode(std::string_view in, std::span<char> out) noexcept {
  constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (out.size() < base64_encoded_bytes(in.size())) return 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    const std::size_t left = in.size() - i;
    const unsigned a = static_cast<unsigned char>(in[i]);
    const unsigned b = left > 1 ? static_cast<unsigned char>(in[i + 1]) : 0;
    const unsigned c = left > 2 ? static_cast<unsigned char>(in[i + 2]) : 0;
    const unsigned word = (a << 16) | (b << 8) | c;
    out[n++] = alphabet[(word >> 18) & 63];
    out[n++] = alphabet[(word >> 12) & 63];
    out[n++] = left > 1 ? alphabet[(word >> 6) & 63] : '=';
    out[n++] = left > 2 ? alphabet[word & 63] : '=';
  }
  return n;
}

}  // namespace ringmta::core
