// One outgoing connection's TLS (RFC 3207): what a socket does about STARTTLS under the
// route's policy, the tls::session between the ring's bytes and the SMTP engine, what a
// failed handshake means under each policy, sending through the session, and a large body read
// from the spool and encrypted (splice cannot carry TLS). See outbound/outbound.h.
//
// Invariants: while tls_session exists every byte of the socket goes through it (the engine
// never sees ciphertext, the kernel never sees plaintext after the 220 to STARTTLS); one
// ciphertext send in flight, sent straight from the session's buffer (queued ciphertext never
// moves); plaintext is handed to the session only when established, so a failed or unverified
// handshake sends no byte of mail. Never: a blocking read (spool bytes come from the page cache
// with read_cached or from a ring read), a certificate file read (the CA store is in the
// client context, loaded at start-up).
#include <sys/uio.h>

#include <cerrno>

#include <fmt/format.h>

#include "outbound_internal.h"
#include "ringmta/core/assert.h"

namespace ringmta::outbound {

namespace {

// The name a certificate must carry: the MX or route host name, or an address literal's IP
// (RFC 6125 §6.2: IP SANs; session.cc sends no SNI for those).
std::string_view peer_name(std::string_view host) noexcept {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (host.size() > 5 && (host.substr(0, 5) == "IPv6:" || host.substr(0, 5) == "ipv6:")) {
      host.remove_prefix(5);
    }
  }
  return host;
}

smtp::client_tls_policy engine_policy(tls_intent intent, tls_policy wanted) noexcept {
  if (intent != tls_intent::starttls) return smtp::client_tls_policy::none;
  return wanted == tls_policy::opportunistic ? smtp::client_tls_policy::opportunistic
                                             : smtp::client_tls_policy::required;
}

}  // namespace

// ---- choosing, per socket

void connection::choose_tls(std::uint32_t index, bool plaintext_retry) noexcept {
  end_tls();
  auto& counters = server.counters();
  const bool have_context = server.config().tls_context != nullptr;
  if (tls_wanted == tls_policy::none ||
      (tls_wanted == tls_policy::opportunistic && !have_context)) {
    intent = tls_intent::none;
  } else if (plaintext_retry) {
    RINGMTA_ASSERT(tls_wanted == tls_policy::opportunistic);
    intent = tls_intent::retry_plain;  // tls_note still says why
    ++counters.tls_plaintext_retries;
  } else if (const std::string* why = tls_wanted == tls_policy::opportunistic
                                          ? server.tls_failure_remembered(
                                                candidates[index].address)
                                          : nullptr) {
    intent = tls_intent::remembered;
    tls_note = *why;
    ++counters.tls_plaintext_remembered;
  } else {
    intent = tls_intent::starttls;
  }
  if (intent == tls_intent::starttls || intent == tls_intent::none) tls_note.clear();
  session->reset(engine_policy(intent, tls_wanted), helo_name);
  session->set_auth(auth_for_session());
}

// The credentials go out under TLS that the policy demands (required, verify) or where the
// operator forced plaintext; with any other policy the session ends before AUTH and the mail
// waits (a relay host would refuse it unauthenticated, and a bounce would lose it).
smtp::client_auth connection::auth_for_session() const noexcept {
  smtp::client_auth out;
  if (!auth) return out;
  out.user = auth->user;
  out.password = auth->password;
  out.mode = auth_plaintext                    ? smtp::client_auth_mode::plaintext
             : tls_wanted == tls_policy::required || tls_wanted == tls_policy::verify
                 ? smtp::client_auth_mode::over_tls
                 : smtp::client_auth_mode::refused;
  return out;
}

void connection::set_tls_state(tls_state next) noexcept {
  switch (next) {
    case tls_state::plaintext: RINGMTA_ASSERT(false && "only end_tls() starts over"); break;
    case tls_state::handshake:
      RINGMTA_ASSERT(tls == tls_state::plaintext && tls_session != nullptr &&
                     intent == tls_intent::starttls);
      break;
    case tls_state::established: RINGMTA_ASSERT(tls == tls_state::handshake); break;
    case tls_state::failed:
      RINGMTA_ASSERT(tls == tls_state::handshake || tls == tls_state::established);
      break;
  }
  tls = next;
}

