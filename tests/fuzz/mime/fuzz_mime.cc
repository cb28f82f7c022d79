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

// Lines starting with "--": an upper bound on the MIME parts (RFC 2046 §5.1.1 delimiters).
std::size_t delimiter_lines(std::string_view text) {
  std::size_t count = 0;
  for (std::size_t at = 0; at < text.size();) {
    if (text.substr(at, 2) == "--") ++count;
    const std::size_t end = text.find_first_of("\r\n", at);
    if (end == std::string_view::npos) break;
    at = end + 1;
  }
  return count;
}

// The output grows linearly: quoted-printable at most triples a byte (plus soft line breaks
// and CRLF for bare line ends: 4x), and every converted part gets a Content-Transfer-Encoding
// field (~45 octets) — a part can be a few octets of input ("--d" CRLF CRLF), so the fields
// are counted per delimiter line, not per input byte (a 807-octet input of 52 tiny parts
// grew to 3,331 octets: 4x + 64 was too tight a bound).
std::size_t output_bound(std::string_view input) {
  return 4 * input.size() + 64 + 64 * delimiter_lines(input);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out;
  const auto result = ringmta::mime::downgrade_to_7bit(input, out);
  switch (result.status) {
    case ringmta::mime::downgrade_status::converted:
      if (has_8bit(out) || out.size() > output_bound(input)) std::abort();
      break;
    case ringmta::mime::downgrade_status::unchanged:
      if (has_8bit(input) || !out.empty()) std::abort();
      break;
    default:
      if (!out.empty() || ringmta::mime::describe(result.status).empty()) std::abort();
  }
  return 0;
}
