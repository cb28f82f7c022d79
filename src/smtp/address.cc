// RFC 5321 §4.1.2 path grammar, RFC 6531 §3.3 UTF-8 extensions, RFC 3461 §4 xtext.
#include "ringmta/smtp/address.h"

#include <cstring>

namespace ringmta::smtp {
namespace {

bool is_alpha(unsigned char c) noexcept { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) noexcept {
  return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

// RFC 5322 atext, as used by RFC 5321 Atom.
bool is_atext(unsigned char c) noexcept {
  if (is_alpha(c) || is_digit(c)) return true;
  return c != 0 && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr;
}

// RFC 5321 qtextSMTP: %d32-33 / %d35-91 / %d93-126.
bool is_qtext(unsigned char c) noexcept {
  return c == 32 || c == 33 || (c >= 35 && c <= 91) || (c >= 93 && c <= 126);
}

bool ieq(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const unsigned char x = static_cast<unsigned char>(a[i]);
    const unsigned char y = static_cast<unsigned char>(b[i]);
    if (x == y) continue;
    if (!is_alpha(x) || (x | 0x20) != (y | 0x20)) return false;
  }
  return true;
}

// Snum = 1*3DIGIT representing 0-255.
bool is_ipv4(std::string_view text) noexcept {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    std::size_t digits = 0;
    unsigned value = 0;
    while (i < text.size() && is_digit(static_cast<unsigned char>(text[i])) && digits < 4) {
      value = value * 10 + static_cast<unsigned>(text[i] - '0');
      ++i;
      ++digits;
    }
    if (digits == 0 || digits > 3 || value > 255) return false;
    if (++parts == 4) return i == text.size();
    if (i >= text.size() || text[i] != '.') return false;
    ++i;
  }
}

// RFC 5321 §4.1.3 IPv6-addr: IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp.
bool is_ipv6(std::string_view text) noexcept {
  int groups = 0;
  bool compressed = false;
  bool v4 = false;
  std::size_t i = 0;
  if (text.substr(0, 2) == "::") {
    compressed = true;
    i = 2;
  }
  while (i < text.size()) {
    std::size_t start = i;
    while (i < text.size() && is_hex(static_cast<unsigned char>(text[i])) && i - start < 5) ++i;
    if (i < text.size() && text[i] == '.') {  // trailing IPv4
      if (!is_ipv4(text.substr(start))) return false;
      v4 = true;
      break;
    }
    const std::size_t length = i - start;
    if (length == 0 || length > 4) return false;
    ++groups;
    if (i == text.size()) break;
    if (text[i] != ':') return false;
    ++i;
    if (i < text.size() && text[i] == ':') {
      if (compressed) return false;
      compressed = true;
      ++i;
    } else if (i == text.size()) {
      return false;  // a single trailing ':'
    }
  }
  const int hex_max = v4 ? 6 : 8;
  if (!compressed) return groups == hex_max;
  return groups <= hex_max - 2;  // "::" stands for at least two groups
}

// Length of a UTF-8 sequence starting with c, or 0 when c cannot start one.
std::size_t utf8_sequence_bytes(unsigned char c) noexcept {
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return 2;
  if (c >= 0xe0 && c <= 0xef) return 3;
  if (c >= 0xf0 && c <= 0xf4) return 4;
  return 0;
}

}  // namespace

bool same_mailbox(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  const std::size_t at = a.rfind('@');  // a quoted local part may hold '@' itself
  if (at != b.rfind('@')) return false;
  const std::size_t local = at == std::string_view::npos ? a.size() : at;
  if (a.substr(0, local) != b.substr(0, local)) return false;
  for (std::size_t i = local; i < a.size(); ++i) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] + 32) : a[i];
    const char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

bool is_valid_utf8(std::string_view text) noexcept {
  std::size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const std::size_t n = utf8_sequence_bytes(c);
    if (n == 0 || i + n > text.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return false;
    }
    if (n >= 3) {
      const unsigned char d = static_cast<unsigned char>(text[i + 1]);
      if (c == 0xe0 && d < 0xa0) return false;  // overlong
      if (c == 0xed && d > 0x9f) return false;  // surrogates
      if (c == 0xf0 && d < 0x90) return false;  // overlong
      if (c == 0xf4 && d > 0x8f) return false;  // above U+10FFFF
    }
    i += n;
  }
  return true;
}

