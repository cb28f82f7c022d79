#include "ringmta/core/endpoint.h"

#include <arpa/inet.h>
#include <ifaddrs.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace ringmta::core {
namespace {

std::optional<std::uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty() || value > 65535)
    return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

// inet_pton needs a NUL-terminated string; addresses are short, so a stack copy does.
bool parse_address(std::string_view text, int family, void* out) {
  char copy[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof copy) return false;
  std::memcpy(copy, text.data(), text.size());
  copy[text.size()] = '\0';
  return inet_pton(family, copy, out) == 1;
}

bool is_v4_mapped(const in6_addr& address) {
  static constexpr std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(address.s6_addr, prefix, sizeof prefix) == 0;
}

}  // namespace

std::uint16_t endpoint::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  return 0;
}

bool endpoint::operator==(const endpoint& other) const noexcept {
  if (family() != other.family() || port() != other.port()) return false;
  if (family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(address).sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in&>(other.address).sin_addr.s_addr;
  }
  if (family() == AF_INET6) {
    return std::memcmp(&reinterpret_cast<const sockaddr_in6&>(address).sin6_addr,
                       &reinterpret_cast<const sockaddr_in6&>(other.address).sin6_addr, 16) == 0;
  }
  return false;
}

bool endpoint::is_any_address() const noexcept {
  if (family() == AF_INET) {
    return reinterpret_cast<const sockaddr_in&>(address).sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (family() == AF_INET6) {
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6&>(address).sin6_addr);
  }
  return false;
}

std::vector<endpoint> expand_wildcards(const std::vector<endpoint>& listening) {
  std::vector<endpoint> out;
  ifaddrs* interfaces = nullptr;
  if (::getifaddrs(&interfaces) != 0) interfaces = nullptr;
  for (const endpoint& at : listening) {
    if (!at.is_any_address()) {
      out.push_back(at);
      continue;
    }
    for (const ifaddrs* i = interfaces; i != nullptr; i = i->ifa_next) {
      if (i->ifa_addr == nullptr) continue;
      const int family = i->ifa_addr->sa_family;
      if (family != at.family() && !(at.family() == AF_INET6 && family == AF_INET)) continue;
      endpoint local;
      if (family == AF_INET) {
        auto& v4 = reinterpret_cast<sockaddr_in&>(local.address);
        v4 = reinterpret_cast<const sockaddr_in&>(*i->ifa_addr);
        v4.sin_port = htons(at.port());
        local.length = sizeof v4;
      } else if (family == AF_INET6) {
        auto& v6 = reinterpret_cast<sockaddr_in6&>(local.address);
        v6 = reinterpret_cast<const sockaddr_in6&>(*i->ifa_addr);
        v6.sin6_port = htons(at.port());
        local.length = sizeof v6;
      } else {
        continue;
      }
      out.push_back(local);
    }
  }
  if (interfaces != nullptr) ::freeifaddrs(interfaces);
  return out;
}

std::string endpoint::address_string() const {
  char text[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(address).sin_addr, text, sizeof text);
  } else if (family() == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address).sin6_addr;
    if (is_v4_mapped(v6))
      inet_ntop(AF_INET, v6.s6_addr + 12, text, sizeof text);
    else
      inet_ntop(AF_INET6, &v6, text, sizeof text);
  }
  return text;
}

std::string_view endpoint::to_chars(char* out, std::size_t size) const noexcept {
  char text[INET6_ADDRSTRLEN] = "?";
  bool bracket = false;
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(address).sin_addr, text, sizeof text);
  } else if (family() == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address).sin6_addr;
    bracket = !is_v4_mapped(v6);
    if (bracket) inet_ntop(AF_INET6, &v6, text, sizeof text);
    else inet_ntop(AF_INET, v6.s6_addr + 12, text, sizeof text);
  }
  const auto written = bracket ? fmt::format_to_n(out, size, "[{}]:{}", text, port())
                               : fmt::format_to_n(out, size, "{}:{}", text, port());
  return {out, std::min(written.size, size)};
}

std::string endpoint::to_string() const {
  if (family() == AF_INET6 &&
      !is_v4_mapped(reinterpret_cast<const sockaddr_in6&>(address).sin6_addr))
    return fmt::format("[{}]:{}", address_string(), port());
  return fmt::format("{}:{}", address_string(), port());
}

std::optional<endpoint> endpoint::parse(std::string_view text,
                                        std::optional<std::uint16_t> default_port) {
  endpoint result;
  std::string_view host = text;
  std::optional<std::uint16_t> port = default_port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = parse_port(rest.substr(1));
    }
    auto& v6 = reinterpret_cast<sockaddr_in6&>(result.address);
    if (!port || !parse_address(host, AF_INET6, &v6.sin6_addr)) return std::nullopt;
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(*port);
    result.length = sizeof(sockaddr_in6);
    return result;
  }
  const auto colon = text.rfind(':');
  if (colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = parse_port(text.substr(colon + 1));
  }
  auto& v4 = reinterpret_cast<sockaddr_in&>(result.address);
  if (!port || !parse_address(host, AF_INET, &v4.sin_addr)) return std::nullopt;
  v4.sin_family = AF_INET;
  v4.sin_port = htons(*port);
  result.length = sizeof(sockaddr_in);
  return result;
}

endpoint endpoint::from_sockaddr(const sockaddr* address, socklen_t length) noexcept {
  endpoint result;
  if (length > sizeof result.address) length = sizeof result.address;
  std::memcpy(&result.address, address, length);
  result.length = length;
  return result;
}

std::optional<cidr> cidr::parse(std::string_view text) {
  cidr result;
  std::string_view host = text;
  std::optional<unsigned> prefix;
  if (const auto slash = text.find('/'); slash != std::string_view::npos) {
    host = text.substr(0, slash);
    const auto bits = parse_port(text.substr(slash + 1));
    if (!bits) return std::nullopt;
    prefix = *bits;
  }
  if (parse_address(host, AF_INET, result.bytes)) {
    result.family = AF_INET;
    result.prefix_bits = prefix.value_or(32);
    if (result.prefix_bits > 32) return std::nullopt;
  } else if (parse_address(host, AF_INET6, result.bytes)) {
    result.family = AF_INET6;
    result.prefix_bits = prefix.value_or(128);
    if (result.prefix_bits > 128) return std::nullopt;
  } else {
    return std::nullopt;
  }
  return result;
}

bool cidr::contains(const sockaddr* address) const noexcept {
  const std::uint8_t* candidate = nullptr;
  if (address->sa_family == AF_INET && family == AF_INET) {
    candidate = reinterpret_cast<const std::uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(address)->sin_addr);
  } else if (address->sa_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
    if (family == AF_INET6) candidate = v6.s6_addr;
    else if (family == AF_INET && is_v4_mapped(v6)) candidate = v6.s6_addr + 12;
  }
  if (candidate == nullptr) return false;
  const unsigned whole_bytes = prefix_bits / 8;
  if (std::memcmp(candidate, bytes, whole_bytes) != 0) return false;
  const unsigned rest_bits = prefix_bits % 8;
  if (rest_bits == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest_bits));
  return (candidate[whole_bytes] & mask) == (bytes[whole_bytes] & mask);
}

std::string cidr::to_string() const {
  char text[INET6_ADDRSTRLEN] = "?";
  inet_ntop(family, bytes, text, sizeof text);
  return fmt::format("{}/{}", text, prefix_bits);
}

}  // namespace ringmta::core
