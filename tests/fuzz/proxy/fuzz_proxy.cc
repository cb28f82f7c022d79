// Fuzz target: the PROXY protocol parser. Invariants: it never reads past its input, a header
// it accepts is never longer than the input or the protocol's bounds, and every prefix of an
// accepted header asks for more bytes (so a header split across reads is never misparsed).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ringmta/core/assert.h"
#include "ringmta/net/proxy_protocol.h"

using ringmta::net::parse_proxy_header;
using ringmta::net::proxy_status;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto result = parse_proxy_header(input);
  if (result.status != proxy_status::done) return 0;
  RINGMTA_ASSERT(result.header_bytes > 0 && result.header_bytes <= size);
  RINGMTA_ASSERT(result.header_bytes <= 16 + 216 + ringmta::net::proxy_v2_tlv_bytes_max);
  for (std::size_t n = 0; n < result.header_bytes; n += 1 + n / 8) {
    const auto partial = parse_proxy_header(input.substr(0, n));
    RINGMTA_ASSERT(partial.status == proxy_status::need_more);
  }
  const auto again = parse_proxy_header(input.substr(0, result.header_bytes));
  RINGMTA_ASSERT(again.status == proxy_status::done);
  RINGMTA_ASSERT(again.header_bytes == result.header_bytes);
  return 0;
}
