// outbound::attempt_plan: address order and the destination's failure (outbound/attempt_plan.h).
#include "ringmta/outbound/attempt_plan.h"

#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include <fmt/format.h>

namespace ringmta::outbound {

namespace {

smtp::reply_enhanced_code enhanced(std::uint8_t status_class, std::uint16_t subject,
                                   std::uint16_t detail) noexcept {
  return smtp::reply_enhanced_code{status_class, subject, detail};
}

}  // namespace

core::endpoint to_endpoint(const dns::ip_address& ip, std::uint16_t port) noexcept {
  core::endpoint out;
  if (ip.family == 6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.address);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    std::memcpy(&v6->sin6_addr, ip.bytes.data(), 16);
    out.length = sizeof(sockaddr_in6);
  } else {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out.address);
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    std::memcpy(&v4->sin_addr, ip.bytes.data(), 4);
    out.length = sizeof(sockaddr_in);
  }
  return out;
}

namespace {

bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_self(const dns::mx_host& host, const plan_options& options) {
  std::string_view name = host.name;
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (!options.self_name.empty() && equal_ignoring_case(name, options.self_name)) return true;
  if (options.self_endpoints == nullptr) return false;
  return std::any_of(host.addresses.begin(), host.addresses.end(), [&](const dns::ip_address& ip) {
    const core::endpoint at = to_endpoint(ip, options.port);
    return std::find(options.self_endpoints->begin(), options.self_endpoints->end(), at) !=
           options.self_endpoints->end();
  });
}

}  // namespace

std::vector<candidate> plan_candidates(const dns::mx_result& result, const plan_options& options,
                                       bool* loops_back) {
  std::vector<candidate> planned;
  if (loops_back != nullptr) *loops_back = false;
  if (result.status != dns::lookup_status::ok) return planned;
  // RFC 5321 §5.1: from the most preferred host that is us on, nothing may be tried.
  bool self_found = false;
  std::uint16_t self_preference = 0;
  for (const dns::mx_host& host : result.hosts) {
    if (is_self(host, options) && (!self_found || host.preference < self_preference)) {
      self_found = true;
      self_preference = host.preference;
    }
  }
  std::vector<dns::ip_address> seen;
  for (const dns::mx_host& host : result.hosts) {
    if (self_found && host.preference >= self_preference) continue;
    for (const dns::ip_address& ip : host.addresses) {
      if (planned.size() >= options.addresses_max) return planned;
      if ((ip.family == 4 && !options.ipv4) || (ip.family == 6 && !options.ipv6)) continue;
      if (ip.family != 4 && ip.family != 6) continue;
      if (std::find(seen.begin(), seen.end(), ip) != seen.end()) continue;  // one server, once
      seen.push_back(ip);
      planned.push_back(candidate{host.name, to_endpoint(ip, options.port)});
    }
  }
  if (loops_back != nullptr) *loops_back = self_found && planned.empty();
  return planned;
}

smtp::client_outcome dns_failure_reply(const dns::mx_result& result, smtp::parsed_reply& out) {
  using dns::failure_kind;
  std::uint16_t code = 451;
  smtp::reply_enhanced_code code_enhanced = enhanced(4, 4, 3);
  switch (result.failure) {
    case failure_kind::no_such_domain: code = 550; code_enhanced = enhanced(5, 1, 2); break;
    // RFC 7505 §4.1 / RFC 7504 §3: 556 5.1.10 "domain does not accept mail".
    case failure_kind::null_mx: code = 556; code_enhanced = enhanced(5, 1, 10); break;
    case failure_kind::no_mail_route: code = 554; code_enhanced = enhanced(5, 4, 4); break;
    case failure_kind::bad_domain: code = 550; code_enhanced = enhanced(5, 1, 3); break;
    case failure_kind::overloaded: code = 451; code_enhanced = enhanced(4, 3, 0); break;
    case failure_kind::server_failure:
    case failure_kind::timeout:
    case failure_kind::none: break;
  }
  const std::string_view text =
      result.text.empty() ? std::string_view("DNS lookup failed") : std::string_view(result.text);
  out.assign_local(code, code_enhanced, text);
  return code >= 500 ? smtp::client_outcome::permanent_failure
                     : smtp::client_outcome::transient_failure;
}

