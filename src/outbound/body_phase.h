// The lifecycle of one DATA body transfer (body.cc) as one enum, and which transitions are legal.
//
// body_progress::enter() is the only writer and asserts every transition (RINGMTA_ASSERT, on in
// release); connection::check_invariants() ties the phase to the connection's (a body is under
// way only while the connection delivers; a step abandoned in flight only while it talks or
// closes). Facts independent of the phase stay fields of body_progress: a step in flight, the
// transfer slot held, the path, BDAT's chunk. Pure: no I/O, usable from unit tests.
//
//   none ──354 (send_body)──> wanted ──started──> transferring ──body_sent()──> sent
//   wanted ──no transfer slot──> waiting ──a slot freed──> wanted
//   transferring ──given up, a step in flight──> aborting ──the step completed──> none
//   wanted | waiting | transferring ──given up, nothing in flight──> none
//   sent ──result reported, or the socket ends──> none
#pragma once

#include <cstdint>

namespace ringmta::outbound {

enum class body_phase : std::uint8_t {
  none,          // no DATA body under way: no transaction, before the 354, BDAT, or reported
  wanted,        // the 354 came: the transfer starts once output and sends are done (pump)
  waiting,       // queued for a free transfer slot (outbound_server's FIFO)
  transferring,  // bytes move from the spool (staged, spliced, copied, encrypted)
  sent,          // every byte handed on and body_sent() called: the ".CRLF" follows
  aborting,      // given up while a step was in flight: its transfer slot goes on completion
};

constexpr bool legal_transition(body_phase from, body_phase to) noexcept {
  using b = body_phase;
  switch (from) {
    case b::none: return to == b::wanted;
    case b::wanted: return to == b::transferring || to == b::waiting || to == b::none;
    case b::waiting: return to == b::wanted || to == b::none;
    case b::transferring: return to == b::sent || to == b::aborting || to == b::none;
    case b::sent: return to == b::none;
    case b::aborting: return to == b::none;
  }
  return false;
}

// Whether the body was asked for and not yet all handed on (nor given up): a reply now comes
// before our ".", RFC 5321 §4.1.1.4.
constexpr bool body_open(body_phase phase) noexcept {
  return phase == body_phase::wanted || phase == body_phase::waiting ||
         phase == body_phase::transferring;
}

constexpr const char* phase_name(body_phase phase) noexcept {
  using b = body_phase;
  switch (phase) {
    case b::none: return "none";
    case b::wanted: return "wanted";
    case b::waiting: return "waiting";
    case b::transferring: return "transferring";
    case b::sent: return "sent";
    case b::aborting: return "aborting";
  }
  return "?";
}

}  // namespace ringmta::outbound
