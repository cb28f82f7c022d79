// server::recipient_policy: own names, postmaster, relay rights (see recipient_policy.h).
#include "ringmta/server/recipient_policy.h"

#include <algorithm>

#include "ringmta/net/idna.h"
#include "ringmta/server/inbound.h"

namespace ringmta::server {
namespace {

bool iequal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           const auto lower = [](char c) {
             return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
           };
           return lower(x) == lower(y);
         });
}

}  // namespace

bool recipient_policy::is_own_name(std::string_view domain,
                                   const relay_policy& relay) const noexcept {
  if (!net::is_ascii(domain)) {  // our names are ASCII: compare the A-label form
    const auto ascii = net::domain_to_ascii(domain);
    return ascii && is_own_name(*ascii, relay);
  }
  const bool own = iequal(domain, hostname) || iequal(domain, "localhost") ||
                   std::any_of(own_literals.begin(), own_literals.end(),
                               [&](const std::string& literal) { return iequal(domain, literal); });
  if (!own) return false;
  // Relayed elsewhere on the operator's word: another host holds its mailboxes.
  return !relay.accepts_domain(domain) &&
         std::none_of(routed.begin(), routed.end(),
                      [&](const std::string& name) { return iequal(domain, name); });
}

recipient_decision recipient_policy::decide(const smtp::mailbox& to, bool client_may_relay,
                                            const relay_policy& relay) const noexcept {
  // RFC 5321 §4.1.1.3: <Postmaster> without a domain is ours whoever sends it.
  const bool own = to.is_postmaster || is_own_name(to.domain, relay);
  if (own) {
    if (!to.is_postmaster && !iequal(to.local_part, "postmaster"))
      return {recipient_verdict::no_mailbox, {}};
    if (postmaster.empty()) return {recipient_verdict::no_postmaster, {}};
    return {recipient_verdict::accept, postmaster};  // RFC 5321 §4.5.1, from anyone
  }
  if (client_may_relay || relay.accepts_domain(to.domain))
    return {recipient_verdict::accept, to.address};
  return {recipient_verdict::relay_denied, {}};
}

}  // namespace ringmta::server
