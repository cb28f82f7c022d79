// One inbound SMTP session over a shard::host (its ring ops, timers and clock): receive → feed →
// send, the spool path from DATA to the 250, timeouts, PROXY header, early talkers, and
// closing. See server/inbound.h and server/inbound_sessions.h.
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "inbound_internal.h"
#include "ringmta/core/assert.h"
#include "ringmta/net/proxy_protocol.h"
#include "ringmta/net/received_header.h"

namespace ringmta::server {

namespace {

constexpr std::string_view storage_text = "Insufficient system storage, try again later";
constexpr std::string_view early_talker_reply =
    "554 5.5.0 SMTP protocol violation: data sent before the greeting\r\n";
constexpr std::string_view client_limit_reply =
    "421 4.7.0 Too many connections from your address, try again later\r\n";
constexpr std::uint32_t hard_close_ms = 5000;

spool::body_type to_spool(smtp::body_type type) noexcept {
  switch (type) {
    case smtp::body_type::seven_bit: return spool::body_type::seven_bit;
    case smtp::body_type::eight_bit_mime: return spool::body_type::eight_bit_mime;
    case smtp::body_type::binary_mime: return spool::body_type::binary_mime;
    case smtp::body_type::unspecified: break;
  }
  return spool::body_type::unspecified;
}

spool::dsn_return to_spool(smtp::dsn_return ret) noexcept {
  switch (ret) {
    case smtp::dsn_return::full: return spool::dsn_return::full;
    case smtp::dsn_return::headers: return spool::dsn_return::headers;
    case smtp::dsn_return::unspecified: break;
  }
  return spool::dsn_return::unspecified;
}

}  // namespace

connection::connection(inbound_server& owner_server, std::uint32_t slot_index) noexcept
    : server(owner_server), slot(slot_index), deadline(owner_server.deadlines()) {}

// ---- the phase: one writer, legal transitions only, invariants around every step

void connection::enter(inbound_phase next) noexcept {
  RINGMTA_ASSERT(legal_transition(_phase, next));
  _phase = next;
}

void connection::check_invariants() const noexcept {
  using p = inbound_phase;
  // Every op flag is an SQE in flight, counted in ops_in_flight.
  RINGMTA_ASSERT(ops_in_flight >= unsigned{recv_armed} + unsigned{send_in_flight});
  switch (_phase) {
    case p::free:
      RINGMTA_ASSERT(fd < 0 && ops_in_flight == 0 && !holding && !in_message && ticket == 0);
      return;
    case p::accepted:  // taken by acquire(); open() brings the socket (load is checked between)
      RINGMTA_ASSERT(ops_in_flight == 0 && !holding && !in_message);
      return;
    case p::proxy:
    case p::greeting_delay:  // nothing said yet, nothing taken as SMTP
      RINGMTA_ASSERT(fd >= 0 && !send_in_flight && !holding && !in_message);
      return;
    case p::session:
      RINGMTA_ASSERT(fd >= 0);
      return;
    case p::refusing:
      RINGMTA_ASSERT(fd >= 0 && !in_message);
      return;
    case p::closing:  // close() let go of the input, the message and its commit
      RINGMTA_ASSERT(fd >= 0 && !holding && !in_message && !commit_retry && ticket == 0);
      return;
    case p::closed:
      RINGMTA_ASSERT(!recv_armed && !send_in_flight && !holding && !in_message);
      return;
  }
}

// ---- opening, greeting, PROXY header

void connection::open(int accepted_fd, const core::endpoint& peer_address, bool) noexcept {
  settings = server.current();  // this session's configuration until it ends (reload)
  const auto& config = *settings;
  deadline = session_deadline({config.timeout_command_ms, config.timeout_data_block_ms,
                               config.min_data_rate_bytes, config.timeout_under_load_ms});
  fd = accepted_fd;
  peer = peer_address;
  session_id = server.next_session_id();
  opened_ms = server.host().wall_ms();
  messages_accepted = 0;
  end_reason = nullptr;
  rejection_detail.clear();
  recv_armed = send_in_flight = false;
  waiting_for_spool = holding = in_message = commit_retry = false;
  literal = {};
  message_error = 0;
  ops_in_flight = 0;
  seen_progress = 0;
  proxy_reader.reset();
  tls_phase = tls_stage::off;  // implicit_tls was set by the listener that accepted us
  tls.reset();
  tls_summary.clear();  // else a plaintext session's Received: names the slot's last TLS
  sasl.reset();
  login.clear();
  auth_held.reset();
  auth_failures = 0;
  auth_mechanism = {};
  xclient_address_unknown = false;
  xclient_helo.clear();
  client_name.clear();
  if (config.proxy_protocol) enter(inbound_phase::proxy);
  if (_phase == inbound_phase::proxy && !proxy_peer_trusted()) {
    // Anyone else could claim an address inside mynetworks and relay anywhere.
    server.metrics().proxy_untrusted.add();
    log_connect();
    return close("PROXY connection from an untrusted peer (not in proxy_trusted)");
  }
  if (_phase == inbound_phase::proxy) {  // policy waits for the client's address in the header
    arm_receive();
    schedule(timer_purpose::proxy_header, config.timeout_proxy_header_ms);
    return;
  }
  admit();
}

bool connection::proxy_peer_trusted() const noexcept {
  const auto& trusted = settings->proxy_trusted;
  return std::any_of(trusted.begin(), trusted.end(), [&](const core::cidr& range) {
    return range.contains(peer.sockaddr_pointer());
  });
}

// Applies the per-client limit and relay rights for `peer`, then greets (or delays).
void connection::admit() noexcept {
  const auto& config = *settings;
  log_connect();
  if (!config.clients->try_add(peer, config.sessions_per_client_max)) {
    server.metrics().connections_refused_client_limit.add();
    return send_literal_and_close(client_limit_reply, "client limit");
  }
  counted_client = true;
  counted_peer = peer;
  relay_allowed = config.relay.client_may_relay(peer);
  envelope.client_address = peer.address_string();  // once: every message's Received/envelope
  if (implicit_tls) return begin_tls();  // RFC 8314 §3.3: the handshake comes first
  if (config.greeting_delay_ms > 0) {  // a client that talks first is not a real MTA
    enter(inbound_phase::greeting_delay);
    arm_receive();
    schedule(timer_purpose::greeting_delay, config.greeting_delay_ms);
    return;
  }
  greet();
}

// The greeting is a fixed text, sent without a session: an idle connection costs only this
// small struct, and the ~12 KiB protocol engine is created when the client first speaks.
void connection::greet() noexcept {
  literal = settings->greeting;
  enter(inbound_phase::session);
  restart_timer();
  pump();
}

void connection::ensure_session() noexcept {
  if (session) return;
  const auto& config = *settings;
  std::span<char> auth_storage;
  if (config.auth_credentials) {  // AUTH offered: its lines may be long (RFC 4954 §4)
    const std::size_t bytes = config.engine.limits.auth_line_bytes_max;
    if (!auth_line_storage) auth_line_storage = std::make_unique<char[]>(auth_line_bytes_max);
    auth_storage = {auth_line_storage.get(), std::min<std::size_t>(bytes, auth_line_bytes_max)};
  }
  session = std::make_unique<smtp::server_session>(
      implicit_tls              ? config.engine_implicit_tls
      : auth_plaintext_allowed() ? config.engine_plain_auth
                                 : config.engine,
      *this, auth_storage);
  session->offer_xclient(xclient_peer_trusted());
  session->start();
  RINGMTA_ASSERT(session->output() == settings->greeting);  // the one the client already has
  session->consume_output(session->output().size());
}

// Parses the PROXY header from what arrived; true once the session can start.
bool connection::take_proxy_header(std::string_view bytes) noexcept {
  const auto result = proxy_reader.feed(bytes);
  if (result.status == net::proxy_status::need_more) return false;
  if (result.status == net::proxy_status::invalid) {
    close("bad PROXY header");
    return false;
  }
  if (result.has_addresses) peer = result.source;  // the phase moves on: refusing or admitted
  const std::size_t rest = proxy_reader.trailing_bytes();
  proxy_reader.reset();
  if (rest > 0) {  // SMTP bytes behind the header: the client spoke before our greeting
    server.metrics().early_talkers.add();
    log_connect();
    send_literal_and_close(early_talker_reply, "early talker");
    return false;
  }
  admit();
  return true;
}

// ---- the pump: feed held input, send replies, re-arm the receive

void connection::pump() noexcept {
  if (ending()) return finish_close();
  if (send_in_flight) return;  // the session's output buffer must not move under the kernel
  if (!literal.empty() || tls_output_pending()) return send_output();
  if (_phase == inbound_phase::refusing) return close();
  if (pump_tls()) return;  // STARTTLS's 220, the handshake, a TLS failure
  // The PROXY header is read before any greeting: a receive that ended with -ENOBUFS (every
  // buffer held) is re-armed here once retry_waiting finds buffers back. Without it the
  // connection waited for its header timeout and was closed unserved (ringmta-sim seed
  // 124724684777224: a burst of 46 accepts after an accept pause, 16 receive buffers).
  if (_phase == inbound_phase::proxy) {
    if (!recv_armed && !waiting_for_spool) arm_receive();
    return;
  }
  if (!greeted(_phase)) return;
  if (server.shutting_down() && idle()) return shutdown_now();  // its transaction is over
  if (holding || tls_plaintext_pending()) ensure_session();
  if (!session) {  // greeted, nothing received yet
    if (!recv_armed && !waiting_for_spool) arm_receive();
    return;
  }
  if (commit_retry) retry_commit();
  if (holding || tls_plaintext_pending()) feed_held();
  if (!session->output().empty() || tls_output_pending()) return send_output();
  if (session->wants_close()) return close("session ended (QUIT or 421)");
  if (!holding && !recv_armed && !waiting_for_spool && !tls_plaintext_pending()) {
    if (tls) tls->trim();  // idle: the TLS staging buffers go back
    arm_receive();
  }
}

void connection::feed_held() noexcept {
  if (tls_phase == tls_stage::active) return feed_held_tls();
  while (holding && !session->awaiting_verdict() && !session->wants_close()) {
    if (!server.spool_has_room()) return server.wait_for_spool(*this);
    const auto bytes = server.buffers().view(held_buffer, held_end);
    const std::string_view input(reinterpret_cast<const char*>(bytes.data()) + held_offset,
                                 held_end - held_offset);
    const std::size_t consumed = session->feed(input);
    held_offset += static_cast<std::uint32_t>(consumed);
    if (held_offset == held_end) release_held();
    if (consumed == 0) return;  // output full, or waiting for TLS: the pump continues later
  }
}

void connection::release_held() noexcept {
  if (!holding) return;
  holding = false;
  server.buffers().recycle(held_buffer);
}

void connection::arm_receive() noexcept {
  const auto queued = server.host().io().prep_recv_select(
      fd, server.buffers().group_id(), server.user_data(server.recv_kind(), *this));
  if (!queued) return close();
  recv_armed = true;
  ++ops_in_flight;
}

void connection::send_output() noexcept {
  if (tls) return send_output_tls();
  send_bytes(literal.empty() ? session->output() : literal);
}

// One send in flight; `bytes` must stay in place until on_sent().
void connection::send_bytes(std::string_view bytes) noexcept {
  const auto queued = server.host().io().prep_send(
      fd, bytes.data(), static_cast<std::uint32_t>(bytes.size()),
      server.user_data(server.send_kind(), *this));
  if (!queued) return close();
  send_in_flight = true;
  ++ops_in_flight;
}

void connection::send_literal_and_close(std::string_view reply, const char* reason) noexcept {
  if (end_reason == nullptr) end_reason = reason;
  literal = reply;
  enter(inbound_phase::refusing);
  pump();
}

void connection::on_received(const io::completion& done) noexcept {
  recv_armed = false;
  --ops_in_flight;
  std::string_view bytes;
  if (done.has_buffer()) {
    const auto span = server.buffers().consume(done);
    bytes = {reinterpret_cast<const char*>(span.data()), span.size()};
  }
  if (done.res == -ENOBUFS) {  // every receive buffer is held: try again once some come back
    server.buffers().note_enobufs();
    return server.wait_for_buffer(*this);
  }
  if (ending() || done.res <= 0) {  // EOF, reset, or our own shutdown
    if (done.has_buffer()) server.buffers().recycle(done.buffer_id());
    if (!ending() && tls) tls_end_of_input();
    if (!ending() && session) session->connection_lost();
    return close(done.res == 0 ? "client closed" : "receive failed");
  }
  const std::uint16_t buffer_id = done.buffer_id();
  if (_phase == inbound_phase::proxy) {
    take_proxy_header(bytes);
    server.buffers().recycle(buffer_id);
    // The header came in pieces: read on (pump() arms receives only once we have greeted).
    if (_phase == inbound_phase::proxy && !recv_armed) arm_receive();
    return pump();
  }
  if (!greeted(_phase)) {  // data during the greeting delay
    server.buffers().recycle(buffer_id);
    server.metrics().early_talkers.add();
    return send_literal_and_close(early_talker_reply, "early talker");
  }
  RINGMTA_ASSERT(!holding);
  holding = true;
  held_buffer = buffer_id;
  held_offset = 0;
  held_end = static_cast<std::uint32_t>(bytes.size());
  pump();
  note_received(bytes.size());
}

void connection::on_sent(const io::completion& done) noexcept {
  send_in_flight = false;
  --ops_in_flight;
  if (done.res < 0 || ending()) {
    if (!ending() && session) session->connection_lost();
    return close("send failed");
  }
  const auto sent = static_cast<std::size_t>(done.res);
  if (tls) {
    tls->consume_ciphertext(sent);  // plaintext was consumed (and logged) when encrypted
    return pump();
  }
  log_rejections((literal.empty() ? session->output() : literal).substr(0, sent));
  if (!literal.empty()) literal.remove_prefix(sent);
  else session->consume_output(sent);
  pump();
}

// ---- timers

void connection::schedule(timer_purpose purpose, std::uint32_t delay_ms) noexcept {
  auto& timers = server.host().timers();
  if (timer.armed()) timers.cancel(timer);
  timer_use = purpose;
  timers.schedule_after(timer, delay_ms);
}

// A command is due (after the greeting): session_deadline.h has the rules.
void connection::restart_timer() noexcept {
  if (tls_phase == tls_stage::handshake) return;  // the handshake has one deadline, not per read
  schedule_deadline(deadline.expect_command(server.host().now_ms(), server.loaded()));
}

// After received bytes were fed: a completed command or message sets a new deadline, message
// octets extend it by the minimum data rate, a partial command line extends nothing.
void connection::note_received(std::uint64_t bytes) noexcept {
  if (_phase != inbound_phase::session) return;
  if (tls_phase == tls_stage::handshake) return;  // the handshake has one deadline, not per read
  if (session && session->wants_close()) return;  // the hard-close timer runs
  const std::uint64_t progress = session ? session->progress() : 0;
  const bool in_data = session && session->in_message();
  schedule_deadline(deadline.received(server.host().now_ms(), bytes, in_data,
                                      progress != seen_progress, server.loaded()));
  seen_progress = progress;
}

void connection::apply_load() noexcept {
  if (_phase != inbound_phase::session) return;
  if (session && session->wants_close()) return;
  if (timer_use != timer_purpose::command && timer_use != timer_purpose::data_block) return;
  schedule_deadline(deadline.shorten(server.host().now_ms(), true));
}

void connection::schedule_deadline(std::uint64_t deadline_ms) noexcept {
  const std::uint64_t now = server.host().now_ms();
  const bool data = session && session->in_message();
  schedule(data ? timer_purpose::data_block : timer_purpose::command,
           static_cast<std::uint32_t>(deadline_ms > now ? deadline_ms - now : 0));
}

bool connection::idle() const noexcept {
  if (_phase != inbound_phase::session || in_message) return false;
  return !session || session->idle();
}

void connection::on_timeout() noexcept {
  const step_guard checked(*this);
  switch (timer_use) {
    case timer_purpose::greeting_delay:  // stale once an early talker is being refused
      if (_phase == inbound_phase::greeting_delay) greet();
      return;
    case timer_purpose::proxy_header:
      return close("no PROXY header");
    case timer_purpose::hard_close:
      return close("not reading");
    case timer_purpose::auth_delay:
      return answer_auth();
    case timer_purpose::tls_handshake:  // no SMTP reply can be sent inside a handshake
      server.metrics().tls_timeouts.add();
      return close("TLS handshake timeout");
    case timer_purpose::command:
    case timer_purpose::data_block:
      break;
  }
  server.metrics().timeouts.add();
  if (end_reason == nullptr) end_reason = "timeout";
  // RFC 5321 §4.5.3.2: 421 and close. If the client does not even read that, close hard.
  schedule(timer_purpose::hard_close, hard_close_ms);
  ensure_session();
  session->on_timeout();
  pump();
}

void connection::shutdown_now() noexcept {
  if (ending() || _phase == inbound_phase::refusing) return;
  schedule(timer_purpose::hard_close, hard_close_ms);
  if (end_reason == nullptr) end_reason = "shutdown";
  if (!greeted(_phase) || tls_phase == tls_stage::handshake) return close();
  ensure_session();
  session->shutdown();
  pump();
}

// ---- closing

void connection::close(const char* reason) noexcept {
  if (end_reason == nullptr) end_reason = reason;
  if (!ending()) {
    enter(inbound_phase::closing);
    if (timer.armed()) server.host().timers().cancel(timer);
    release_held();
    if (in_message) {
      server.store().abort(message);
      in_message = false;
    }
    commit_retry = false;
    if (ticket != 0) server.orphan(*this);  // durable or not, the spool decides without us
    ticket = 0;
    auth_held.reset();
    sasl.reset();
    // Ends a pending receive or a send to a client that stopped reading (they complete with
    // 0 / -EPIPE); the fd itself is closed through the ring once no op refers to it.
    server.host().descriptors().shutdown(fd, SHUT_RDWR);
  }
  finish_close();
}

void connection::finish_close() noexcept {
  if (ops_in_flight > 0 || _phase == inbound_phase::closed) return;
  enter(inbound_phase::closed);
  const auto queued =
      server.host().io().prep_close(fd, server.user_data(server.close_kind(), *this));
  if (!queued) {
    server.host().descriptors().close(fd);
    return on_closed();
  }
  ++ops_in_flight;
}

void connection::on_closed() noexcept {
  if (ops_in_flight > 0) --ops_in_flight;
  fd = -1;
  log_disconnect();
  server.release(*this);
}

// ---- log records: connect, disconnect, every rejection

void connection::log_connect() noexcept {
  auto& log = server.log();
  log.set_time(server.host().wall_ms());
  log.record("connect")
      .hex_field("session", session_id)
      .field("client", peer.to_chars(client_text, sizeof client_text))
      .field("shard", server.shard_id());
}

void connection::log_disconnect() noexcept {
  auto& log = server.log();
  const std::int64_t now_ms = server.host().wall_ms();
  log.set_time(now_ms);
  log.record("disconnect")
      .hex_field("session", session_id)
      .field("client", peer.to_chars(client_text, sizeof client_text))
      .field("reason", end_reason != nullptr ? end_reason : "closed")
      .field("messages", messages_accepted)
      .seconds_field("duration", now_ms - opened_ms);
}

// Every 4xx/5xx reply that went out (the protocol engine's, ours, fixed ones) is a rejection
// and gets a record with the reply as its reason. Replies are whole lines in practice; a line
// split by a partial send is not recognized (a rejection's record may then be missing).
void connection::log_rejections(std::string_view sent) noexcept {
  while (!sent.empty()) {
    const auto end = sent.find("\r\n");
    if (end == std::string_view::npos) return;
    const auto line = sent.substr(0, end);
    sent.remove_prefix(end + 2);
    if (line.size() < 4 || (line[0] != '4' && line[0] != '5') || line[3] != ' ') continue;
    auto& log = server.log();
    log.set_time(server.host().wall_ms());
    auto record = log.record("rejected");
    record.hex_field("session", session_id)
        .field("client", peer.to_chars(client_text, sizeof client_text))
        .field("reply", line);
    if (!rejection_detail.empty()) record.field("detail", rejection_detail);
    record.end();
    rejection_detail.clear();
  }
}

// ---- the SMTP transaction (smtp::server_handler)

smtp::verdict connection::on_helo(std::string_view, bool) noexcept {
  return smtp::verdict::accept();
}

smtp::verdict connection::on_mail_from(const smtp::mailbox& reverse_path,
                                       const smtp::mail_parameters& parameters) noexcept {
  if (auto refused = check_sender(reverse_path)) return *refused;
  envelope.reverse_path.assign(reverse_path.address);
  envelope.size_declared = parameters.has_size ? parameters.size : 0;
  envelope.body = to_spool(parameters.body);
  envelope.smtputf8 = parameters.smtputf8;
  // Mail from outside mynetworks, unauthenticated, may carry a forged sender: a DSN to it
  // returns the headers only (RET=HDRS forced, also for the next hop), never the body.
  envelope.ret = relay_allowed || session->authenticated() ? to_spool(parameters.ret)
                                                           : spool::dsn_return::headers;
  envelope.envid.assign(parameters.envid);
  envelope.recipients.clear();
  return smtp::verdict::accept();
}

smtp::verdict connection::on_rcpt_to(const smtp::mailbox& forward_path,
                                     const smtp::rcpt_parameters& parameters) noexcept {
  auto& metrics = server.metrics();
  const auto& config = *settings;  // relay domains and recipients reload with the session's
  // RFC 5321 §3.6.2 / §4.5.1: only our clients relay; anyone may write to our domains and to
  // postmaster; our own names have no other mailbox (recipient_policy.h).
  const recipient_decision decision =
      config.recipients.decide(forward_path, relay_allowed || session->authenticated(),
                               config.relay);
  switch (decision.verdict) {
    case recipient_verdict::accept:
      break;
    case recipient_verdict::relay_denied:
      metrics.relay_denied.add();
      rejection_detail.assign(forward_path.address);  // the `rejected` record names it
      return smtp::verdict::respond(554, "5.7.1", "Relay access denied");
    case recipient_verdict::no_mailbox:
      metrics.recipients_unknown.add();
      rejection_detail.assign(forward_path.address);
      return smtp::verdict::respond(550, "5.1.1", "No such user here: this host relays only");
    case recipient_verdict::no_postmaster:
      metrics.recipients_unknown.add();
      rejection_detail.assign(forward_path.address);
      return smtp::verdict::respond(550, "5.1.1", "No postmaster mailbox configured here");
  }
  // Duplicates are answered 250 and delivered once (smtp::same_mailbox: domain without case).
  for (const auto& earlier : envelope.recipients) {
    if (smtp::same_mailbox(earlier.address, decision.address)) {
      metrics.recipients_duplicate.add();
      return smtp::verdict::accept();
    }
  }
  auto& added = envelope.recipients.emplace_back();
  added.address.assign(decision.address);
  added.notify = parameters.notify;
  added.orcpt.clear();
  if (!parameters.orcpt.empty()) {
    added.orcpt.append(parameters.orcpt_type).append(";").append(parameters.orcpt);
  }
  metrics.recipients_accepted.add();
  return smtp::verdict::accept();
}

smtp::verdict connection::on_data_start() noexcept {
  const std::int64_t now_seconds = server.host().wall_ms() / 1000;
  auto handle = server.store().begin(now_seconds);
  if (!handle) {
    server.metrics().spool_failures.add();
    return smtp::verdict::respond(452, "4.3.1", storage_text);
  }
  message = handle.value();
  in_message = true;
  message_error = 0;
  message_bytes = 0;
  envelope.id = server.store().id_of(message);
  envelope.received_seconds = now_seconds;
  const auto id_text = spool::format_message_id(envelope.id);
  char header[net::received_header_bytes_max];
  // One source for the header's "with" and the log record's "protocol" (RFC 3848, RFC 6531
  // §3.7.3): taken once, while the transaction (and its SMTPUTF8) is current.
  message_protocol = session->protocol_name();
  const net::received_fields fields{
      helo_for_records(), envelope.client_address, settings->hostname,
      message_protocol,
      std::string_view(id_text.data(), 16),
      envelope.recipients.size() == 1 ? std::string_view(envelope.recipients[0].address)
                                      : std::string_view(),
      now_seconds, tls_summary, envelope.smtputf8};
  // Spooled with the first body bytes: one record (and one read at delivery) for both, as other
  // sessions' appends cannot come in between.
  received_header.assign(header, net::format_received_header(fields, header, sizeof header));
  header_walk.reset();
  pool.clear();
  dkim_begin();
  return smtp::verdict::accept();
}

void connection::on_body(std::string_view slice, smtp::body_form form) noexcept {
  if (message_error != 0 || !in_message) return;
  if (!received_header.empty()) {
    spool_bytes(received_header, smtp::body_form::wire);
    received_header.clear();
  }
  // X-Ringmta-Pool never leaves: neither the spool nor the signature sees it (egress.h). The
  // same walk counts the Received: fields.
  header_walk.feed(slice, [&](std::string_view kept) {
    dkim_feed(kept, form);
    spool_bytes(kept, form);
  });
}

void connection::spool_bytes(std::string_view slice, smtp::body_form form) noexcept {
  if (message_error != 0) return;
  auto& store = server.store();
  const auto taken = form == smtp::body_form::wire ? store.append(message, slice)
                                                   : store.append_raw(message, slice);
  if (!taken) message_error = taken.error();
  else if (taken.value() < slice.size()) {  // room was checked: a bug
    message_error = ENOBUFS;
    server.metrics().spool_short_appends.add();
  }
  message_bytes += slice.size();
}

smtp::verdict connection::on_data_end(const smtp::body_summary& summary) noexcept {
  data_end_ns = server.host().precise_ns();
  // The body type records what the content is, not only what the client declared: "7bit" means
  // no octet above 127 arrived (so an SMTPUTF8 message has UTF-8 in its addresses only, which
  // lets delivery use A-label domains to a server without SMTPUTF8: outbound/delivery.cc).
  if (!summary.eight_bit && envelope.body == spool::body_type::unspecified)
    envelope.body = spool::body_type::seven_bit;
  else if (summary.eight_bit && envelope.body == spool::body_type::seven_bit)
    envelope.body = spool::body_type::unspecified;  // a client's BODY=7BIT was not true
  if (!received_header.empty()) on_body({}, smtp::body_form::wire);  // an empty body
  header_walk.finish([&](std::string_view kept) {
    dkim_feed(kept, smtp::body_form::wire);  // a line start held back: never starts with '.'
    spool_bytes(kept, smtp::body_form::wire);
  });
  choose_pool();
  if (message_error != 0) {
    server.store().abort(message);
    in_message = false;
    server.metrics().spool_failures.add();
    return smtp::verdict::respond(452, "4.3.1", storage_text);
  }
  // RFC 5321 §6.3 asks for a threshold of "at least 100 Received entries": a message may
  // arrive with hops_max of them (ours makes hops_max + 1); one more is taken for a loop.
  const std::uint32_t hops = header_walk.received_fields();
  if (hops > settings->hops_max) {
    server.store().abort(message);
    in_message = false;
    server.metrics().messages_rejected.add();
    rejection_detail = fmt::format("{} Received: fields", hops);
    // A static text: the verdict's view must outlive this call (smtp/reply.h).
    return smtp::verdict::respond(554, "5.4.6", "too many hops (Received: fields): mail loop?");
  }
  if (auto refused = dkim_finish()) {  // never unsigned mail that was meant to be signed
    server.store().abort(message);
    in_message = false;
    server.metrics().messages_rejected.add();
    return *refused;
  }
  envelope.helo.assign(helo_for_records());
  return commit();
}

// The tenant header chooses a pool only for our own submitters (mynetworks or AUTH, as for
// DKIM signing): a stranger must not choose the addresses, and so the reputation, that mail
// leaves from. Either way the field is gone from the message. The choice is stored with the
// envelope (commit()), so recovered mail leaves from the same pool after a restart.
void connection::choose_pool() noexcept {
  if (header_walk.found() && signs_for_client()) pool.assign(header_walk.value());
}

smtp::verdict connection::commit() noexcept {
  auto committed = server.store().commit(message, envelope, &body, dkim_fields(), pool);
  if (!committed && committed.error() == EAGAIN) {  // no segment ready yet: retry shortly
    commit_retry = true;
    server.wait_for_spool(*this);
    return smtp::verdict::pending();
  }
  in_message = false;
  if (!committed) {
    server.metrics().spool_failures.add();
    return smtp::verdict::respond(452, "4.3.1", storage_text);
  }
  ticket = committed.value();
  server.tickets().insert(ticket, slot, generation);
  if (server.commit_observer) server.commit_observer(ticket, envelope);
  server.spool().pump();  // a batch may be full already
  return smtp::verdict::pending();
}

void connection::retry_commit() noexcept {
  commit_retry = false;
  const smtp::verdict answer = commit();
  if (!answer.is_pending()) session->resume(answer);
}

void connection::on_commit_result(int error) noexcept {
  ticket = 0;
  auto& metrics = server.metrics();
  if (error != 0) {
    metrics.spool_failures.add();
    session->resume(smtp::verdict::respond(452, "4.3.1", storage_text));
    return pump();
  }
  metrics.messages_accepted.add();
  ++messages_accepted;
  metrics.message_bytes.add(message_bytes);
  metrics.commit_latency.record_us((server.host().precise_ns() - data_end_ns) / 1000);
  const auto id_text = spool::format_message_id(envelope.id);
  const std::string_view id(id_text.data(), 16);
  char text[64];
  const auto length = fmt::format_to_n(text, sizeof text, "Ok: queued as {}", id).size;
  session->resume(smtp::verdict::respond(250, "2.0.0", std::string_view(text, length)));
  server.log().set_time(server.host().wall_ms());
  admin::log_record record = server.log().record("received");
  received_fields(record, envelope, session_id, message_bytes, message_protocol, login, pool);
  if (pool.empty() && header_walk.found()) record.field("pool_ignored", header_walk.value());
  dkim_accepted(record);
  if (tls && tls->established()) {
    record.field("tls_version", tls->protocol())
        .field("tls_cipher", tls->cipher())
        .field("tls_client_certificate", tls->peer_certificate());
  }
  record.end();
  if (server.accepted_listener) server.accepted_listener(envelope, body, pool);
  pump();
}

void connection::on_data_aborted(smtp::abort_reason) noexcept {
  if (in_message) server.store().abort(message);
  in_message = false;
  commit_retry = false;
  server.metrics().messages_rejected.add();
}

void connection::on_reset() noexcept {
  envelope.reverse_path.clear();
  envelope.recipients.clear();
}

}  // namespace ringmta::server
