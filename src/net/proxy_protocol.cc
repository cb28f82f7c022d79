#include "ringmta/net/proxy_protocol.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace ringmta::net {
namespace {

constexpr std::string_view v1_signature = "PROXY ";
constexpr char v2_signature_bytes[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                         '\n', 'Q',  'U',  'I',  'T',  '\n'};
constexpr std::string_view v2_signature(v2_signature_bytes, sizeof v2_signature_bytes);
constexpr std::size_t v2_fixed_bytes = 16;

proxy_result invalid(const char* problem) noexcept {
  proxy_result result;
  result.status = proxy_status::invalid;
  result.problem = problem;
  return result;
}

// True when `received` is a prefix of `signature` or starts with it.
bool matches_signature(std::string_view received, std::string_view signature) noexcept {
  const std::size_t n = received.size() < signature.size() ? received.size() : signature.size();
  return std::memcmp(received.data(), signature.data(), n) == 0;
}

bool parse_v1_port(std::string_view text, std::uint16_t& port) noexcept {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  // The spec forbids leading zeros ("0" itself is fine) and values above 65535.
  if (text.empty() || error != std::errc() || end != text.data() + text.size() ||
      value > 65535 || (text.size() > 1 && text[0] == '0'))
    return false;
  port = static_cast<std::uint16_t>(value);
  return true;
}

bool parse_v1_endpoint(std::string_view address, std::string_view port_text, bool v6,
                       core::endpoint& out) noexcept {
  std::uint16_t port = 0;
  if (!parse_v1_port(port_text, port) || address.empty() || address.size() > 45) return false;
  if (!v6 && address.find(':') != std::string_view::npos) return false;
  char text[48];
  std::size_t length = 0;
  if (v6) text[length++] = '[';
  std::memcpy(text + length, address.data(), address.size());
  length += address.size();
  if (v6) text[length++] = ']';
  auto parsed = core::endpoint::parse(std::string_view(text, length), port);
  if (!parsed || (parsed->family() == AF_INET6) != v6) return false;
  out = *parsed;
  return true;
}

// Splits "a b c" on single spaces into at most `max` fields; false on empty fields.
std::size_t split_fields(std::string_view line, std::string_view* fields,
                         std::size_t max) noexcept {
  std::size_t count = 0;
  while (count < max) {
    const auto space = line.find(' ');
    fields[count++] = line.substr(0, space);
    if (fields[count - 1].empty()) return 0;
    if (space == std::string_view::npos) return count;
    line.remove_prefix(space + 1);
  }
  return 0;  // more fields than allowed
}

proxy_result parse_v1(std::string_view received) noexcept {
  const auto window = received.substr(0, proxy_v1_bytes_max);
  const auto newline = window.find('\n');
  if (newline == std::string_view::npos) {
    if (received.size() >= proxy_v1_bytes_max) return invalid("PROXY v1 line longer than 107");
    return {};
  }
  if (window[newline - 1] != '\r') return invalid("PROXY v1 line ends in a bare LF");
  const std::size_t end = newline - 1;
  const std::string_view line = window.substr(v1_signature.size(), end - v1_signature.size());
  proxy_result result;
  result.status = proxy_status::done;
  result.header_bytes = end + 2;
  if (line.substr(0, 7) == "UNKNOWN") return result;  // the balancer's own connection
  std::string_view fields[5];
  if (split_fields(line, fields, 5) != 5) return invalid("PROXY v1 needs 5 fields");
  bool v6 = false;
  if (fields[0] == "TCP6") v6 = true;
  else if (fields[0] != "TCP4") return invalid("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN");
  if (!parse_v1_endpoint(fields[1], fields[3], v6, result.source) ||
      !parse_v1_endpoint(fields[2], fields[4], v6, result.destination))
    return invalid("PROXY v1 address or port malformed");
  result.has_addresses = true;
  return result;
}

core::endpoint endpoint_v4(const unsigned char* address, const unsigned char* port) noexcept {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  std::memcpy(&v4.sin_addr, address, 4);
  std::memcpy(&v4.sin_port, port, 2);  // both in network order on the wire and in sockaddr
  return core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&v4), sizeof v4);
}

core::endpoint endpoint_v6(const unsigned char* address, const unsigned char* port) noexcept {
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  std::memcpy(&v6.sin6_addr, address, 16);
  std::memcpy(&v6.sin6_port, port, 2);
  return core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&v6), sizeof v6);
}

proxy_result parse_v2(std::string_view received) noexcept {
  if (received.size() < v2_fixed_bytes) return {};
  const auto* bytes = reinterpret_cast<const unsigned char*>(received.data());
  const unsigned version = bytes[12] >> 4, command = bytes[12] & 0x0f;
  const unsigned family = bytes[13];
  const std::size_t length = (std::size_t{bytes[14]} << 8) | bytes[15];
  if (version != 2) return invalid("PROXY v2 version is not 2");
  if (command > 1) return invalid("PROXY v2 command is neither LOCAL nor PROXY");
  // Addresses (12 or 36 bytes) plus TLVs we do not use (ALPN, authority, SSL info): bounded.
  if (length > 216 + proxy_v2_tlv_bytes_max) return invalid("PROXY v2 header too long");
  if (received.size() < v2_fixed_bytes + length) return {};
  proxy_result result;
  result.status = proxy_status::done;
  result.header_bytes = v2_fixed_bytes + length;
  if (command == 0) return result;  // LOCAL: health check from the balancer itself
  const unsigned char* body = bytes + v2_fixed_bytes;
  switch (family) {
    case 0x11:  // TCP over IPv4
    case 0x12:  // UDP over IPv4 (addresses are still meaningful)
      if (length < 12) return invalid("PROXY v2 IPv4 block too short");
      result.source = endpoint_v4(body, body + 8);
      result.destination = endpoint_v4(body + 4, body + 10);
      result.has_addresses = true;
      return result;
    case 0x21:  // TCP over IPv6
    case 0x22:
      if (length < 36) return invalid("PROXY v2 IPv6 block too short");
      result.source = endpoint_v6(body, body + 32);
      result.destination = endpoint_v6(body + 16, body + 34);
      result.has_addresses = true;
      return result;
    case 0x00:  // UNSPEC: keep the socket's addresses
    case 0x31:  // UNIX sockets: no IP to report
    case 0x32:
      return result;
    default:
      return invalid("PROXY v2 address family unknown");
  }
}

}  // namespace

proxy_result parse_proxy_header(std::string_view received) noexcept {
  if (received.empty()) return {};
  if (received[0] == 'P') {
    if (!matches_signature(received, v1_signature)) return invalid("not a PROXY header");
    if (received.size() < v1_signature.size()) return {};
    return parse_v1(received);
  }
  if (!matches_signature(received, v2_signature)) return invalid("not a PROXY header");
  return parse_v2(received);
}

proxy_result proxy_header_reader::feed(std::string_view piece) {
  std::string_view received = piece;
  if (!_pending.empty()) {
    _pending.append(piece);
    received = _pending;
  }
  auto result = parse_proxy_header(received);
  if (result.status == proxy_status::need_more) {
    if (_pending.empty()) _pending.assign(piece);
    return result;
  }
  if (result.status == proxy_status::done) _trailing = received.size() - result.header_bytes;
  _pending.clear();
  return result;
}

void proxy_header_reader::reset() noexcept {
  _pending.clear();
  _trailing = 0;
}

}  // namespace ringmta::net
