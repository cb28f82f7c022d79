// The lifecycle of one inbound SMTP connection as one enum, and which transitions are legal.
//
// A connection slot is in exactly one phase; connection::enter() (inbound_connection.cc) is the
// only writer and asserts every transition against legal_transition() (RINGMTA_ASSERT, on in
// release). Facts independent of the phase stay booleans of the connection: ops in flight
// (recv_armed, send_in_flight), held input, a message being received, membership of the
// spool-room wait list. Pure: no I/O, usable from unit tests.
//
//   free ──accept──> accepted ──PROXY expected──> proxy ──header──> (as accepted)
//   accepted | proxy ──admitted──> greeting_delay ──delay over──> session
//   accepted | proxy ──admitted──> session (the greeting, or implicit TLS's handshake first)
//   accepted | proxy | greeting_delay ──fixed reply (client limit, early talker)──> refusing
//   any open phase ──close()──> closing ──ops drained, close queued──> closed ──> free
#pragma once

#include <cstdint>

namespace ringmta::server {

enum class inbound_phase : std::uint8_t {
  free,            // the slot is unused
  accepted,        // a socket is ours, the policy (PROXY, limits, relay rights) not yet applied
  proxy,           // waiting for the PROXY header that names the real client
  greeting_delay,  // admitted, the greeting held back: a client that talks now is refused
  session,         // greeted (or implicit TLS's handshake): received bytes are SMTP (or TLS)
  refusing,        // a fixed reply (client limit, early talker) goes out, then close
  closing,         // close requested: no new ops, the fd is closed once ops drain
  closed,          // the fd's close is queued (or done): the slot is released on completion
};

constexpr bool legal_transition(inbound_phase from, inbound_phase to) noexcept {
  using p = inbound_phase;
  switch (from) {
    case p::free: return to == p::accepted;
    case p::accepted:
      return to == p::proxy || to == p::greeting_delay || to == p::session ||
             to == p::refusing || to == p::closing;
    case p::proxy:
      return to == p::greeting_delay || to == p::session || to == p::refusing ||
             to == p::closing;
    case p::greeting_delay:
      return to == p::session || to == p::refusing || to == p::closing;
    case p::session: return to == p::closing;
    case p::refusing: return to == p::closing;
    case p::closing: return to == p::closed;
    case p::closed: return to == p::free;
  }
  return false;
}

// Whether received bytes are protocol (SMTP or TLS), not a PROXY header or an early talker.
constexpr bool greeted(inbound_phase phase) noexcept {
  return phase == inbound_phase::session || phase == inbound_phase::refusing;
}

constexpr const char* phase_name(inbound_phase phase) noexcept {
  using p = inbound_phase;
  switch (phase) {
    case p::free: return "free";
    case p::accepted: return "accepted";
    case p::proxy: return "proxy";
    case p::greeting_delay: return "greeting_delay";
    case p::session: return "session";
    case p::refusing: return "refusing";
    case p::closing: return "closing";
    case p::closed: return "closed";
  }
  return "?";
}

}  // namespace ringmta::server
