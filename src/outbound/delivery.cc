// outbound delivery helpers: close reasons, xtext, NOTIFY keywords, envelope_storage.
#include "ringmta/outbound/delivery.h"

#include "ringmta/core/assert.h"
#include "ringmta/net/idna.h"

namespace ringmta::outbound {

std::string_view describe(close_reason reason) noexcept {
  switch (reason) {
    case close_reason::released: return "released";
    case close_reason::idle_timeout: return "idle timeout";
    case close_reason::destination_failed: return "destination failed";
    case close_reason::lost: return "connection lost";
    case close_reason::shutdown: return "shutdown";
  }
  return "unknown";
}

std::string_view describe(tls_policy policy) noexcept {
  switch (policy) {
    case tls_policy::none: return "none";
    case tls_policy::opportunistic: return "opportunistic";
    case tls_policy::required: return "required";
    case tls_policy::verify: return "verify";
  }
  return "unknown";
}

std::string_view describe(tls_mode mode) noexcept {
  switch (mode) {
    case tls_mode::none_by_policy: return "TLS policy none";
    case tls_mode::not_offered: return "STARTTLS not offered";
    case tls_mode::refused: return "STARTTLS refused";
    case tls_mode::fallback: return "TLS handshake failed, plaintext retry";
    case tls_mode::encrypted: return "TLS";
  }
  return "unknown";
}

void append_xtext(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    // RFC 3461 §4: xchar is "!" to "~" except "+" and "="; anything else is "+" HEXCHAR.
    if (byte >= '!' && byte <= '~' && c != '+' && c != '=') {
      out.push_back(c);
    } else {
      out.push_back('+');
      out.push_back(hex[byte >> 4]);
      out.push_back(hex[byte & 15]);
    }
  }
}

std::string_view notify_keywords(std::uint8_t bits) noexcept {
  // RFC 3461 §4.1: "NEVER" alone, or a comma-separated list of SUCCESS, FAILURE, DELAY.
  static constexpr std::string_view lists[8] = {
      "",
      "SUCCESS",
      "FAILURE",
      "SUCCESS,FAILURE",
      "DELAY",
      "SUCCESS,DELAY",
      "FAILURE,DELAY",
      "SUCCESS,FAILURE,DELAY",
  };
  if (bits == 0) return {};
  if ((bits & spool::notify_never) != 0) return "NEVER";
  const unsigned index = ((bits & spool::notify_success) != 0 ? 1u : 0u) |
                         ((bits & spool::notify_failure) != 0 ? 2u : 0u) |
                         ((bits & spool::notify_delay) != 0 ? 4u : 0u);
  return lists[index];
}

namespace {

// "rfc822;user@example.org" as the spool keeps it (type, ";", decoded address) -> the RFC 3461
// §4.2 form "rfc822;user+40..." with the address xtext-encoded. The utf-8 type (RFC 6533) is
// kept as it came. Empty when there is none or the result is too long to send.
void encode_orcpt(std::string& out, std::string_view stored) {
  out.clear();
  const std::size_t separator = stored.find(';');
  if (stored.empty() || separator == std::string_view::npos) return;
  const std::string_view type = stored.substr(0, separator);
  const std::string_view address = stored.substr(separator + 1);
  out.append(type).push_back(';');
  const bool utf8 = type.size() == 5 && (type[0] | 0x20) == 'u' && (type[1] | 0x20) == 't' &&
                    (type[2] | 0x20) == 'f' && type[3] == '-' && type[4] == '8';
  if (utf8) out.append(address);
  else append_xtext(out, address);
  if (out.size() > smtp::client_orcpt_bytes_max) out.clear();
}

smtp::client_body_type body_of(spool::body_type body) noexcept {
  switch (body) {
    case spool::body_type::eight_bit_mime:
    case spool::body_type::binary_mime:  // stored in DATA wire form: 8BITMIME is what fits
      return smtp::client_body_type::eight_bit_mime;
    case spool::body_type::seven_bit:
    case spool::body_type::unspecified: break;
  }
  return smtp::client_body_type::seven_bit;
}

// The address with its domain in A-labels, for a next hop without SMTPUTF8, when that is a
// different spelling and the local part is ASCII (only SMTPUTF8 carries a non-ASCII one);
// else empty.
std::string ascii_domain_form(std::string_view address) {
  if (net::is_ascii(address)) return {};  // nearly every address: no search for the '@'
  const auto at = address.rfind('@');
  if (at == std::string_view::npos || !net::is_ascii(address.substr(0, at))) return {};
  return net::address_to_ascii_domain(address).value_or(std::string());
}

}  // namespace

const smtp::client_envelope& envelope_storage::assign(const spool::envelope& value,
                                                      std::span<const std::uint16_t> recipients,
                                                      std::uint64_t body_bytes) {
  _reverse_path = value.reverse_path;
  _reverse_path_ascii = ascii_domain_form(value.reverse_path);
  _envid.clear();
  append_xtext(_envid, value.envid);
  if (_envid.size() > smtp::client_envid_bytes_max) _envid.clear();  // advisory: drop it
  _addresses.resize(recipients.size());
  _addresses_ascii.resize(recipients.size());
  _orcpts.resize(recipients.size());
  _recipients.resize(recipients.size());
  for (std::size_t i = 0; i < recipients.size(); ++i) {
    RINGMTA_ASSERT(recipients[i] < value.recipients.size());
    const spool::recipient& source = value.recipients[recipients[i]];
    _addresses[i] = source.address;
    _addresses_ascii[i] = ascii_domain_form(source.address);
    encode_orcpt(_orcpts[i], source.orcpt);
  }
  // Views are taken once every string is in place (the vectors above no longer grow).
  for (std::size_t i = 0; i < recipients.size(); ++i) {
    const spool::recipient& source = value.recipients[recipients[i]];
    _recipients[i] = smtp::client_recipient{_addresses[i], notify_keywords(source.notify),
                                            _orcpts[i], _addresses_ascii[i]};
  }
  _envelope = smtp::client_envelope{};
  _envelope.reverse_path = _reverse_path;
  _envelope.reverse_path_ascii = _reverse_path_ascii;
  _envelope.recipients = _recipients;
  _envelope.size_bytes = body_bytes;
  _envelope.body = body_of(value.body);
  // An SMTPUTF8 message whose content is known to be ASCII (the inbound side marks it 7bit)
  // needs SMTPUTF8 only for its addresses: the client decides that from the addresses it
  // sends, so such a message with only non-ASCII domains can go to a server without SMTPUTF8
  // with A-label domains (RFC 6531 §3.2; Postfix does the same). UTF-8 in the header section
  // keeps the flag, and then 5.6.7 to such a server.
  _envelope.smtputf8 = value.smtputf8 && value.body != spool::body_type::seven_bit;
  switch (value.ret) {
    case spool::dsn_return::full: _envelope.dsn_ret = "FULL"; break;
    case spool::dsn_return::headers: _envelope.dsn_ret = "HDRS"; break;
    case spool::dsn_return::unspecified: break;
  }
  _envelope.dsn_envid = _envid;
  return _envelope;
}

}  // namespace ringmta::outbound