void connection::end_tls() noexcept {
  tls_session.reset();
  tls = tls_state::plaintext;
}

// ---- the handshake

// The server said 220 to STARTTLS: the ClientHello is queued in the session for pump_tls().
void connection::begin_tls() noexcept {
  RINGMTA_ASSERT(session->phase() == smtp::client_phase::tls_handshake);
  const auto& context = server.config().tls_context;
  if (!context) return session->tls_failed("TLS is not configured (no client context)");
  const candidate& to = candidates[current];
  const std::string_view name = peer_name(to.host_name);
  const bool verify = tls_wanted == tls_policy::verify;
  // Sessions resume only for the same server name and port, and a verified session only into
  // a verifying connection (a resumed handshake does not check the certificate again).
  const std::string key = fmt::format("{}{}:{}", verify ? "verify " : "", name,
                                      to.address.port());
  tls::client_options options;
  options.host = name;
  options.verify = verify;
  options.cache = &server.tls_cache();
  options.cache_key = key;
  options.now_s = server.wall_ms() / 1000;
  tls_session = tls::session::connect(context, options);
  if (!tls_session) return session->tls_failed("TLS: out of memory");
  set_tls_state(tls_state::handshake);
}

void connection::on_tls_established() noexcept {
  set_tls_state(tls_state::established);
  auto& counters = server.counters();
  ++counters.tls_handshakes;
  if (tls_session->resumed()) ++counters.tls_resumed;
  if (tls_session->peer_verified()) ++counters.tls_verified;
  if (session->tls_discarded_bytes() > 0) ++counters.tls_injections;
  if (tls_wanted == tls_policy::verify && !tls_session->peer_verified()) {
    // SSL_VERIFY_PEER fails such a handshake; this guards the policy, not OpenSSL.
    ++counters.tls_failures[static_cast<std::size_t>(tls::failure::certificate)];
    return fail_tls_handshake("TLS: the server's certificate was not verified");
  }
  session->tls_started();  // RFC 3207 §4.2: everything learnt before is forgotten; EHLO again
}

void connection::on_tls_failed() noexcept {
  const tls::failure why =
      tls_session->error() == tls::failure::none ? tls::failure::truncated : tls_session->error();
  const std::string_view detail = tls_session->error_detail();
  const candidate& to = candidates[current];
  std::string text =
      why == tls::failure::certificate
          ? fmt::format("TLS handshake failed: certificate of {} not verified: {}",
                        peer_name(to.host_name), detail)
          : fmt::format("TLS handshake failed ({}): {}", tls::describe(why),
                        detail.empty() ? "no reason given" : detail);
  ++server.counters().tls_failures[static_cast<std::size_t>(why)];
  fail_tls_handshake(text);
}

// Hands the failure to the engine, which closes the session (no QUIT: nothing may follow
// STARTTLS in plaintext); on_session_closed() then decides what comes next. The caller counted
// the reason.
void connection::fail_tls_handshake(std::string_view text) noexcept {
  if (session->tls_discarded_bytes() > 0) ++server.counters().tls_injections;
  set_tls_state(tls_state::failed);
  session->tls_failed(text);
  process_events();
}

// Opportunistic TLS, as operators expect (Postfix does the same): a server whose handshake
// fails gets the message in plaintext on a second connection, and is remembered so that the
// next connections do not fail the same way first. Never for required or verify.
bool connection::retry_in_plaintext(const smtp::client_event& event) noexcept {
  if (event.close_reason != smtp::client_close_reason::tls_failed ||
      intent != tls_intent::starttls || tls_wanted != tls_policy::opportunistic) {
    return false;
  }
  tls_note.assign(event.reply->text());
  server.remember_tls_failure(candidates[current].address, tls_note);
  return true;
}

// ---- receiving: ciphertext in, plaintext to the engine

