// ESMTP parameter parsing: RFC 5321 §4.1.2 esmtp-param, RFC 1870, RFC 6152, RFC 3030,
// RFC 6531, RFC 3461, RFC 4954.
#include "ringmta/smtp/parameters.h"

#include "ringmta/smtp/address.h"

namespace ringmta::smtp {
namespace {

bool ieq(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const char x = a[i] >= 'a' && a[i] <= 'z' ? static_cast<char>(a[i] - 32) : a[i];
    if (x != b[i]) return false;  // b is upper case
  }
  return true;
}

bool is_alnum(unsigned char c) noexcept {
  return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
bool is_keyword(std::string_view k) noexcept {
  if (k.empty() || !is_alnum(static_cast<unsigned char>(k[0]))) return false;
  for (const char c : k) {
    if (!is_alnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

// esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531 §3.3).
bool is_value(std::string_view v) noexcept {
  if (v.empty()) return false;
  for (const char ch : v) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '=' || (c < 33) || c == 127) return false;
  }
  return true;
}

bool parse_decimal(std::string_view v, std::uint64_t& out) noexcept {
  if (v.empty() || v.size() > 20) return false;
  std::uint64_t n = 0;
  for (const char c : v) {
    if (c < '0' || c > '9') return false;
    const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
    if (n > (UINT64_MAX - digit) / 10) return false;
    n = n * 10 + digit;
  }
  out = n;
  return true;
}

// Splits "k=v k2" into parameters; calls apply(keyword, value, has_value) for each.
template <typename Apply>
parameter_result for_each_parameter(std::string_view text, Apply&& apply) noexcept {
  std::size_t i = 0;
  while (true) {
    while (i < text.size() && text[i] == ' ') ++i;
    if (i >= text.size()) return {};
    std::size_t end = text.find(' ', i);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view param = text.substr(i, end - i);
    const std::size_t eq = param.find('=');
    const std::string_view keyword = param.substr(0, eq);
    if (!is_keyword(keyword)) return {parameter_error::syntax, keyword};
    std::string_view value;
    if (eq != std::string_view::npos) {
      value = param.substr(eq + 1);
      if (!is_value(value)) return {parameter_error::syntax, keyword};
    }
    const parameter_error error = apply(keyword, value, eq != std::string_view::npos);
    if (error != parameter_error::none) return {error, keyword};
    i = end;
  }
}

// RFC 3461 §4.4: ENVID is xtext, at most 100 printable US-ASCII characters.
parameter_error decode_envid(std::string_view value, std::span<char> scratch,
                             std::string_view& out) noexcept {
  const std::size_t room = scratch.size() < envid_bytes_max ? scratch.size() : envid_bytes_max;
  const std::ptrdiff_t n = decode_xtext(value, scratch.first(room));
  if (n <= 0) return parameter_error::value;
  for (std::ptrdiff_t k = 0; k < n; ++k) {
    if (scratch[static_cast<std::size_t>(k)] < 32 || scratch[static_cast<std::size_t>(k)] > 126)
      return parameter_error::value;
  }
  out = std::string_view(scratch.data(), static_cast<std::size_t>(n));
  return parameter_error::none;
}

parameter_error apply_mail(std::string_view k, std::string_view v, bool has_value,
                           const extension_set& ext, bool auth_offered, mail_parameters& out,
                           std::span<char> scratch, std::uint32_t& seen) noexcept {
  auto once = [&seen](std::uint32_t bit) {
    const bool first = (seen & bit) == 0;
    seen |= bit;
    return first;
  };
  if (ieq(k, "SIZE") && ext.size) {
    if (!once(1)) return parameter_error::duplicate;
    if (!has_value || !parse_decimal(v, out.size)) return parameter_error::value;
    out.has_size = true;
  } else if (ieq(k, "BODY") && (ext.eight_bit_mime || (ext.binary_mime && ext.chunking))) {
    if (!once(2)) return parameter_error::duplicate;
    if (ieq(v, "7BIT")) out.body = body_type::seven_bit;
    else if (ieq(v, "8BITMIME") && ext.eight_bit_mime) out.body = body_type::eight_bit_mime;
    else if (ieq(v, "BINARYMIME") && ext.binary_mime && ext.chunking)
      out.body = body_type::binary_mime;
    else return parameter_error::value;
  } else if (ieq(k, "SMTPUTF8") && ext.smtputf8) {
    if (!once(4)) return parameter_error::duplicate;
    if (has_value) return parameter_error::value;  // RFC 6531 §3.4: no value
    out.smtputf8 = true;
  } else if (ieq(k, "RET") && ext.dsn) {
    if (!once(8)) return parameter_error::duplicate;
    if (ieq(v, "FULL")) out.ret = dsn_return::full;
    else if (ieq(v, "HDRS")) out.ret = dsn_return::headers;
    else return parameter_error::value;
  } else if (ieq(k, "ENVID") && ext.dsn) {
    if (!once(16)) return parameter_error::duplicate;
    return decode_envid(v, scratch, out.envid);
  } else if (ieq(k, "AUTH") && auth_offered) {
    if (!once(32)) return parameter_error::duplicate;
    if (!has_value) return parameter_error::value;
    out.auth = v;
  } else {
    return parameter_error::unknown;
  }
  return parameter_error::none;
}

parameter_error parse_notify(std::string_view v, std::uint8_t& notify) noexcept {
  if (ieq(v, "NEVER")) {
    notify = notify_never;
    return parameter_error::none;
  }
  std::uint8_t bits = 0;
  std::size_t i = 0;
  while (i <= v.size()) {
    std::size_t end = v.find(',', i);
    if (end == std::string_view::npos) end = v.size();
    const std::string_view item = v.substr(i, end - i);
    std::uint8_t bit = 0;
    if (ieq(item, "SUCCESS")) bit = notify_success;
    else if (ieq(item, "FAILURE")) bit = notify_failure;
    else if (ieq(item, "DELAY")) bit = notify_delay;
    if (bit == 0 || (bits & bit) != 0) return parameter_error::value;
    bits = static_cast<std::uint8_t>(bits | bit);
    i = end + 1;
  }
  notify = bits;
  return parameter_error::none;
}

// RFC 3461 §4.2: ORCPT=addr-type ";" xtext, at most 500 characters.
parameter_error parse_orcpt(std::string_view v, std::span<char> scratch,
                            rcpt_parameters& out) noexcept {
  if (v.size() > orcpt_bytes_max) return parameter_error::value;
  const std::size_t semicolon = v.find(';');
  if (semicolon == std::string_view::npos || semicolon == 0) return parameter_error::value;
  const std::string_view type = v.substr(0, semicolon);
  if (!is_keyword(type)) return parameter_error::value;
  const std::string_view address = v.substr(semicolon + 1);
  if (address.empty()) return parameter_error::value;
  out.orcpt_type = type;
  if (ieq(type, "UTF-8")) {  // RFC 6533 utf-8-addr-xtext: kept as sent, must be UTF-8
    if (!is_valid_utf8(address)) return parameter_error::value;
    out.orcpt = address;
    return parameter_error::none;
  }
  const std::ptrdiff_t n = decode_xtext(address, scratch);
  if (n <= 0) return parameter_error::value;
  out.orcpt = std::string_view(scratch.data(), static_cast<std::size_t>(n));
  return parameter_error::none;
}

}  // namespace

parameter_result parse_mail_parameters(std::string_view text, const extension_set& extensions,
                                       bool auth_offered, mail_parameters& out,
                                       std::span<char> scratch) noexcept {
  out = mail_parameters{};
  std::uint32_t seen = 0;
  return for_each_parameter(text, [&](std::string_view k, std::string_view v, bool has_value) {
    return apply_mail(k, v, has_value, extensions, auth_offered, out, scratch, seen);
  });
}

parameter_result parse_rcpt_parameters(std::string_view text, const extension_set& extensions,
                                       rcpt_parameters& out, std::span<char> scratch) noexcept {
  out = rcpt_parameters{};
  bool notify_seen = false;
  bool orcpt_seen = false;
  return for_each_parameter(text, [&](std::string_view k, std::string_view v, bool has_value) {
    if (ieq(k, "NOTIFY") && extensions.dsn) {
      if (notify_seen) return parameter_error::duplicate;
      notify_seen = true;
      return has_value ? parse_notify(v, out.notify) : parameter_error::value;
    }
    if (ieq(k, "ORCPT") && extensions.dsn) {
      if (orcpt_seen) return parameter_error::duplicate;
      orcpt_seen = true;
      return has_value ? parse_orcpt(v, scratch, out) : parameter_error::value;
    }
    return parameter_error::unknown;
  });
}

std::string_view to_string(body_type type) noexcept {
  switch (type) {
    case body_type::unspecified: return "";
    case body_type::seven_bit: return "7BIT";
    case body_type::eight_bit_mime: return "8BITMIME";
    case body_type::binary_mime: return "BINARYMIME";
  }
  return "";
}

}  // namespace ringmta::smtp
