#include "ringmta/net/idna.h"

#include <idn2.h>

#include <algorithm>
#include <cstdlib>

namespace ringmta::net {

bool is_ascii(std::string_view text) noexcept {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::optional<std::string> domain_to_ascii(std::string_view domain) {
  if (domain.empty() || domain.size() > 1024) return std::nullopt;
  if (is_ascii(domain)) {
    std::string out(domain);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
      return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    });
    return out;
  }
  // UTS #46 non-transitional mapping (case folding, NFC), then IDNA 2008 (RFC 5891 §5).
  const std::string input(domain);  // libidn2 wants a NUL-terminated string
  char* ascii = nullptr;
  const int rc = idn2_to_ascii_8z(input.c_str(), &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
  if (rc != IDN2_OK || ascii == nullptr) return std::nullopt;
  std::string out(ascii);
  idn2_free(ascii);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  });
  if (out.size() > 253) return std::nullopt;  // RFC 1035 §2.3.4 (without the root dot)
  return out;
}

std::optional<std::string> address_to_ascii_domain(std::string_view address) {
  const auto at = address.rfind('@');
  if (at == std::string_view::npos) return std::nullopt;
  auto domain = domain_to_ascii(address.substr(at + 1));
  if (!domain) return std::nullopt;
  std::string out(address.substr(0, at + 1));
  out += *domain;
  return out;
}

}  // namespace ringmta::net
