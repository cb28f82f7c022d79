// Fuzz target: the PROXY protocol parser and the reader that collects a header in pieces.
// Invariants: the parser never reads past its input, a header it accepts is never longer than
// the input or the protocol's bounds, every prefix of an accepted header asks for more bytes,
// and feeding the same bytes to proxy_header_reader in any split (the first input byte picks
// the piece sizes; one byte per piece is always tried) gives the verdict of a single read.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ringmta/core/assert.h"
#include "ringmta/net/proxy_protocol.h"

using ringmta::net::parse_proxy_header;
using ringmta::net::proxy_header_reader;
using ringmta::net::proxy_result;
using ringmta::net::proxy_status;

namespace {

// Feeds `input` in pieces whose sizes cycle through 1..`stride`; returns the first verdict
// that is not need_more, and how many input bytes had been fed when it came.
proxy_result feed_in_pieces(std::string_view input, std::size_t stride, std::size_t& fed,
                            std::size_t& trailing) {
  proxy_header_reader reader;
  proxy_result result;
  fed = 0;
  for (std::size_t piece = 1; fed < input.size(); piece = piece % stride + 1) {
    const auto bytes = input.substr(fed, piece);
    fed += bytes.size();
    result = reader.feed(bytes);
    if (result.status != proxy_status::need_more) break;
  }
  trailing = reader.trailing_bytes();
  return result;
}

void check_splits(std::string_view input, std::size_t stride) {
  const auto whole = parse_proxy_header(input);
  std::size_t fed = 0, trailing = 0;
  const auto split = feed_in_pieces(input, stride, fed, trailing);
  if (whole.status == proxy_status::done) {
    RINGMTA_ASSERT(split.status == proxy_status::done);
    RINGMTA_ASSERT(split.header_bytes == whole.header_bytes);
    RINGMTA_ASSERT(fed - trailing == whole.header_bytes);  // trailing = bytes past the header
    RINGMTA_ASSERT(split.has_addresses == whole.has_addresses);
    if (whole.has_addresses) RINGMTA_ASSERT(split.source == whole.source);
  } else if (whole.status == proxy_status::need_more) {
    RINGMTA_ASSERT(split.status == proxy_status::need_more);
  } else {
    RINGMTA_ASSERT(split.status == proxy_status::invalid);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (size > 0) {
    check_splits(input.substr(1), 1);
    check_splits(input.substr(1), 1 + data[0] % 32);
  }
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
