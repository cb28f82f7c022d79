// Fuzz target: net::header_filter (X-Ringmta-Pool removal at reception).
// Invariants: the output is what a plain line-by-line reference keeps (every header line that
// starts with the field name and colon in any case, and the folded lines after it, removed;
// nothing after the first empty line touched), whatever the split of the input (the first
// byte picks the piece sizes; one byte per piece is always tried), and the kept value is the
// first field's.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringmta/core/assert.h"
#include "ringmta/net/header_filter.h"

namespace {

constexpr std::string_view field = "x-ringmta-pool:";

std::string reference(std::string_view input) {
  std::string out;
  bool in_headers = true;
  bool dropped = false;
  while (!input.empty()) {
    const auto end = input.find('\n');
    const auto line = input.substr(0, end == std::string_view::npos ? input.size() : end + 1);
    input.remove_prefix(line.size());
    if (!in_headers || line.front() == '\r' || line.front() == '\n') {
      in_headers = false;
      out += line;
      continue;
    }
    bool ours = line.size() >= field.size();
    for (std::size_t i = 0; ours && i < field.size(); ++i)
      ours = std::tolower(static_cast<unsigned char>(line[i])) == field[i];
    const bool folded = (line.front() == ' ' || line.front() == '\t') && dropped;
    dropped = ours || folded;
    if (!dropped) out += line;
  }
  return out;
}

std::string filtered(std::string_view input, std::size_t stride) {
  ringmta::net::header_filter filter("X-Ringmta-Pool");
  filter.reset();
  std::string out;
  const auto emit = [&](std::string_view kept) { out += kept; };
  std::size_t fed = 0;
  for (std::size_t piece = 1; fed < input.size(); piece = piece % stride + 1) {
    const auto bytes = input.substr(fed, piece);
    fed += bytes.size();
    filter.feed(bytes, emit);
  }
  filter.finish(emit);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t stride = data[0] % 32 + 1;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string expected = reference(input);
  RINGMTA_ASSERT(filtered(input, input.size() + 1) == expected);
  RINGMTA_ASSERT(filtered(input, 1) == expected);
  RINGMTA_ASSERT(filtered(input, stride) == expected);
  return 0;
}