bool connection::feed_tls(std::string_view& chunk) noexcept {
  const std::uint32_t owner_generation = generation;
  const auto gone = [&] {
    return generation != owner_generation || !connected(_phase) ||
           session->phase() == smtp::client_phase::closed;
  };
  const std::size_t taken = tls_session->feed(chunk);
  chunk.remove_prefix(taken);
  if (tls == tls_state::handshake) {
    if (tls_session->state() == tls::state::handshake) return taken > 0;
    if (tls_session->state() != tls::state::established) {
      on_tls_failed();
      return false;
    }
    on_tls_established();
    if (gone()) return false;
  }
  for (;;) {  // the engine takes every reply unless an event is pending (process_events)
    const std::string_view plain = tls_session->plaintext();
    if (plain.empty()) break;
    const std::size_t used = session->feed(plain);
    tls_session->consume_plaintext(used);
    process_events();
    if (gone()) return false;
    if (used == 0 && !session->event_pending()) return false;
    if (tls_session->plaintext().empty()) tls_session->feed({});  // what OpenSSL still holds
  }
  if (tls_session->state() == tls::state::established) return taken > 0;
  // close_notify, or a fatal alert or a bad record after the handshake: the connection is lost
  // (what was undecided is deferred by the engine).
  if (tls_session->state() == tls::state::failed) set_tls_state(tls_state::failed);
  session->on_peer_closed();
  process_events();
  return false;
}

// ---- sending: plaintext into the session, ciphertext out

void connection::pump_tls() noexcept {
  if (send_in_flight) return;
  if (tls == tls_state::established && !encrypt_pending()) return;
  if (!tls_session->ciphertext().empty()) {
    if (!send_ciphertext()) process_events();
    return;
  }
  if (body.step_in_flight) return;  // a spool read is on its way
  if (tls == tls_state::established && body.phase() == body_phase::wanted &&
      body.how == body_progress::path::none) {
    return start_body();
  }
  if (session->phase() == smtp::client_phase::closed) end_socket();
}

// Moves what is due into the session, in order: staged bytes (commands, a small body, a BDAT
// chunk), the engine's next output, the large body's next bytes. Stops when the session's
// ciphertext buffer is full. False when the connection failed meanwhile.
bool connection::encrypt_pending() noexcept {
  for (;;) {
    if (tls_session->state() != tls::state::established) {
      // A write failed, or the server's close_notify came: nothing more can be sent.
      set_tls_state(tls_state::failed);
      staged_begin = staged_end = 0;
      if (session->phase() == smtp::client_phase::closed) return true;  // pump_tls closes
      session->on_peer_closed();
      process_events();
      return false;
    }
    if (staged_end > staged_begin) {
      staged_begin += static_cast<std::uint32_t>(tls_session->write(
          std::string_view(staging.get() + staged_begin, staged_end - staged_begin)));
      if (staged_begin < staged_end) {
        if (tls_session->state() != tls::state::established) continue;
        return true;  // the ciphertext buffer is full: send first
      }
      staged_begin = staged_end = 0;
      if (body.how == body_progress::path::staged ||
          body.how == body_progress::path::chunk_sending) {
        body.how = body_progress::path::none;  // in the session: staging is free again
      }
      continue;
    }
    if (body.how == body_progress::path::chunk_ready && session->chunk_due()) {
      stage_chunk();
      continue;
    }
    if (!session->output().empty()) {
      stage_output();
      continue;
    }
    if (body.how == body_progress::path::encrypted) {
      if (encrypt_body()) continue;
      if (tls_session->state() != tls::state::established) continue;
    }
    return true;
  }
}

bool connection::send_ciphertext() noexcept {
  const std::string_view out = tls_session->ciphertext();
  return queue_send(out.data(), static_cast<std::uint32_t>(out.size()));
}

void connection::on_ciphertext_sent(const io::completion& done) noexcept {
  if (done.res < 0) {  // EPIPE, ECONNRESET: nothing queued can go out any more
    staged_begin = staged_end = 0;
    session->on_peer_closed();
    process_events();
    return pump();
  }
  tls_session->consume_ciphertext(static_cast<std::size_t>(done.res));
  restart_timer();  // RFC 5321 §4.5.3.2.5: per block moved
  pump();
}

