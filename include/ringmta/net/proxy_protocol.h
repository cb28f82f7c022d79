// PROXY protocol v1 (text) and v2 (binary) header parser, as sent by HAProxy and other load
// balancers in front of ringmta (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt).
//
// Pure: bytes in, a verdict out; no syscalls; the parser does not allocate. The connection feeds whatever it
// has received; the parser never consumes a byte past the header, so SMTP bytes that arrive in
// the same segment are left for the SMTP session. It never trusts a length it has not bounded:
// v1 headers are at most 107 bytes, v2 headers at most 16 + 65535 (we cap TLVs at 1 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringmta/core/endpoint.h"

namespace ringmta::net {

enum class proxy_status : std::uint8_t {
  need_more,  // header incomplete: feed again with more bytes (the same prefix plus more)
  done,       // header parsed: `header_bytes` of the input belong to it
  invalid,    // not a PROXY header, or malformed: close the connection
};

struct proxy_result {
  proxy_status status = proxy_status::need_more;
  std::size_t header_bytes = 0;
  // True for "PROXY TCP4/TCP6" and v2 PROXY with an inet family: source/destination are the
  // real client and the address it connected to. False for v1 UNKNOWN, v2 LOCAL (health
  // checks from the balancer itself) and v2 UNSPEC: keep the socket's own addresses.
  bool has_addresses = false;
  core::endpoint source;
  core::endpoint destination;
  const char* problem = "";  // for the log when invalid
};

inline constexpr std::size_t proxy_v1_bytes_max = 107;
inline constexpr std::size_t proxy_v2_tlv_bytes_max = 1024;

// `received` is everything received on the connection so far (from its first byte).
proxy_result parse_proxy_header(std::string_view received) noexcept;

// Collects a header that arrives in any number of pieces (a balancer or a client may send it
// one byte per segment). The first piece is parsed in place; only a header split across
// receives is copied, and the copy is bounded by the parser (at most 16 + 216 + 1 KiB).
class proxy_header_reader {
 public:
  // One received piece. When the result is `done`, `trailing_bytes()` octets at the end of
  // `piece` came after the header (SMTP sent before our greeting).
  proxy_result feed(std::string_view piece);
  std::size_t trailing_bytes() const noexcept { return _trailing; }
  void reset() noexcept;

 private:
  std::string _pending;  // the pieces so far, while the header is incomplete
  std::size_t _trailing = 0;
};

}  // namespace ringmta::net
