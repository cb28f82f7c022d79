// server::recipient_policy: which RCPT TO the daemon takes, decided while the client is still
// connected (reject at RCPT rather than accept and bounce: a bounce of mail with a forged
// sender is backscatter), and where postmaster mail goes.
//
// "Own names" are the names for which this host is the final destination, like Postfix's
// mydestination: the --hostname, "localhost", and the address literals of the addresses the
// daemon listens on ("[192.0.2.1]", "[IPv6:2001:db8::1]"), unless the name is listed in
// relay_domains or has a --route (then another host holds its mailboxes and the mail is
// relayed like any relay domain). relay_domains are not own names: they are forwarded
// (Postfix relay_domains). ringmta has no mailboxes, so at an own name only postmaster exists
// (RFC 5321 §4.5.1), delivered to --postmaster; every other local part is refused (550 5.1.1)
// instead of being relayed to our own MX and bounced as a loop. Without --postmaster, mail
// for postmaster is refused too (550 5.1.1, and a start-up warning): accepting it would mean a
// loop and a bounce, or mail that reaches nobody.
// Never: allocates or blocks (start-up builds it; RCPT only reads it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/smtp/address.h"

namespace ringmta::server {

struct relay_policy;

enum class recipient_verdict : std::uint8_t {
  accept,         // relay (or deliver to the postmaster alias)
  relay_denied,   // 554 5.7.1: not our client, not our domain
  no_mailbox,     // 550 5.1.1: an own name, not postmaster
  no_postmaster,  // 550 5.1.1: postmaster, but no --postmaster set
};

struct recipient_decision {
  recipient_verdict verdict = recipient_verdict::accept;
  std::string_view address;  // what to queue: the forward path, or the postmaster alias
};

struct recipient_policy {
  std::string hostname;                   // lowercase
  std::vector<std::string> own_literals;  // "[192.0.2.1]", "[ipv6:::1]" (lowercase)
  std::vector<std::string> routed;        // domains with a --route (lowercase)
  std::string postmaster;                 // --postmaster alias; empty: none

  bool is_own_name(std::string_view domain, const relay_policy& relay) const noexcept;
  recipient_decision decide(const smtp::mailbox& to, bool client_may_relay,
                            const relay_policy& relay) const noexcept;
};

}  // namespace ringmta::server
