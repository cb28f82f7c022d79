// The lifecycle of one outgoing connection as one enum, and which transitions are legal.
//
// A connection slot is in exactly one phase; connection::enter() is the only writer and asserts
// every transition against legal_transition() (RINGMTA_ASSERT, on in release). Facts that are
// independent of the phase (an op in flight, a QUIT asked for, a failure seen) stay booleans of
// the connection. Pure: no I/O, usable from unit tests.
//
//   free ──open──> resolving ──lookup done──> unconnected ──connect──> connecting
//   connecting ──connected──> talking ──ready──> idle ──deliver──> delivering
//   delivering ──result──> talking ; idle ──QUIT or peer gone──> talking
//   connecting | talking | idle | delivering ──end_socket──> closing ──fd closed──> unconnected
//   unconnected ──next address / plaintext retry──> connecting
//   resolving (abandoned) | unconnected ──finish──> finished ──slot released──> free
#pragma once

#include <cstdint>

namespace ringmta::outbound {

enum class connection_phase : std::uint8_t {
  free,         // the slot is unused (not live)
  resolving,    // the route's DNS lookup is in flight; no socket
  unconnected,  // no socket and no lookup: the next address is being chosen, or the end
  connecting,   // a socket and its connect in flight
  talking,      // connected, the SMTP session runs: greeting, EHLO, TLS, AUTH, RSET, QUIT
  idle,         // ready and given nothing: deliver() may hand it a job
  delivering,   // a transaction in progress (MAIL to the end of data and its replies)
  closing,      // the socket is shut down; its fd is closed once no op refers to it
  finished,     // on_closed reported; the slot is being released
};

constexpr bool legal_transition(connection_phase from, connection_phase to) noexcept {
  using p = connection_phase;
  switch (from) {
    case p::free: return to == p::resolving;
    case p::resolving: return to == p::unconnected || to == p::finished;
    case p::unconnected: return to == p::connecting || to == p::finished;
    case p::connecting: return to == p::talking || to == p::closing;
    case p::talking: return to == p::idle || to == p::closing;
    case p::idle: return to == p::delivering || to == p::talking || to == p::closing;
    case p::delivering: return to == p::talking || to == p::closing;
    case p::closing: return to == p::unconnected;
    case p::finished: return to == p::free;
  }
  return false;
}

// Whether the connection may still act on events (not free, not reporting its end).
constexpr bool active(connection_phase phase) noexcept {
  return phase != connection_phase::free && phase != connection_phase::finished;
}

// Whether a socket exists that has connected (the session may read and write).
constexpr bool connected(connection_phase phase) noexcept {
  return phase == connection_phase::talking || phase == connection_phase::idle ||
         phase == connection_phase::delivering;
}

constexpr const char* phase_name(connection_phase phase) noexcept {
  using p = connection_phase;
  switch (phase) {
    case p::free: return "free";
    case p::resolving: return "resolving";
    case p::unconnected: return "unconnected";
    case p::connecting: return "connecting";
    case p::talking: return "talking";
    case p::idle: return "idle";
    case p::delivering: return "delivering";
    case p::closing: return "closing";
    case p::finished: return "finished";
  }
  return "?";
}

}  // namespace ringmta::outbound
