// auth::sasl_exchange: PLAIN and LOGIN over SMTP AUTH (see auth/sasl.h).
#include "ringmta/auth/sasl.h"

#include <cstring>

#include "ringmta/core/assert.h"
#include "ringmta/core/base64.h"

namespace ringmta::auth {
namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Volatile stores: the compiler may not drop the wipe of a buffer that is not read again.
void wipe(char* bytes, std::size_t length) noexcept {
  volatile char* p = bytes;
  for (std::size_t i = 0; i < length; ++i) p[i] = 0;
}

// RFC 4616 §2: UTF-8 without NUL; control characters in a login are never meant.
bool acceptable_user(std::string_view user) noexcept {
  if (user.empty() || user.size() > sasl_exchange::user_bytes_max) return false;
  for (const char ch : user) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

constexpr std::string_view username_challenge = "VXNlcm5hbWU6";  // "Username:"
constexpr std::string_view password_challenge = "UGFzc3dvcmQ6";  // "Password:"

}  // namespace

std::optional<std::size_t> decode_base64(std::string_view text, std::span<char> out) noexcept {
  std::size_t padding = 0;
  while (!text.empty() && text.back() == '=' && padding < 2) {
    text.remove_suffix(1);
    ++padding;
  }
  if (text.size() % 4 == 1) return std::nullopt;
  if (padding > 0 && (text.size() + padding) % 4 != 0) return std::nullopt;
  const std::size_t length = text.size() / 4 * 3 + (text.size() % 4 == 0 ? 0 : text.size() % 4 - 1);
  if (length > out.size()) return std::nullopt;
  std::uint32_t bits = 0;
  int held = 0;
  std::size_t at = 0;
  for (const char c : text) {
    const int value = core::base64_value(c);
    if (value < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    held += 6;
    if (held >= 8) {
      held -= 8;
      out[at++] = static_cast<char>((bits >> held) & 0xff);
    }
  }
  if ((bits & ((1u << held) - 1)) != 0) return std::nullopt;  // RFC 4648 §3.5: canonical
  RINGMTA_ASSERT(at == length);
  return length;
}

std::optional<std::size_t> encode_base64(std::string_view bytes, std::span<char> out) noexcept {
  const std::size_t length = (bytes.size() + 2) / 3 * 4;
  if (length > out.size()) return std::nullopt;
  std::size_t at = 0;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t group = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) group |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) group |= static_cast<unsigned char>(bytes[i + 2]);
    out[at++] = alphabet[(group >> 18) & 63];
    out[at++] = alphabet[(group >> 12) & 63];
    out[at++] = i + 1 < bytes.size() ? alphabet[(group >> 6) & 63] : '=';
    out[at++] = i + 2 < bytes.size() ? alphabet[group & 63] : '=';
  }
  return length;
}

std::string_view sasl_exchange::mechanism_name() const noexcept {
  return _mechanism == sasl_mechanism::plain ? "PLAIN" : "LOGIN";
}

void sasl_exchange::clear() noexcept {
  wipe(_password.data(), _password_bytes);
  wipe(_decoded.data(), _decoded.size());
  _password_bytes = 0;
  _user_bytes = 0;
  _state = state::idle;
}

sasl_step sasl_exchange::refuse(std::uint16_t code, std::string_view enhanced,
                                std::string_view text) noexcept {
  clear();
  return {sasl_step::kind::refuse, code, enhanced, text};
}

std::optional<std::string_view> sasl_exchange::decode(std::string_view line) noexcept {
  if (line == "=") return std::string_view();  // RFC 4954 §4: an empty response
  const auto length = decode_base64(line, _decoded);
  if (!length) return std::nullopt;
  return std::string_view(_decoded.data(), *length);
}

sasl_step sasl_exchange::start(std::string_view mechanism, std::string_view initial) noexcept {
  clear();
  const auto upper_equal = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const char c = a[i] >= 'a' && a[i] <= 'z' ? static_cast<char>(a[i] - 32) : a[i];
      if (c != b[i]) return false;
    }
    return true;
  };
  if (upper_equal(mechanism, "PLAIN")) {
    _mechanism = sasl_mechanism::plain;
    _state = state::plain_response;
    if (initial.empty()) return {sasl_step::kind::challenge, 334, "", ""};  // RFC 4616 §2
    return respond(initial);
  }
  if (upper_equal(mechanism, "LOGIN")) {
    _mechanism = sasl_mechanism::login;
    _state = state::login_user;
    if (initial.empty()) return {sasl_step::kind::challenge, 334, "", username_challenge};
    return respond(initial);
  }
  return refuse(504, "5.5.4", "Unrecognized authentication type");
}

sasl_step sasl_exchange::respond(std::string_view line) noexcept {
  const auto response = decode(line);
  if (!response) return refuse(501, "5.5.2", "Cannot decode response (not base64)");
  switch (_state) {
    case state::plain_response: return take_plain(*response);
    case state::login_user: return take_login_user(*response);
    case state::login_password: return take_login_password(*response);
    case state::idle:
    case state::verify: break;
  }
  return refuse(503, "5.5.1", "No authentication exchange in progress");
}

// RFC 4616 §2: [authzid] NUL authcid NUL passwd. Acting for another identity (an authzid other
// than the login) is not offered.
sasl_step sasl_exchange::take_plain(std::string_view response) noexcept {
  const std::size_t first = response.find('\0');
  const std::size_t second =
      first == std::string_view::npos ? first : response.find('\0', first + 1);
  if (second == std::string_view::npos || response.find('\0', second + 1) != response.npos)
    return refuse(501, "5.5.2", "Malformed PLAIN response");
  const std::string_view authzid = response.substr(0, first);
  const std::string_view user = response.substr(first + 1, second - first - 1);
  const std::string_view password = response.substr(second + 1);
  if (!authzid.empty() && authzid != user)
    return refuse(535, "5.7.8", "Authentication credentials invalid");
  if (!acceptable_user(user) || password.empty() || password.size() > password_bytes_max)
    return refuse(535, "5.7.8", "Authentication credentials invalid");
  std::memcpy(_user.data(), user.data(), user.size());
  _user_bytes = user.size();
  std::memcpy(_password.data(), password.data(), password.size());
  _password_bytes = password.size();
  wipe(_decoded.data(), response.size());
  _state = state::verify;
  return {sasl_step::kind::verify, 0, "", ""};
}

sasl_step sasl_exchange::take_login_user(std::string_view response) noexcept {
  if (!acceptable_user(response)) return refuse(535, "5.7.8", "Authentication credentials invalid");
  std::memcpy(_user.data(), response.data(), response.size());
  _user_bytes = response.size();
  _state = state::login_password;
  return {sasl_step::kind::challenge, 334, "", password_challenge};
}

sasl_step sasl_exchange::take_login_password(std::string_view response) noexcept {
  if (response.empty() || response.size() > password_bytes_max ||
      response.find('\0') != std::string_view::npos)
    return refuse(535, "5.7.8", "Authentication credentials invalid");
  std::memcpy(_password.data(), response.data(), response.size());
  _password_bytes = response.size();
  wipe(_decoded.data(), response.size());
  _state = state::verify;
  return {sasl_step::kind::verify, 0, "", ""};
}

}  // namespace ringmta::auth
