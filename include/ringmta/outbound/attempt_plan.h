// outbound::attempt_plan: the addresses one connection attempt tries, in order, and the
// destination's failure when none of them gives a usable SMTP session (RFC 5321 §5.1, §4.5.4.1).
//
// Order: MX hosts as the resolver returned them (preference order, equal preferences already
// shuffled), each host's addresses in the resolver's order. A host that is this MTA (our host
// name, or an address:port we listen on) is dropped with every host of the same or a less
// preferred preference (RFC 5321 §5.1); when nothing is left the mail loops back to us (554
// 5.4.6, as Postfix). An address already planned is
// skipped (two MX names for one server are tried once), so are disabled families; at most
// addresses_max addresses are planned (RFC 5321 §4.5.4.1 wants a bound on the tries).
// An address is abandoned for the next one when it refuses or times out the connection, greets
// with 4xx/5xx, refuses EHLO/HELO, or drops or garbles the session before it is ready.
//
// Failure of the destination once every address failed:
//   - every try reached a server that said 5xx to the greeting or to EHLO/HELO: permanent, with
//     the last such reply (the servers refuse us for good);
//   - otherwise transient: the last server's reply when it was a 4xx rejection, 4.4.2 when the
//     last server broke the session, 4.7.x when it could not give the TLS the policy demands
//     (RFC 3463: X.7.4 security features not supported, X.7.5 cryptographic failure; the text
//     names the server and why), 4.7.x when AUTH to it failed (the server's reply, even a
//     535, is in the text: a bounce would lose mail over a credentials problem), else 4.4.1
//     (refused, unreachable, timed out).
// DNS outcomes map to replies as well: NXDOMAIN 550 5.1.2, null MX 556 5.1.10 (RFC 7505 §4,
// RFC 7504), no route 554 5.4.4, bad name 550 5.1.3 (permanent); SERVFAIL or timeout 451 4.4.3,
// overload 451 4.3.0 (transient).
//
// Pure: no I/O, no clock, no callbacks. Never: plans more than addresses_max addresses.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/endpoint.h"
#include "ringmta/dns/types.h"
#include "ringmta/smtp/client_session.h"

namespace ringmta::outbound {

struct candidate {
  std::string host_name;  // MX host name, the domain (implicit MX) or the literal
  core::endpoint address;
};

struct plan_options {
  std::uint16_t port = 25;
  std::uint32_t addresses_max = 10;
  bool ipv4 = true;
  bool ipv6 = true;
  // Ourselves: our host name (compared without case) and the endpoints we accept mail on.
  std::string_view self_name;
  const std::vector<core::endpoint>* self_endpoints = nullptr;
};

// The addresses to try for a successful lookup, in order (empty when `result` failed or no
// address is usable with `options`). `loops_back`, when given, tells whether the plan is empty
// because the best MX host is ourselves.
std::vector<candidate> plan_candidates(const dns::mx_result& result, const plan_options& options,
                                       bool* loops_back = nullptr);

// A socket address for `ip`:port.
core::endpoint to_endpoint(const dns::ip_address& ip, std::uint16_t port) noexcept;

// The reply and outcome for a failed lookup (status != ok).
smtp::client_outcome dns_failure_reply(const dns::mx_result& result, smtp::parsed_reply& out);

// How one address failed (only failures that move on to the next address).
enum class attempt_failure : std::uint8_t {
  connect_failed,  // the connect op failed (errno) or timed out (ETIMEDOUT)
  rejected,        // the server answered the greeting or EHLO/HELO with 4xx/5xx
  broken,          // the session ended before it was ready: closed, timeout, garbage, 421
  tls,             // required/verify: STARTTLS not offered or refused, or the handshake (or
                   // the certificate) failed
  auth,            // AUTH to a relay host refused (535...) or not possible (no TLS, not
                   // offered): always transient (a wrong password is the operator's to fix)
};

// Records the tries of one connection and sums them up.
class attempt_tracker {
 public:
  void reset() noexcept;
  // error: errno for connect_failed; reply: the server's or the engine's for the others.
  void record(const candidate& tried, attempt_failure how, int error,
              const smtp::parsed_reply* reply);
  std::uint32_t tries() const noexcept { return _tries; }
  // The destination's failure after the last try (tries() > 0), as an outcome and a reply.
  smtp::client_outcome summary(smtp::parsed_reply& out) const;

 private:
  std::uint32_t _tries = 0;
  std::uint32_t _permanent_rejections = 0;  // tries answered 5xx by a server
  attempt_failure _last = attempt_failure::connect_failed;
  std::uint16_t _last_code = 0;
  smtp::reply_enhanced_code _last_enhanced;
  std::string _last_text;  // "host[address]:port: what happened"
};

}  // namespace ringmta::outbound
