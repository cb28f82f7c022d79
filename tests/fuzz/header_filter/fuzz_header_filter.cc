// Fuzz target: net::header_filter (X-Ringmta-Pool removal and the Received: hop count at
// reception, one walk).
// Invariants: the output is what a plain line-by-line reference keeps (every header line that
// starts with the field name and colon in any case, and the folded lines after it, removed;
// nothing after the first empty line touched), whatever the split of the input (the first
// byte picks the piece sizes; one byte per piece is always tried); the kept value is the
// first field's; the hop count is the reference's number of header lines starting with
// "Received:" in any case (RFC 5321 §6.3).
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringmta/core/assert.h"
#include "ringmta/net/header_filter.h"

namespace {

constexpr std::string_view field = "x-ringmta-pool:";
constexpr std::string_view received = "received:";

struct walked {
  std::string out;
  std::uint32_t hops = 0;
  bool operator==(const walked&) const = default;
};

bool starts_with_any_case(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  return true;
}

walked reference(std::string_view input) {
  walked result;
  std::string& out = result.out;
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
    const bool ours = starts_with_any_case(line, field);
    if (starts_with_any_case(line, received)) ++result.hops;
    const bool folded = (line.front() == ' ' || line.front() == '\t') && dropped;
    dropped = ours || folded;
    if (!dropped) out += line;
  }
  return result;
}

walked filtered(std::string_view input, std::size_t stride) {
  ringmta::net::header_filter filter("X-Ringmta-Pool");
  filter.reset();
  walked result;
  std::string& out = result.out;
  const auto emit = [&](std::string_view kept) { out += kept; };
  std::size_t fed = 0;
  for (std::size_t piece = 1; fed < input.size(); piece = piece % stride + 1) {
    const auto bytes = input.substr(fed, piece);
    fed += bytes.size();
    filter.feed(bytes, emit);
  }
  filter.finish(emit);
  result.hops = filter.received_fields();
  return result;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t stride = data[0] % 32 + 1;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const walked expected = reference(input);
  RINGMTA_ASSERT(filtered(input, input.size() + 1) == expected);
  RINGMTA_ASSERT(filtered(input, 1) == expected);
  RINGMTA_ASSERT(filtered(input, stride) == expected);
  return 0;
}
