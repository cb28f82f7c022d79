// Network endpoints ("127.0.0.1:25", "[::1]:2525") and address ranges ("10.0.0.0/8").
//
// Parsing is strict and never resolves names: configuration and command-line flags name
// addresses, not hosts, so start-up never blocks on DNS. Used by config, listeners, tools.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringmta::core {

struct endpoint {
  sockaddr_storage address{};
  socklen_t length = 0;

  int family() const noexcept { return address.ss_family; }
  std::uint16_t port() const noexcept;
  const sockaddr* sockaddr_pointer() const noexcept {
    return reinterpret_cast<const sockaddr*>(&address);
  }
  // "127.0.0.1:25" or "[::1]:25".
  std::string to_string() const;
  // The same text written into out[size] (64 bytes are always enough), without allocating.
  std::string_view to_chars(char* out, std::size_t size) const noexcept;
  // The address alone: "127.0.0.1" or "::1" (an IPv4-mapped IPv6 address prints as IPv4).
  std::string address_string() const;

  // Accepts "A.B.C.D:PORT", "[IPV6]:PORT"; with default_port, also a bare address.
  static std::optional<endpoint> parse(std::string_view text,
                                       std::optional<std::uint16_t> default_port = {});
  static endpoint from_sockaddr(const sockaddr* address, socklen_t length) noexcept;
  // Same family, address and port (nothing else of the socket address counts).
  bool operator==(const endpoint& other) const noexcept;
  // The wildcard address (0.0.0.0 or ::): a listener on it takes every local address.
  bool is_any_address() const noexcept;
};

// The endpoints behind `listening`: a wildcard (0.0.0.0:P, [::]:P) becomes every local
// interface address with port P (IPv4 ones too for [::], which takes both); others as given.
std::vector<endpoint> expand_wildcards(const std::vector<endpoint>& listening);

// An address range: "192.0.2.0/24", "2001:db8::/32", or a single address (full-length prefix).
// IPv4 ranges also match IPv4-mapped IPv6 peers (::ffff:a.b.c.d), as dual-stack sockets give.
struct cidr {
  int family = AF_UNSPEC;
  std::uint8_t bytes[16]{};
  unsigned prefix_bits = 0;

  bool contains(const sockaddr* address) const noexcept;
  std::string to_string() const;
  static std::optional<cidr> parse(std::string_view text);
};

}  // namespace ringmta::core
