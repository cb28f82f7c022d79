// Header field canonicalization (RFC 6376 §3.4.1, §3.4.2) and the From: domain.
#include <string>

#include "ringmta/dkim/canonical.h"

namespace ringmta::dkim {

namespace {

inline char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}
inline bool is_wsp(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view without_crlf(std::string_view raw) noexcept {
  if (!raw.empty() && raw.back() == '\n') raw.remove_suffix(1);
  if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
  return raw;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

void canonicalize_header(canonicalization mode, const header_field& field, std::string& out,
                         bool final_crlf) {
  const std::string_view line = without_crlf(field.raw);
  if (mode == canonicalization::simple) {  // §3.4.1: exactly as it is
    out.append(line);
    if (final_crlf) out.append("\r\n");
    return;
  }
  // §3.4.2: lowercase name, no WSP around the colon, unfolded, WSP runs as one SP, no
  // trailing WSP.
  const std::size_t name_at = out.size();
  for (const char c : field.name) {
    if (c != '\r' && c != '\n') out.push_back(lower(c));  // a folded name unfolds too
  }
  while (out.size() > name_at && is_wsp(out.back())) out.pop_back();
  out.push_back(':');
  const std::size_t colon = line.find(':');
  const std::string_view value =
      colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
  bool space = false;
  bool started = false;
  for (const char c : value) {
    if (c == '\r' || c == '\n') continue;  // unfolding: CRLF before WSP goes away
    if (is_wsp(c)) {
      space = started;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    started = true;
    out.push_back(c);
  }
  if (final_crlf) out.append("\r\n");
}

// RFC 5322 §3.4: skips comments (nested, with quoted-pairs) and quoted strings, takes the
// addr-spec inside the first angle brackets, or else the first mailbox's text up to a comma.
std::string from_domain(std::string_view field_raw) {
  const std::size_t colon = field_raw.find(':');
  if (colon == std::string_view::npos) return {};
  const std::string_view value = field_raw.substr(colon + 1);
  std::string address;
  int comment = 0;
  bool quoted = false;
  bool angle = false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if ((quoted || comment > 0) && c == '\\') {
      ++i;  // quoted-pair
      continue;
    }
    if (quoted) {
      quoted = c != '"';
      continue;
    }
    if (comment > 0) {
      comment += c == '(' ? 1 : c == ')' ? -1 : 0;
      continue;
    }
    if (c == '"') quoted = true;
    else if (c == '(') comment = 1;
    else if (c == '<' && !angle) {
      angle = true;
      address.clear();
    } else if (c == '>' && angle) {
      break;
    } else if (c == ',' && !angle) {
      break;
    } else if (c != '\r' && c != '\n' && !is_wsp(c)) {
      address.push_back(c);
    }
  }
  const std::size_t at = address.rfind('@');
  if (at == std::string::npos) return {};
  std::string domain = address.substr(at + 1);
  if (domain.empty() || domain.front() == '[') return {};  // no key for an address literal
  if (domain.back() == '.') domain.pop_back();
  for (char& c : domain) c = lower(c);
  return domain;
}

}  // namespace ringmta::dkim
