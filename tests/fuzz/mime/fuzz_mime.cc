// Fuzz target for mime::downgrade_to_7bit: any input either converts to a message without an
// 8-bit octet, is reported unchanged (it had none), or is refused with an empty output; it
// never crashes, hangs or recurses without bound.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ringmta/mime/downgrade.h"

namespace {
bool has_8bit(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out;
  const auto result = ringmta::mime::downgrade_to_7bit(input, out);
  switch (result.status) {
    case ringmta::mime::downgrade_status::converted:
      if (has_8bit(out) || out.size() > 4 * input.size() + 64) std::abort();
      break;
    case ringmta::mime::downgrade_status::unchanged:
      if (has_8bit(input) || !out.empty()) std::abort();
      break;
    default:
      if (!out.empty() || ringmta::mime::describe(result.status).empty()) std::abort();
  }
  return 0;
}
