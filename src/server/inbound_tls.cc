// TLS on an inbound connection: STARTTLS (RFC 3207) and implicit TLS listeners (RFC 8314),
// glued between the ring and smtp::server_session through tls::session (tls/session.h).
//
// Phases (connection::tls_phase, asserted in set_tls_stage):
//   off ──STARTTLS accepted──▶ starting ──220 sent──▶ handshake ──▶ active
//   (implicit listener: handshake from accept)            └──────────▶ failed ──▶ closed
// - starting: the 220 goes out in plaintext; nothing is received until it has, and the engine
//   has already discarded whatever the client pipelined behind STARTTLS (CVE-2011-0411), so
//   the first byte read afterwards is the ClientHello.
// - handshake: received bytes go to the TLS session only; the one deadline is
//   --timeout-tls-handshake (reads do not extend it); no SMTP reply can be sent.
// - active: ciphertext → tls → plaintext → engine; engine replies → tls → ciphertext → send.
//   The engine starts over (RFC 3207 §4.2: no EHLO, no transaction, STARTTLS not offered).
// - failed: the alert (if any) goes out, then the connection closes. Counted by reason.
// Memory: the SSL exists from the handshake to the end of the connection; its staging buffers
// are trimmed whenever the connection waits for input (inbound_connection.cc, pump()).
#include <fmt/format.h>

#include "inbound_internal.h"
#include "ringmta/core/assert.h"