bool is_address_literal(std::string_view text) noexcept {
  if (text.size() < 3 || text.front() != '[' || text.back() != ']') return false;
  const std::string_view inner = text.substr(1, text.size() - 2);
  if (is_digit(static_cast<unsigned char>(inner[0]))) return is_ipv4(inner);
  // General-address-literal tags other than "IPv6" are not registered (RFC 5321 §4.1.3).
  if (inner.size() > 5 && ieq(inner.substr(0, 5), "IPv6:")) return is_ipv6(inner.substr(5));
  return false;
}

bool is_domain(std::string_view text, bool utf8_allowed) noexcept {
  if (text.empty() || text.size() > domain_bytes_max) return false;
  if (text.front() == '[') return is_address_literal(text);
  std::size_t label = 0;
  unsigned char previous = '.';
  bool utf8 = false;
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '.') {
      if (label == 0 || previous == '-') return false;
      label = 0;
    } else if (c == '-') {
      if (label == 0) return false;  // Let-dig first
      ++label;
    } else if (is_alpha(c) || is_digit(c) || (c >= 0x80 && utf8_allowed)) {
      utf8 = utf8 || c >= 0x80;
      ++label;
    } else {
      return false;
    }
    if (label > 63) return false;  // RFC 1035 §2.3.4
    previous = c;
  }
  if (label == 0 || previous == '-') return false;
  return !utf8 || is_valid_utf8(text);
}

namespace {

struct cursor {
  std::string_view text;
  std::size_t at = 0;
  bool utf8_allowed = false;
  bool utf8_seen = false;
  bool utf8_refused = false;

  bool done() const noexcept { return at >= text.size(); }
  unsigned char peek() const noexcept {
    return done() ? 0 : static_cast<unsigned char>(text[at]);
  }
  // Accepts an octet above 127 where RFC 6531 allows UTF8-non-ascii.
  bool take_utf8() noexcept {
    if (peek() < 0x80) return false;
    if (!utf8_allowed) {
      utf8_refused = true;
      return false;
    }
    utf8_seen = true;
    ++at;
    return true;
  }
};

// Domain up to one of the stop characters; validated by is_domain.
bool scan_domain(cursor& in, std::string_view& domain) noexcept {
  const std::size_t start = in.at;
  if (in.peek() == '[') {
    while (!in.done() && in.peek() != ']') ++in.at;
    if (in.done()) return false;
    ++in.at;
    domain = in.text.substr(start, in.at - start);
    return is_address_literal(domain);
  }
  while (!in.done()) {
    const unsigned char c = in.peek();
    if (c == '>' || c == ',' || c == ':') break;
    if (c >= 0x80) {
      if (!in.take_utf8()) return false;
      continue;
    }
    ++in.at;
  }
  domain = in.text.substr(start, in.at - start);
  return is_domain(domain, in.utf8_allowed);
}

// A-d-l = At-domain *( "," At-domain ) ":" — parsed, then ignored (RFC 5321 §4.1.1.3).
bool skip_source_route(cursor& in) noexcept {
  while (in.peek() == '@') {
    ++in.at;
    std::string_view ignored;
    if (!scan_domain(in, ignored)) return false;
    if (in.peek() == ',') {
      ++in.at;
      if (in.peek() != '@') return false;
      continue;
    }
    if (in.peek() != ':') return false;
    ++in.at;
    return true;
  }
  return false;
}

bool scan_local_part(cursor& in) noexcept {
  if (in.peek() == '"') {  // Quoted-string
    ++in.at;
    while (!in.done()) {
      const unsigned char c = in.peek();
      if (c == '"') {
        ++in.at;
        return true;
      }
      if (c == '\\') {  // quoted-pairSMTP = %d92 %d32-126
        ++in.at;
        const unsigned char q = in.peek();
        if (q < 32 || q > 126) return false;
        ++in.at;
      } else if (is_qtext(c)) {
        ++in.at;
      } else if (!in.take_utf8()) {
        return false;
      }
    }
    return false;
  }
  bool atom_empty = true;  // Dot-string = Atom *("." Atom)
  while (!in.done()) {
    const unsigned char c = in.peek();
    if (c == '.') {
      if (atom_empty) return false;
      atom_empty = true;
      ++in.at;
    } else if (is_atext(c)) {
      atom_empty = false;
      ++in.at;
    } else if (c >= 0x80) {
      if (!in.take_utf8()) return false;
      atom_empty = false;
    } else {
      break;
    }
  }
  return !atom_empty;
}

path_result fail(path_error error, const cursor& in) noexcept {
  path_result r;
  r.error = in.utf8_refused ? path_error::utf8_not_allowed : error;
  return r;
}

}  // namespace

