// XCLIENT on an inbound connection (Postfix XCLIENT_README): a peer in --xclient-trusted (a
// front proxy, a content filter, a test rig) tells us who the original client is. The claimed
// address then decides relaying (mynetworks), the per-address AUTH counters, Received: and the
// log records; LOGIN makes the session authenticated as that user (the sender map applies);
// HELO, when given, is the name Received: and the records show. Trust is decided once, from
// the address the connection came from (after a PROXY header from a trusted proxy), so a
// claimed address never widens who may use XCLIENT.
// Never: XCLIENT believed from another peer (it would make any client an open relay or any
// user), a claimed value in a record without the engine's syntax checks (smtp/xclient.h).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "inbound_internal.h"

namespace ringmta::server {
namespace {

// The engine checked the text (smtp/xclient.h): it parses.
core::endpoint endpoint_of(const smtp::xclient_attributes& a, std::uint16_t port) noexcept {
  char text[64] = {};
  std::memcpy(text, a.address.text.data(), std::min<std::size_t>(a.address.text.size(), 63));
  if (a.address_v6) {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    inet_pton(AF_INET6, text, &v6.sin6_addr);
    return core::endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&v6), sizeof v6);
  }
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(port);
  inet_pton(AF_INET, text, &v4.sin_addr);
  return core::endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
}

std::uint16_t port_of(std::string_view digits) noexcept {
  std::uint32_t value = 0;
  for (const char c : digits) value = value * 10 + static_cast<std::uint32_t>(c - '0');
  return static_cast<std::uint16_t>(value);
}

void set_port(core::endpoint& at, std::uint16_t port) noexcept {
  if (at.family() == AF_INET) reinterpret_cast<sockaddr_in&>(at.address).sin_port = htons(port);
  if (at.family() == AF_INET6) reinterpret_cast<sockaddr_in6&>(at.address).sin6_port = htons(port);
}

}  // namespace

bool connection::xclient_peer_trusted() const noexcept {
  const auto& trusted = settings->xclient_trusted;
  return std::any_of(trusted.begin(), trusted.end(), [&](const core::cidr& range) {
    return range.contains(peer.sockaddr_pointer());
  });
}

smtp::verdict connection::on_xclient(const smtp::xclient_attributes& a) noexcept {
  char before[64];
  const std::string_view front_end = peer.to_chars(before, sizeof before);
  if (a.address.given()) peer = endpoint_of(a, peer.port());
  if (a.port.given()) set_port(peer, port_of(a.port.text));
  if (a.address.state == smtp::xclient_state::unavailable) {
    xclient_address_unknown = true;  // Postfix's "unknown": matches no network
  } else if (a.address.given()) {
    xclient_address_unknown = false;
  }
  envelope.client_address = xclient_address_unknown ? "unknown" : peer.address_string();
  relay_allowed = !xclient_address_unknown && settings->relay.client_may_relay(peer);
  login.assign(a.login.given() ? a.login.text : std::string_view());  // engine: authenticated
  if (a.helo.state != smtp::xclient_state::absent) xclient_helo.assign(a.helo.text);
  if (a.name.state != smtp::xclient_state::absent) client_name.assign(a.name.text);
  server.metrics().xclient_accepted.add();
  auto& log = server.log();
  log.set_time(server.host().wall_ms());
  auto record = log.record("xclient");
  record.hex_field("session", session_id)
      .field("client", peer.to_chars(client_text, sizeof client_text))
      .field("front_end", front_end)
      .field("result", "accepted")
      .field("relay", relay_allowed ? "mynetworks" : "no");
  if (!client_name.empty()) record.field("name", client_name);
  if (!xclient_helo.empty()) record.field("helo", xclient_helo);
  if (!login.empty()) record.field("login", login);
  if (a.protocol.given()) record.field("proto", a.protocol.text);
  record.end();
  return smtp::verdict::accept();
}

void connection::on_xclient_refused() noexcept {
  server.metrics().xclient_untrusted.add();
  auto& log = server.log();
  log.set_time(server.host().wall_ms());
  log.record("xclient")
      .hex_field("session", session_id)
      .field("client", peer.to_chars(client_text, sizeof client_text))
      .field("result", "untrusted")
      .field("reason", "client not in xclient_trusted");
}

// HELO for Received: and the records: the one XCLIENT named, else the session's.
std::string_view connection::helo_for_records() const noexcept {
  return xclient_helo.empty() ? session->helo_name() : std::string_view(xclient_helo);
}

}  // namespace ringmta::server
