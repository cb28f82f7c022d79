#include "ringmta/queue/status.h"

#include <fmt/format.h>

namespace ringmta::queue {

namespace {

// Reads 1..3 digits (RFC 3463 §2: subject and detail are 1*3digit); advances `at`.
bool read_number(std::string_view text, std::size_t& at, unsigned digits_max,
                 std::uint16_t& value) noexcept {
  std::size_t start = at;
  value = 0;
  while (at < text.size() && text[at] >= '0' && text[at] <= '9' && at - start < digits_max) {
    value = static_cast<std::uint16_t>(value * 10 + (text[at] - '0'));
    ++at;
  }
  return at > start;
}

}  // namespace

std::optional<status_code> parse_status_code(std::string_view text) noexcept {
  std::size_t at = 0;
  std::uint16_t klass = 0, subject = 0, detail = 0;
  if (!read_number(text, at, 1, klass) || at >= text.size() || text[at++] != '.') return {};
  if (!read_number(text, at, 3, subject) || at >= text.size() || text[at++] != '.') return {};
  if (!read_number(text, at, 3, detail) || at != text.size()) return {};
  status_code code{static_cast<std::uint8_t>(klass), subject, detail};
  if (!code.valid()) return {};
  return code;
}

std::array<char, 12> format_status_code(status_code code) noexcept {
  std::array<char, 12> out{};
  if (!code.valid()) return out;
  auto end = fmt::format_to_n(out.data(), out.size() - 1, "{}.{}.{}", unsigned{code.klass},
                              unsigned{code.subject}, unsigned{code.detail});
  *end.out = '\0';
  return out;
}

}  // namespace ringmta::queue
