#include "ringmta/dns/types.h"

#include <arpa/inet.h>
#include <cerrno>
#include <charconv>

namespace ringmta::dns {

ip_address ip_address::v4(std::uint8_t a, std::uint8_t b, std::uint8_t c,
                          std::uint8_t d) noexcept {
  ip_address ip;
  ip.family = 4;
  ip.bytes[0] = a;
  ip.bytes[1] = b;
  ip.bytes[2] = c;
  ip.bytes[3] = d;
  return ip;
}

core::result<ip_address> ip_address::parse(std::string_view text) noexcept {
  // inet_pton is pure (no syscall); it needs a terminated string.
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof buffer) return core::fail(EINVAL);
  text.copy(buffer, text.size());
  buffer[text.size()] = '\0';
  ip_address ip;
  if (inet_pton(AF_INET, buffer, ip.bytes.data()) == 1) {
    ip.family = 4;
    return ip;
  }
  if (inet_pton(AF_INET6, buffer, ip.bytes.data()) == 1) {
    ip.family = 6;
    return ip;
  }
  return core::fail(EINVAL);
}

std::string ip_address::to_string() const {
  char buffer[INET6_ADDRSTRLEN] = "";
  if (family == 4) inet_ntop(AF_INET, bytes.data(), buffer, sizeof buffer);
  if (family == 6) inet_ntop(AF_INET6, bytes.data(), buffer, sizeof buffer);
  return buffer;
}

namespace {

core::result<std::uint16_t> parse_port(std::string_view text) noexcept {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535)
    return core::fail(EINVAL);
  return static_cast<std::uint16_t>(value);
}

}  // namespace

core::result<server_address> server_address::parse(std::string_view text) noexcept {
  server_address server;
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {  // "[::1]:5353" or "[::1]"
    const auto close = text.find(']');
    if (close == std::string_view::npos) return core::fail(EINVAL);
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return core::fail(EINVAL);
      port = rest.substr(1);
      if (port.empty()) return core::fail(EINVAL);
    }
  } else if (text.find(':') == text.rfind(':') && text.find(':') != std::string_view::npos) {
    host = text.substr(0, text.find(':'));  // exactly one colon: IPv4 with a port
    port = text.substr(text.find(':') + 1);
    if (port.empty()) return core::fail(EINVAL);
  }
  auto ip = ip_address::parse(host);
  if (!ip) return core::fail(EINVAL);
  server.ip = ip.value();
  if (!port.empty()) {
    auto number = parse_port(port);
    if (!number) return core::fail(EINVAL);
    server.port = number.value();
  }
  return server;
}

std::string server_address::to_string() const {
  if (ip.family == 6) return "[" + ip.to_string() + "]:" + std::to_string(port);
  return ip.to_string() + ":" + std::to_string(port);
}

const char* record_type_name(record_type type) noexcept {
  switch (type) {
    case record_type::a: return "A";
    case record_type::cname: return "CNAME";
    case record_type::mx: return "MX";
    case record_type::txt: return "TXT";
    case record_type::aaaa: return "AAAA";
  }
  return "?";
}

const char* answer_status_name(answer_status status) noexcept {
  switch (status) {
    case answer_status::ok: return "ok";
    case answer_status::nodata: return "no data";
    case answer_status::nxdomain: return "no such domain";
    case answer_status::server_failure: return "server failure";
    case answer_status::timeout: return "timeout";
  }
  return "?";
}

const char* failure_enhanced_code(failure_kind kind) noexcept {
  switch (kind) {
    case failure_kind::none: return "2.0.0";
    case failure_kind::bad_domain: return "5.1.3";
    case failure_kind::no_such_domain: return "5.1.2";
    case failure_kind::null_mx: return "5.1.10";
    case failure_kind::no_mail_route: return "5.4.4";
    case failure_kind::server_failure: return "4.4.3";
    case failure_kind::timeout: return "4.4.3";
    case failure_kind::overloaded: return "4.3.0";
  }
  return "4.0.0";
}

}  // namespace ringmta::dns