path_result parse_path(std::string_view text, path_kind kind, bool utf8_allowed) noexcept {
  cursor in{text, 0, utf8_allowed};
  if (in.peek() != '<') return fail(path_error::syntax, in);
  ++in.at;
  path_result result;
  if (in.peek() == '>' && kind == path_kind::reverse) {  // RFC 5321 §4.5.5 null reverse-path
    result.box.is_null = true;
    result.consumed = 2;
    return result;
  }
  if (in.peek() == '@' && !skip_source_route(in)) return fail(path_error::syntax, in);
  const std::size_t mailbox_start = in.at;
  if (!scan_local_part(in)) return fail(path_error::syntax, in);
  const std::string_view local = text.substr(mailbox_start, in.at - mailbox_start);
  mailbox& box = result.box;
  box.local_part = local;
  if (in.peek() == '>' && kind == path_kind::forward && ieq(local, "postmaster")) {
    box.is_postmaster = true;  // RFC 5321 §4.1.1.3: <Postmaster> without domain
  } else {
    if (in.peek() != '@') return fail(path_error::syntax, in);
    ++in.at;
    if (!scan_domain(in, box.domain)) {
      if (box.domain.size() > domain_bytes_max) return fail(path_error::domain_too_long, in);
      return fail(path_error::syntax, in);
    }
    box.is_address_literal = box.domain.front() == '[';
  }
  if (in.peek() != '>') return fail(path_error::syntax, in);
  box.address = text.substr(mailbox_start, in.at - mailbox_start);
  ++in.at;
  box.is_utf8 = in.utf8_seen;
  if (box.is_utf8 && !is_valid_utf8(box.address)) return fail(path_error::syntax, in);
  if (local.size() > local_part_bytes_max) return fail(path_error::local_part_too_long, in);
  if (in.at > path_bytes_max) return fail(path_error::path_too_long, in);
  result.consumed = in.at;
  return result;
}

std::string_view describe(path_error error) noexcept {
  switch (error) {
    case path_error::none: return "Ok";
    case path_error::syntax: return "Bad address syntax";
    case path_error::local_part_too_long: return "Local part longer than 64 octets";
    case path_error::domain_too_long: return "Domain longer than 255 octets";
    case path_error::path_too_long: return "Path longer than 256 octets";
    case path_error::utf8_not_allowed: return "Non-ASCII address needs SMTPUTF8";
  }
  return "Bad address";
}

std::ptrdiff_t decode_xtext(std::string_view text, std::span<char> out) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '+') {
      if (i + 2 >= text.size()) return -1;
      const unsigned char h = static_cast<unsigned char>(text[i + 1]);
      const unsigned char l = static_cast<unsigned char>(text[i + 2]);
      if (!is_hex(h) || !is_hex(l)) return -1;
      auto value = [](unsigned char x) {
        return is_digit(x) ? x - '0' : (x | 0x20) - 'a' + 10;
      };
      c = static_cast<unsigned char>(value(h) * 16 + value(l));
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return -1;
    }
    if (n >= out.size()) return -1;
    out[n++] = static_cast<char>(c);
  }
  return static_cast<std::ptrdiff_t>(n);
}

}  // namespace ringmta::smtp
