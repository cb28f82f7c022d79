// XCLIENT attributes (Postfix XCLIENT_README): name=xtext pairs, each value checked for its
// attribute. See smtp/xclient.h.
#include "ringmta/smtp/xclient.h"

#include <arpa/inet.h>  // inet_pton: a pure conversion, no syscall

#include <array>

#include "ringmta/smtp/address.h"
#include "server_internal.h"

namespace ringmta::smtp {
namespace {

using detail::iequals_upper;

constexpr std::size_t login_bytes_max = 255;

// NAME, HELO, LOGIN: printable and no space (a log field and Received: take them); UTF-8 is
// allowed (an internationalized HELO or login), control characters never.
bool is_token(std::string_view text, std::size_t bytes_max) noexcept {
  if (text.empty() || text.size() > bytes_max || !is_valid_utf8(text)) return false;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 32 || c == 127) return false;
  }
  return true;
}

bool is_port(std::string_view text) noexcept {
  if (text.empty() || text.size() > 5) return false;
  std::uint32_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  return value <= 65535;
}

// ADDR and DESTADDR: dotted IPv4, or "IPV6:" and an IPv6 address (the prefix case-insensitive).
bool take_address(xclient_value& value, bool& v6) noexcept {
  std::string_view text = value.text;
  v6 = text.size() > 5 && detail::starts_with_upper(text, "IPV6:");
  if (v6) text.remove_prefix(5);
  if (text.empty() || text.size() >= 64) return false;
  std::array<char, 64> terminated{};
  for (std::size_t i = 0; i < text.size(); ++i) terminated[i] = text[i];
  std::array<unsigned char, 16> binary;
  if (inet_pton(v6 ? AF_INET6 : AF_INET, terminated.data(), binary.data()) != 1) return false;
  value.text = text;
  return true;
}

// Checks one decoded value for its attribute; false: 501.
bool check(std::string_view name, xclient_value& value, xclient_attributes& out) noexcept {
  if (value.state != xclient_state::value) return true;
  if (iequals_upper(name, "NAME")) return is_token(value.text, domain_bytes_max);
  if (iequals_upper(name, "HELO")) return is_token(value.text, domain_bytes_max);
  if (iequals_upper(name, "LOGIN")) return is_token(value.text, login_bytes_max);
  if (iequals_upper(name, "PORT") || iequals_upper(name, "DESTPORT")) return is_port(value.text);
  if (iequals_upper(name, "PROTO")) {
    if (iequals_upper(value.text, "SMTP")) value.text = "SMTP";
    else if (iequals_upper(value.text, "ESMTP")) value.text = "ESMTP";
    else return false;
    return true;
  }
  bool v6 = false;
  if (!take_address(value, v6)) return false;
  if (iequals_upper(name, "ADDR")) out.address_v6 = v6;
  return true;
}

xclient_value* slot_of(std::string_view name, xclient_attributes& out) noexcept {
  if (iequals_upper(name, "NAME")) return &out.name;
  if (iequals_upper(name, "ADDR")) return &out.address;
  if (iequals_upper(name, "PORT")) return &out.port;
  if (iequals_upper(name, "PROTO")) return &out.protocol;
  if (iequals_upper(name, "HELO")) return &out.helo;
  if (iequals_upper(name, "LOGIN")) return &out.login;
  if (iequals_upper(name, "DESTADDR")) return &out.destination_address;
  if (iequals_upper(name, "DESTPORT")) return &out.destination_port;
  return nullptr;
}

}  // namespace

xclient_result parse_xclient(std::string_view argument, xclient_attributes& out,
                             std::span<char> storage) noexcept {
  out = xclient_attributes{};
  std::size_t used = 0;
  bool any = false;
  while (!argument.empty()) {
    if (argument.front() != ' ') return {xclient_error::syntax, {}};
    argument.remove_prefix(1);
    if (argument.empty()) break;  // trailing spaces were trimmed; keep it tolerant anyway
    const std::size_t end = argument.find(' ');
    const std::string_view pair = argument.substr(0, end);
    argument = end == std::string_view::npos ? std::string_view() : argument.substr(end);
    const std::size_t eq = pair.find('=');
    if (eq == 0 || eq == std::string_view::npos) return {xclient_error::syntax, pair};
    const std::string_view name = pair.substr(0, eq);
    const std::string_view raw = pair.substr(eq + 1);
    xclient_value* value = slot_of(name, out);
    if (value == nullptr) return {xclient_error::unknown_name, name};
    const std::ptrdiff_t n = decode_xtext(raw, storage.subspan(used));
    if (n < 0) {
      return {used + raw.size() > storage.size() ? xclient_error::too_long : xclient_error::syntax,
              name};
    }
    const std::string_view decoded(storage.data() + used, static_cast<std::size_t>(n));
    used += static_cast<std::size_t>(n);
    if (decoded == "[UNAVAILABLE]" || decoded == "[TEMPUNAVAIL]") {
      *value = {xclient_state::unavailable, {}};
    } else {
      *value = {xclient_state::value, decoded};
      if (!check(name, *value, out)) return {xclient_error::bad_value, name};
    }
    any = true;
  }
  if (!any) return {xclient_error::empty, {}};
  return {};
}

std::string_view describe(xclient_error error) noexcept {
  switch (error) {
    case xclient_error::none: return "Ok";
    case xclient_error::empty: return "Syntax: XCLIENT attribute=value ...";
    case xclient_error::syntax: return "Bad XCLIENT attribute syntax: ";
    case xclient_error::unknown_name: return "Bad XCLIENT attribute name: ";
    case xclient_error::bad_value: return "Bad XCLIENT attribute value: ";
    case xclient_error::too_long: return "XCLIENT attribute value too long: ";
  }
  return "Bad XCLIENT command";
}

}  // namespace ringmta::smtp
