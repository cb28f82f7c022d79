// Constants and small helpers shared by the server_session implementation files. Not installed.
#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <string_view>

namespace ringmta::smtp::detail {

inline constexpr std::size_t reply_line_bytes_max = 512;  // RFC 5321 §4.5.3.1.5, incl. CRLF
inline constexpr std::size_t reply_bytes_max = 1536;      // one reply, all its lines
// Free output needed before a command is handled: its reply, a later end-of-data reply, and a
// 421 after it (errors_max) all fit, so output never overflows.
inline constexpr std::size_t step_output_bytes_max = 3 * reply_bytes_max;

inline char upper(char c) noexcept { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }

// Case-insensitive: does `text` start with `prefix` (prefix in upper case)?
inline bool starts_with_upper(std::string_view text, std::string_view prefix) noexcept {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (upper(text[i]) != prefix[i]) return false;
  }
  return true;
}

inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (upper(a[i]) != upper(b[i])) return false;
  }
  return true;
}

inline bool iequals_upper(std::string_view text, std::string_view word) noexcept {
  return text.size() == word.size() && starts_with_upper(text, word);
}

// Copies as much of `text` as fits into `buffer`; returns the octets copied. Safe for empty
// views whose data() is null (memcpy's pointers must never be).
template <std::size_t N>
std::size_t copy_into(std::array<char, N>& buffer, std::string_view text) noexcept {
  const std::size_t n = text.size() < N ? text.size() : N;
  for (std::size_t i = 0; i < n; ++i) buffer[i] = text[i];
  return n;
}

// Concatenates parts into `buffer` (cut at its size); returns the view of what was written.
template <std::size_t N>
std::string_view join(std::array<char, N>& buffer,
                      std::initializer_list<std::string_view> parts) noexcept {
  std::size_t n = 0;
  for (const std::string_view part : parts) {
    for (const char c : part) {
      if (n == N) return {buffer.data(), n};
      buffer[n++] = c;
    }
  }
  return {buffer.data(), n};
}

}  // namespace ringmta::smtp::detail
