// Fuzz target: the AUTH exchange (auth::sasl_exchange) and base64. The input is lines: the first
// is "MECHANISM [initial-response]", each next one a client response. Invariants: no step reads
// past its input; a verify step has a login of 1..255 octets without control characters and a
// password of 1..1024; a refusal leaves no password behind; whatever decodes re-encodes to text
// that decodes to the same octets.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ringmta/auth/sasl.h"
#include "ringmta/core/assert.h"

using ringmta::auth::sasl_exchange;
using ringmta::auth::sasl_step;

namespace {

void check_base64(std::string_view text) {
  static std::array<char, 16384> decoded, encoded, again;
  const auto length = ringmta::auth::decode_base64(text, decoded);
  if (!length) return;
  const auto encoded_length =
      ringmta::auth::encode_base64({decoded.data(), *length}, encoded);
  RINGMTA_ASSERT(encoded_length.has_value());
  const auto round = ringmta::auth::decode_base64({encoded.data(), *encoded_length}, again);
  RINGMTA_ASSERT(round && *round == *length);
  RINGMTA_ASSERT(std::string_view(again.data(), *round) ==
                 std::string_view(decoded.data(), *length));
}

void check_step(const sasl_exchange& x, const sasl_step& step) {
  if (step.what == sasl_step::kind::verify) {
    RINGMTA_ASSERT(!x.user().empty() && x.user().size() <= sasl_exchange::user_bytes_max);
    for (const char c : x.user()) RINGMTA_ASSERT(static_cast<unsigned char>(c) >= 0x20);
    RINGMTA_ASSERT(!x.password().empty() &&
                   x.password().size() <= sasl_exchange::password_bytes_max);
  } else if (step.what == sasl_step::kind::refuse) {
    RINGMTA_ASSERT(step.code >= 400 && step.code < 600);
    RINGMTA_ASSERT(x.password().empty());
  } else {
    RINGMTA_ASSERT(step.code == 334);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  static sasl_exchange x;
  bool started = false;
  sasl_step step;
  while (!input.empty()) {
    const std::size_t end = input.find('\n');
    const std::string_view line = input.substr(0, end);
    input.remove_prefix(end == std::string_view::npos ? input.size() : end + 1);
    check_base64(line);
    if (!started) {
      const std::size_t space = line.find(' ');
      step = x.start(line.substr(0, space),
                     space == std::string_view::npos ? "" : line.substr(space + 1));
      started = true;
    } else if (step.what == sasl_step::kind::challenge) {
      step = x.respond(line);
    } else {
      break;
    }
    check_step(x, step);
  }
  x.clear();
  RINGMTA_ASSERT(x.password().empty());
  return 0;
}