// ---- a large body over TLS: spool -> pooled buffer -> session

// Hands the buffer's bytes to the session; refills it when empty. True when it made progress.
bool connection::encrypt_body() noexcept {
  transfer_pool::slot& buffer = server.transfers().at(body.transfer);
  if (body.buffer_sent < body.buffer_filled) {
    const std::size_t taken = tls_session->write(std::string_view(
        buffer.buffer.get() + body.buffer_sent, body.buffer_filled - body.buffer_sent));
    body.buffer_sent += static_cast<std::uint32_t>(taken);
    server.counters().body_bytes += taken;
    return taken > 0;
  }
  if (body.step_in_flight) return false;
  body.buffer_filled = body.buffer_sent = 0;
  if (next_bytes(job, body)) {
    encrypted_read_step();
    return body.buffer_filled > 0;  // from the page cache at once
  }
  // Every byte is in the session: the engine's ".CRLF" follows in the same stream.
  release_transfer(true);
  body.how = body_progress::path::none;
  body.enter(body_phase::sent);
  session->body_sent();
  return true;
}

// The next piece of the body into the buffer: from the page cache at once when it is there
// (the message was usually written a moment ago), else a ring read; never a blocking read.
void connection::encrypted_read_step() noexcept {
  transfer_pool::slot& buffer = server.transfers().at(body.transfer);
  const spool::body_slice& piece = job.body[body.slice];
  const auto length = static_cast<std::uint32_t>(std::min<std::uint64_t>(
      piece.length - body.slice_done, server.transfers().buffer_bytes()));
  const auto got = read_body_bytes(buffer.buffer.get(), length);
  if (!got) return server.defer(*this);  // pump() tries again at the end of the iteration
  if (got.value() > 0) body.buffer_filled = static_cast<std::uint32_t>(got.value());
}

// ---- what delivery records say

const tls_outcome& connection::describe_tls() noexcept {
  tls_outcome& t = tls_report;
  t = tls_outcome{};
  switch (intent) {
    case tls_intent::none: t.mode = tls_mode::none_by_policy; break;
    case tls_intent::retry_plain:
    case tls_intent::remembered:
      t.mode = tls_mode::fallback;
      t.detail = tls_note;
      break;
    case tls_intent::starttls:
      if (tls != tls_state::established) {
        t.mode = session->extensions().starttls ? tls_mode::refused : tls_mode::not_offered;
        break;
      }
      t.mode = tls_mode::encrypted;
      t.protocol = tls_session->protocol();
      t.cipher = tls_session->cipher();
      t.cipher_bits = tls_session->cipher_bits();
      t.verified = tls_session->peer_verified();
      t.resumed = tls_session->resumed();
      break;
  }
  return t;
}

// ---- the per-shard memory of servers whose handshake failed (opportunistic)

void outbound_server::remember_tls_failure(const core::endpoint& address,
                                           std::string_view why) noexcept {
  const auto now = static_cast<std::int64_t>(now_ms());
  if (_tls_failures.size() >= std::max<std::uint32_t>(1, _config.tls_plaintext_memory_entries)) {
    std::erase_if(_tls_failures, [&](const auto& entry) { return entry.second.until_ms <= now; });
    if (_tls_failures.size() >= _config.tls_plaintext_memory_entries) {
      _tls_failures.erase(_tls_failures.begin());  // bounded: an arbitrary one goes
    }
  }
  _tls_failures[address.to_string()] =
      tls_failure_note{now + _config.tls_plaintext_memory_ms, std::string(why)};
}

const std::string* outbound_server::tls_failure_remembered(const core::endpoint& address) noexcept {
  if (_tls_failures.empty()) return nullptr;
  const auto found = _tls_failures.find(address.to_string());
  if (found == _tls_failures.end()) return nullptr;
  if (found->second.until_ms <= static_cast<std::int64_t>(now_ms())) {
    _tls_failures.erase(found);
    return nullptr;
  }
  return &found->second.why;
}

}  // namespace ringmta::outbound