namespace ringmta::server {

void connection::set_tls_stage(tls_stage next) noexcept {
  switch (next) {
    case tls_stage::off: RINGMTA_ASSERT(false); break;  // only open() resets a connection
    case tls_stage::starting: RINGMTA_ASSERT(tls_phase == tls_stage::off); break;
    case tls_stage::handshake:
      RINGMTA_ASSERT(tls_phase == tls_stage::starting ||
                     (tls_phase == tls_stage::off && implicit_tls));
      break;
    case tls_stage::active: RINGMTA_ASSERT(tls_phase == tls_stage::handshake); break;
    case tls_stage::failed:
      RINGMTA_ASSERT(tls_phase == tls_stage::handshake || tls_phase == tls_stage::active);
      break;
  }
  tls_phase = next;
}

smtp::verdict connection::on_starttls() noexcept {
  // Offered only with a certificate; a context can only be replaced, never removed.
  if (!server.tls_context()) return smtp::verdict::respond(454, "4.7.0", "TLS not available");
  return smtp::verdict::accept();  // 220 2.0.0; the engine discards what follows (RFC 3207)
}

std::string_view connection::held_view() const noexcept {
  const auto bytes = server.buffers().view(held_buffer, held_end);
  return {reinterpret_cast<const char*>(bytes.data()) + held_offset, held_end - held_offset};
}

void connection::take_held(std::size_t bytes) noexcept {
  held_offset += static_cast<std::uint32_t>(bytes);
  if (held_offset == held_end) release_held();
}

void connection::begin_tls() noexcept {
  auto context = settings->tls;  // the snapshot that offered STARTTLS (a reload may drop TLS)
  RINGMTA_ASSERT(context != nullptr);
  set_tls_stage(tls_stage::handshake);
  tls = tls::session::accept(std::move(context));
  if (!tls) {  // OpenSSL could not allocate: nothing sensible to say in plaintext any more
    server.metrics().tls_failures[static_cast<std::size_t>(tls::failure::internal)].add();
    return close();
  }
  // Received bytes are the handshake, not an early talker; an implicit listener's greeting
  // waits for the handshake (on_tls_established).
  if (_phase != inbound_phase::session) enter(inbound_phase::session);
  schedule(timer_purpose::tls_handshake, settings->timeout_tls_handshake_ms);
  pump();
}

// The TLS phases other than active decide the whole pump; true when they did.
bool connection::pump_tls() noexcept {
  if (tls_phase == tls_stage::off && session && session->awaiting_tls())
    set_tls_stage(tls_stage::starting);
  switch (tls_phase) {
    case tls_stage::off:
    case tls_stage::active:
      return false;
    case tls_stage::starting:
      if (!session->output().empty()) {  // the 220, in plaintext, before any TLS byte
        send_output();
        return true;
      }
      begin_tls();
      return true;
    case tls_stage::handshake:
      return pump_handshake();
    case tls_stage::failed:
      close();  // the alert went out already (pump sends pending ciphertext first)
      return true;
  }
  return false;
}

bool connection::pump_handshake() noexcept {
  while (holding && tls->state() == tls::state::handshake) {
    const std::size_t taken = tls->feed(held_view());
    take_held(taken);
    if (taken == 0) break;  // OpenSSL waits for its flight to be sent
  }
  if (tls->handshake_completed()) {  // (a peer may close in the flight that completes it)
    on_tls_established();
    pump();
    return true;
  }
  if (tls->state() != tls::state::handshake) {
    on_tls_failed();
    pump();
    return true;
  }
  if (tls_output_pending()) {
    send_output();
  } else if (!holding && !recv_armed && !waiting_for_spool) {
    arm_receive();
  }
  return true;
}

void connection::on_tls_established() noexcept {
  set_tls_stage(tls_stage::active);
  auto& metrics = server.metrics();
  metrics.tls_handshakes.add();
  if (tls->resumed()) metrics.tls_resumed.add();
  int algorithm_bits = 0;
  const int bits = tls->cipher_bits(&algorithm_bits);
  tls_summary = fmt::format("(using {} with cipher {} ({}/{} bits))", tls->protocol(),
                            tls->cipher(), bits, algorithm_bits);
  if (implicit_tls) {  // now the 220 greeting, encrypted (RFC 8314 §3.3)
    literal = settings->greeting;  // the phase is session since begin_tls
  } else {
    session->tls_established();  // RFC 3207 §4.2: forget everything, EHLO again
  }
  restart_timer();
}

void connection::on_tls_failed() noexcept {
  const tls::failure reason =
      tls->state() == tls::state::failed ? tls->error() : tls::failure::truncated;
  const bool during_handshake = tls_phase == tls_stage::handshake;
  set_tls_stage(tls_stage::failed);
  if (during_handshake) {
    server.metrics().tls_failures[static_cast<std::size_t>(reason)].add();
    server.log().set_time(server.host().wall_ms());
    server.log()
        .record("tls_failed")
        .field("client", envelope.client_address)
        .field("reason", tls::describe(reason))
        .field("detail", tls->error_detail());
  }
  if (session && !session->wants_close()) session->connection_lost();
  release_held();
}

void connection::tls_end_of_input() noexcept {
  if (tls_phase != tls_stage::handshake) return;
  tls->end_of_input();
  on_tls_failed();
}

// Plaintext the TLS session holds goes to the engine first, then more ciphertext is decrypted.
void connection::feed_held_tls() noexcept {
  while (!session->awaiting_verdict() && !session->wants_close()) {
    if (!server.spool_has_room()) return server.wait_for_spool(*this);
    if (tls_plaintext_pending()) {
      // At most a receive buffer per feed, as for plaintext sessions: that is what
      // spool_has_room() vouched for. A TLS record holds up to 16 KiB (RFC 8446 §5.1); with
      // smaller receive buffers (the simulator's) a whole record overran the room: 452.
      const std::size_t used =
          session->feed(tls->plaintext().substr(0, settings->receive_buffer_bytes));
      tls->consume_plaintext(used);
      if (used == 0) return;  // output full: the pump sends, then comes back
      continue;
    }
    if (!holding) return;
    const std::size_t taken = tls->feed(held_view());
    take_held(taken);
    if (tls->state() != tls::state::established) {
      on_tls_failed();  // a bad record, or close_notify: no more SMTP
      return;
    }
    if (taken == 0 && !tls_plaintext_pending()) return;
  }
}

// Encrypts what is due (a fixed reply, or the engine's replies), then sends ciphertext.
void connection::send_output_tls() noexcept {
  if (tls->established()) {
    if (!literal.empty()) {
      const std::size_t taken = tls->write(literal);
      log_rejections(literal.substr(0, taken));
      literal.remove_prefix(taken);
    } else if (session && !session->output().empty()) {
      const std::size_t taken = tls->write(session->output());
      log_rejections(session->output().substr(0, taken));
      session->consume_output(taken);
    }
  }
  const std::string_view out = tls->ciphertext();
  if (out.empty()) return close();  // nothing can be sent any more: the session failed
  send_bytes(out);  // queued ciphertext never moves (tls/session.h)
}

}  // namespace ringmta::server