// ---- attempt_tracker

void attempt_tracker::reset() noexcept {
  _tries = 0;
  _permanent_rejections = 0;
  _last = attempt_failure::connect_failed;
  _last_code = 0;
  _last_enhanced = {};
  _last_text.clear();
}

void attempt_tracker::record(const candidate& tried, attempt_failure how, int error,
                             const smtp::parsed_reply* reply) {
  ++_tries;
  _last = how;
  _last_code = 0;
  _last_enhanced = {};
  const std::string where =
      fmt::format("{}[{}]:{}", tried.host_name, tried.address.address_string(),
                  tried.address.port());
  switch (how) {
    case attempt_failure::connect_failed:
      _last_text = fmt::format("connect to {}: {}", where,
                               error == ETIMEDOUT ? "connection timed out"
                                                  : std::strerror(error));
      return;
    case attempt_failure::rejected:
      if (reply != nullptr && reply->permanent()) ++_permanent_rejections;
      break;
    case attempt_failure::broken:
      break;
    case attempt_failure::tls:
      // Transient whatever the server said (a 5xx to STARTTLS included): TLS is our demand.
      _last_code = 451;
      _last_enhanced = reply != nullptr && reply->enhanced.present() &&
                               reply->enhanced.subject == 7
                           ? enhanced(4, 7, reply->enhanced.detail)
                           : enhanced(4, 7, 5);
      _last_text = reply == nullptr ? fmt::format("{}: TLS failed", where)
                   : reply->local   ? fmt::format("{}: {}", where, reply->text())
                                    : fmt::format("{} said to STARTTLS: {} {}", where,
                                                  reply->code, reply->text());
      return;
    case attempt_failure::auth:
      _last_code = 454;
      _last_enhanced = enhanced(4, 7, reply != nullptr && reply->enhanced.present() &&
                                              reply->enhanced.subject == 7
                                          ? reply->enhanced.detail
                                          : 0);
      _last_text = reply == nullptr ? fmt::format("{}: AUTH failed", where)
                   : reply->local   ? fmt::format("{}: {}", where, reply->text())
                                    : fmt::format("{} said to AUTH: {} {}", where, reply->code,
                                                  reply->text());
      return;
  }
  if (reply == nullptr) {
    _last_text = fmt::format("{}: session failed", where);
    return;
  }
  _last_code = reply->code;
  _last_enhanced = reply->enhanced;
  _last_text = fmt::format("{} {}: {} {}", where, reply->local ? "failed" : "said",
                           reply->code, reply->one_line_text());
}

smtp::client_outcome attempt_tracker::summary(smtp::parsed_reply& out) const {
  const std::string_view text =
      _last_text.empty() ? std::string_view("no address to try") : std::string_view(_last_text);
  if (_tries > 0 && _permanent_rejections == _tries) {
    // Every server refused us for good (RFC 5321 §3.1 554 greeting, 5xx to EHLO and HELO).
    const auto code_enhanced = _last_enhanced.present() ? _last_enhanced : enhanced(5, 0, 0);
    out.assign_local(_last_code >= 500 ? _last_code : 554, code_enhanced, text);
    return smtp::client_outcome::permanent_failure;
  }
  if (_last == attempt_failure::tls || _last == attempt_failure::auth) {
    out.assign_local(_last_code, _last_enhanced, text);
    return smtp::client_outcome::transient_failure;
  }
  if (_last == attempt_failure::rejected && _last_code >= 400 && _last_code < 500) {
    out.assign_local(_last_code, _last_enhanced.present() ? _last_enhanced : enhanced(4, 0, 0),
                     text);
    return smtp::client_outcome::transient_failure;
  }
  // RFC 3463: X.4.2 bad connection (the last server broke the session), X.4.1 no answer (the
  // last address could not be reached, or refused us while others were unreachable).
  out.assign_local(451, _last == attempt_failure::broken ? enhanced(4, 4, 2) : enhanced(4, 4, 1),
                   text);
  return smtp::client_outcome::transient_failure;
}

}  // namespace ringmta::outbound
