// One outgoing SMTP connection over the ring: route lookup, address fallback, connect, the
// receive -> feed -> events -> send loop, timeouts, idle reuse and closing. The body transfer
// is in body.cc. See outbound/outbound.h.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "outbound_internal.h"
#include "ringmta/core/assert.h"

namespace ringmta::outbound {

namespace {

smtp::reply_enhanced_code enhanced(std::uint8_t status_class, std::uint16_t subject,
                                   std::uint16_t detail) noexcept {
  return smtp::reply_enhanced_code{status_class, subject, detail};
}

// A bare IP as a host route becomes an address literal, so no DNS question is asked for it.
std::string as_literal(std::string_view name) {
  if (!name.empty() && name.front() == '[') return std::string(name);
  const auto ip = dns::ip_address::parse(name);
  if (!ip) return std::string(name);
  return ip.value().family == 6 ? "[IPv6:" + std::string(name) + "]"
                                : "[" + std::string(name) + "]";
}

}  // namespace

connection::connection(outbound_server& owner_server, std::uint32_t slot_index) noexcept
    : server(owner_server), slot(slot_index) {}

// ---- the phase: one writer, legal transitions only, invariants around every step

void connection::enter(connection_phase next) noexcept {
  RINGMTA_ASSERT(legal_transition(_phase, next));
  _phase = next;
}

void body_progress::enter(body_phase next) noexcept {
  RINGMTA_ASSERT(legal_transition(_phase, next));
  _phase = next;
}

void body_progress::clear() noexcept {
  RINGMTA_ASSERT(_phase == body_phase::none && !step_in_flight && !holds_transfer);
  *this = body_progress{};
}

// The body's phase against its facts and the connection's phase (body_phase.h).
static void check_body(const body_progress& body, connection_phase phase) noexcept {
  using b = body_phase;
  using path = body_progress::path;
  const b now = body.phase();
  RINGMTA_ASSERT(!body.step_in_flight || now == b::transferring || now == b::aborting);
  RINGMTA_ASSERT(now != b::aborting || body.step_in_flight);
  RINGMTA_ASSERT(!body.holds_transfer || now == b::transferring || now == b::aborting);
  if (now == b::transferring) {
    // The paths that move a large body own a pipe or buffer while they run.
    const bool pooled = body.how == path::spliced || body.how == path::copied ||
                        body.how == path::encrypted;
    RINGMTA_ASSERT(pooled == body.holds_transfer && (pooled || body.how == path::staged));
  }
  if (now == b::wanted || now == b::waiting) RINGMTA_ASSERT(body.how == path::none);
  // A body under way only within a transaction; one given up in flight only once the
  // transaction's result is out (talking) or the socket is going (closing).
  if (now != b::none && now != b::aborting) RINGMTA_ASSERT(phase == connection_phase::delivering);
  if (now == b::aborting) {
    RINGMTA_ASSERT(phase == connection_phase::talking || phase == connection_phase::closing);
  }
}

void connection::check_invariants() const noexcept {
  using p = connection_phase;
  // Every op flag is an SQE in flight, counted in ops, on the current socket.
  RINGMTA_ASSERT(ops >= unsigned{connect_in_flight} + unsigned{receive_armed} +
                            unsigned{send_in_flight} + unsigned{close_queued} +
                            unsigned{body.step_in_flight});
  check_body(body, _phase);
  RINGMTA_ASSERT(fd >= 0 ||
                 (!connect_in_flight && !receive_armed && !send_in_flight && !close_queued));
  RINGMTA_ASSERT(!close_queued || _phase == p::closing);
  RINGMTA_ASSERT(!connect_in_flight || _phase == p::connecting || _phase == p::closing);
  switch (_phase) {
    case p::free:
    case p::resolving:
    case p::unconnected:
    case p::finished:
      RINGMTA_ASSERT(fd < 0 && ops == 0);
      return;
    case p::connecting:
      RINGMTA_ASSERT(fd >= 0 && connect_in_flight && !receive_armed && !send_in_flight);
      return;
    case p::talking:
    case p::delivering:
      RINGMTA_ASSERT(fd >= 0 && session);
      return;
    case p::idle:
      RINGMTA_ASSERT(fd >= 0 && session && ever_ready);
      return;
    case p::closing:
      RINGMTA_ASSERT(fd >= 0);
      return;
  }
}

remote_host connection::remote() const noexcept {
  if (!tried_any || current >= candidates.size()) return {};
  const bool dsn = session && session->extensions().dsn;
  return remote_host{candidates[current].host_name, &candidates[current].address, dsn};
}

// ---- opening: route lookup, then addresses in order

void connection::open(std::uint64_t destination_cookie, const route& where) noexcept {
  destination = destination_cookie;
  kind = where.kind;
  route_name = as_literal(where.name);
  port = where.port;
  helo_name.assign(where.helo_name.empty() ? std::string_view(server.config().helo_name)
                                           : where.helo_name);
  timeout_connect_ms = where.timeout_connect_ms;
  timeout_reply_ms = where.timeout_reply_ms;
  source.reset();
  if (where.source != nullptr) source = *where.source;
  candidates.clear();
  next_candidate = current = 0;
  tried_any = false;
  addresses_tried = 0;
  attempts.reset();
  fd = -1;
  ops = 0;
  connect_in_flight = connect_timed_out = receive_armed = send_in_flight = false;
  close_queued = retry_receive = deferred = false;
  then = after_close::finish;
  tls_wanted = where.tls;
  auth = where.auth;
  auth_plaintext = where.auth_plaintext;
  end_tls();
  tls_note.clear();
  ever_ready = quit_requested = body_failed = false;
  drop_after_results = false;
  deliveries = 0;
  body.clear();
  staged_begin = staged_end = 0;
  reason = close_reason::lost;
  failure = smtp::client_outcome::accepted;
  if (!session) {  // first use of this slot (or its buffers were given back on release)
    session = std::make_unique<smtp::client_session>(server.engine_config());
    // Not zeroed: only the bytes staged are ever read, and pages never written (a refused
    // connection writes none) are not made resident.
    staging = std::make_unique_for_overwrite<char[]>(server.staging_bytes());
  }
  enter(connection_phase::resolving);
  const std::uint64_t cookie = std::uint64_t{generation} << 32 | slot;
  // The result comes from the DNS client's own loop, never from inside this call.
  lookup = kind == route_kind::mx ? server.dns().start_mx_lookup(route_name, server, cookie)
                                  : server.dns().start_host_lookup(route_name, server, cookie);
}

void connection::on_lookup_done(dns::mx_result& result) noexcept {
  if (quit_requested) return pump();  // abandoned while resolving
  if (result.status != dns::lookup_status::ok) {
    failure = dns_failure_reply(result, close_reply);
    reason = close_reason::destination_failed;
    return finish();
  }
  const auto& config = server.config();
  bool loops_back = false;
  candidates = plan_candidates(result,
                               plan_options{port, config.addresses_max, config.ipv4, config.ipv6,
                                            config.helo_name, &config.self_endpoints},
                               &loops_back);
  if (loops_back) {  // RFC 5321 §5.1: the best MX is us; relaying to ourselves never ends
    close_reply.assign_local(554, enhanced(5, 4, 6),
                             "mail for " + route_name + " loops back to myself");
    failure = smtp::client_outcome::permanent_failure;
    reason = close_reason::destination_failed;
    return finish();
  }
  if (candidates.empty()) {  // e.g. only AAAA records and IPv6 switched off
    close_reply.assign_local(451, enhanced(4, 4, 4),
                             "no usable address for " + route_name + " (address families)");
    failure = smtp::client_outcome::transient_failure;
    reason = close_reason::destination_failed;
    return finish();
  }
  try_next_address();
}

void connection::try_next_address() noexcept {
  while (next_candidate < candidates.size()) {
    const std::uint32_t index = next_candidate++;
    connect_to(index);
    if (fd >= 0) return;  // connecting; otherwise it failed at once (recorded): next one
  }
  failure = attempts.summary(close_reply);
  reason = close_reason::destination_failed;
  finish();
}

void connection::connect_to(std::uint32_t index, bool plaintext_retry) noexcept {
  const auto& config = server.config();
  const candidate& to = candidates[index];
  current = index;
  tried_any = true;
  ++addresses_tried;
  ++server.counters().connect_attempts;
  choose_tls(index, plaintext_retry);  // resets the session with this socket's TLS policy
  connect_in_flight = connect_timed_out = receive_armed = send_in_flight = false;
  close_queued = false;
  then = after_close::finish;
  staged_begin = staged_end = 0;
  const int family = to.address.family();
  io::descriptors& descriptors = server.descriptors();
  const auto opened = descriptors.open_socket(family, SOCK_STREAM);
  const int socket_fd = opened ? opened.value() : -1;
  int error = opened ? 0 : opened.error();
  if (socket_fd >= 0) {
    // The engine batches commands itself; the final "." must not wait for a delayed ACK.
    (void)descriptors.set_option(socket_fd, IPPROTO_TCP, TCP_NODELAY, 1);
    error = bind_source(socket_fd, family);
  }
  if (error == 0) {
    const auto queued = server.io().prep_connect(
        socket_fd, to.address.sockaddr_pointer(), to.address.length,
        server.user_data(server.connect_kind, *this));
    if (!queued) error = queued.error();
  }
  if (error != 0) {
    if (socket_fd >= 0) descriptors.close(socket_fd);
    ++server.counters().connect_failures;
    attempts.record(to, attempt_failure::connect_failed, error, nullptr);
    return;
  }
  fd = socket_fd;
  enter(connection_phase::connecting);
  connect_in_flight = true;
  ++ops;
  schedule(timer_purpose::connect,
           timeout_connect_ms != 0 ? timeout_connect_ms : config.timeout_connect_ms);
}

// The route's egress source (of this address's family), else the configured one.
int connection::bind_source(int socket_fd, int family) const noexcept {
  const auto& config = server.config();
  const auto& fallback = family == AF_INET6 ? config.source_ipv6 : config.source_ipv4;
  const auto& chosen = source && source->family() == family ? source : fallback;
  if (!chosen) return 0;
  // Pick the port at connect time: many connections from one address share ports.
  io::descriptors& descriptors = server.descriptors();
  (void)descriptors.set_option(socket_fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1);
  const auto bound = descriptors.bind(socket_fd, chosen->sockaddr_pointer(), chosen->length);
  return bound ? 0 : bound.error();
}

void connection::on_connected(const io::completion& done) noexcept {
  connect_in_flight = false;
  if (_phase == connection_phase::closing) return;  // abandoned meanwhile
  if (done.res < 0) {
    const int error = connect_timed_out ? ETIMEDOUT : -done.res;
    ++server.counters().connect_failures;
    return fail_attempt(attempt_failure::connect_failed, error, nullptr);
  }
  enter(connection_phase::talking);
  restart_timer();  // the greeting (RFC 5321 §4.5.3.2.1)
  arm_receive();
}

// This address is no good (RFC 5321 §5.1): close the socket, then try the next one.
void connection::fail_attempt(attempt_failure how, int error,
                              const smtp::parsed_reply* reply) noexcept {
  attempts.record(candidates[current], how, error, reply);
  then = after_close::next_address;
  end_socket();
}

// ---- receive -> feed -> events

// Multishot where the kernel has it: armed once and kept while its completions say more
// comes, not re-armed for every reply (an SQE, and in the simulator a host step, per reply;
// issue 16). It ends with the stream, an error or -ENOBUFS, and pump() arms it again.
void connection::arm_receive() noexcept {
  if (receive_armed || !connected(_phase)) return;
  io::operations& io = server.io();
  const std::uint16_t group = server.buffers().group_id();
  const std::uint64_t user_data = server.user_data(server.receive_kind, *this);
  const auto queued = io.recv_multishot_supported()
                          ? io.prep_recv_multishot(fd, group, user_data)
                          : io.prep_recv_select(fd, group, user_data);
  if (!queued) {  // the kernel refused a submission: try again at the end of the iteration
    retry_receive = true;
    server.defer(*this);
    return;
  }
  receive_armed = true;
  ++ops;
}

void connection::on_received(const io::completion& done) noexcept {
  receive_armed = done.more();  // a multishot receive goes on (still counted in ops)
  std::string_view chunk;
  if (done.has_buffer()) {
    const auto bytes = server.buffers().consume(done);
    chunk = {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  const auto recycle = [&] {
    if (done.has_buffer()) server.buffers().recycle(done.buffer_id());
  };
  if (done.res == -ENOBUFS) {  // every buffer is out: re-arm once some come back
    server.buffers().note_enobufs();
    ++server.counters().receive_enobufs;
    retry_receive = true;
    server.defer(*this);
    return;
  }
  if (_phase == connection_phase::closing || session->phase() == smtp::client_phase::closed) {
    recycle();
    return pump();
  }
  if (done.res <= 0) {
    recycle();
    if (tls == tls_state::handshake) {  // RFC 8446 §6: the peer left during the handshake
      tls_session->end_of_input();
      on_tls_failed();
      return pump();
    }
    session->on_peer_closed();
    process_events();
    return pump();
  }
  if (tls == tls_state::handshake || tls == tls_state::established) {  // tls.cc
    while (!chunk.empty() && feed_tls(chunk)) {
    }
    recycle();
    restart_timer();
    return pump();
  }
  // Plaintext. A chunk holding the 220 to STARTTLS stays plaintext to its end: the engine
  // discards what follows the 220 (response injection); later receives go to the session.
  const std::uint32_t owner_generation = generation;
  while (!chunk.empty()) {
    const std::size_t used = session->feed(chunk);
    chunk.remove_prefix(used);
    process_events();
    if (generation != owner_generation || !connected(_phase)) break;
    if (session->phase() == smtp::client_phase::closed) break;
    if (used == 0 && !session->event_pending()) break;  // the engine takes nothing more now
  }
  recycle();  // nothing refers to the buffer any more: replies were copied or reported
  restart_timer();
  pump();
}

void connection::process_events() noexcept {
  const std::uint32_t owner_generation = generation;
  while (generation == owner_generation && active(_phase)) {
    const smtp::client_event event = session->next_event();
    switch (event.kind) {
      case smtp::client_event_kind::none: return;
      case smtp::client_event_kind::ready: on_session_ready(); break;
      case smtp::client_event_kind::recipient_result:
      case smtp::client_event_kind::message_result: report(event); break;
      case smtp::client_event_kind::send_body:
        // BDAT: the chunk goes with the commands (pump, chunk_due); DATA: start the body.
        if (!body.chunked) body.enter(body_phase::wanted);
        break;
      case smtp::client_event_kind::start_tls: begin_tls(); break;  // tls.cc
      case smtp::client_event_kind::closed: return on_session_closed(event);
    }
  }
}

void connection::on_session_ready() noexcept {
  if (!ever_ready) {
    ever_ready = true;
    ++server.counters().sessions_ready;
  }
  // An event drained while the socket is being shut down (deferred work): nothing to offer.
  if (_phase == connection_phase::closing) return;
  if (drop_after_results) {  // no QUIT: the server may still be reading body bytes
    reason = close_reason::lost;
    close_reply.copy_from(local_reply);
    return end_socket();
  }
  if (server.shutting_down() && !quit_requested) {
    quit_requested = true;
    quit_reason = close_reason::shutdown;
  }
  if (quit_requested) {
    session->quit();
    return restart_timer();
  }
  enter(connection_phase::idle);
  restart_timer();  // the idle lifetime
  const std::uint32_t owner_generation = generation;
  server.handler().on_ready(handle(), destination);
  // Kept for later: an idle TLS connection gives its record buffers back (tls/session.h).
  if (generation == owner_generation && _phase == connection_phase::idle && tls_session)
    tls_session->trim();
}

void connection::report(const smtp::client_event& event) noexcept {
  auto& counters = server.counters();
  const smtp::parsed_reply* reply = event.reply;
  smtp::client_outcome outcome = event.outcome;
  // A body that could not be read from the spool failed locally: say so, not "lost".
  if (body_failed && reply->local && outcome != smtp::client_outcome::accepted) {
    reply = &local_reply;
  }
  if (event.kind == smtp::client_event_kind::recipient_result) {
    switch (outcome) {
      case smtp::client_outcome::accepted: ++counters.recipients_accepted; break;
      case smtp::client_outcome::permanent_failure: ++counters.recipients_permanent; break;
      default: ++counters.recipients_transient; break;
    }
    server.handler().on_recipient_result(
        handle(), destination, recipient_result{job.token, event.recipient_index, outcome, reply,
                                                remote()});
    return;
  }
  if (body.open()) {
    // A reply before our ".": the server gave up on the message (or is broken). Whatever it
    // said, the body did not get through: never count it delivered, never reuse the session
    // (the rest of the body would be read as commands).
    if (!reply->local) {
      drop_after_results = true;
      if (outcome == smtp::client_outcome::accepted) {
        local_reply.assign_local(451, enhanced(4, 4, 2),
                                 "the server replied before the end of the message data");
        reply = &local_reply;
        outcome = smtp::client_outcome::transient_failure;
      }
    }
    abort_body();
  }
  if (_phase == connection_phase::delivering) enter(connection_phase::talking);
  ++deliveries;
  if (outcome == smtp::client_outcome::accepted) ++counters.deliveries_accepted;
  else ++counters.deliveries_failed;
  if (body.phase() == body_phase::sent) body.enter(body_phase::none);
  if (body.phase() == body_phase::none) body.clear();  // else aborting: cleared on completion
  server.handler().on_delivery_done(
      handle(), destination,
      delivery_result{job.token, outcome, reply, remote(), &describe_tls()});
}

void connection::on_session_closed(const smtp::client_event& event) noexcept {
  if (_phase == connection_phase::idle) enter(connection_phase::talking);
  if (event.close_reason == smtp::client_close_reason::timeout) ++server.counters().timeouts;
  if (!ever_ready && !quit_requested && retry_in_plaintext(event)) {
    then = after_close::plaintext_retry;  // tls.cc: opportunistic, the handshake failed
  } else if (!ever_ready && !quit_requested) {
    // RFC 5321 §5.1 / §3.1: a 4xx/5xx greeting or a refused EHLO/HELO: next address; so is a
    // session that broke before it was ready, and a server that cannot give the TLS that
    // required/verify demand (RFC 3207 §4.1: never plaintext instead).
    const auto why = event.close_reason;
    const bool rejected = why == smtp::client_close_reason::greeting_rejected ||
                          why == smtp::client_close_reason::hello_rejected;
    const bool tls_problem = why == smtp::client_close_reason::tls_unavailable ||
                             why == smtp::client_close_reason::tls_failed;
    const bool auth_problem = why == smtp::client_close_reason::auth_unavailable ||
                              why == smtp::client_close_reason::auth_failed;
    if (why == smtp::client_close_reason::tls_unavailable) ++server.counters().tls_unavailable;
    if (auth_problem) ++server.counters().auth_failures;
    attempts.record(candidates[current],
                    tls_problem    ? attempt_failure::tls
                    : auth_problem ? attempt_failure::auth
                    : rejected     ? attempt_failure::rejected
                                   : attempt_failure::broken,
                    0, event.reply);
    then = after_close::next_address;
  } else {
    reason = quit_requested ? quit_reason
             : event.close_reason == smtp::client_close_reason::quit ? close_reason::released
                                                                       : close_reason::lost;
    close_reply.copy_from(*event.reply);
    then = after_close::finish;
  }
  restart_timer();  // bounds the flush of a last QUIT
  pump();
}

// ---- sending

void connection::stage_output() noexcept {
  const std::string_view out = session->output();
  RINGMTA_ASSERT(staged_end + out.size() <= server.staging_bytes());
  std::memcpy(staging.get() + staged_end, out.data(), out.size());
  staged_end += static_cast<std::uint32_t>(out.size());
  session->consume_output(out.size());  // handed to the kernel now (client_session.h)
}

bool connection::send_staged() noexcept {
  return queue_send(staging.get() + staged_begin, staged_end - staged_begin);
}

// One send in flight (plaintext staging or TLS ciphertext); the bytes stay put until it ends.
bool connection::queue_send(const char* bytes, std::uint32_t size) noexcept {
  const auto queued = server.io().prep_send(fd, bytes, size,
                                                      server.user_data(server.send_kind, *this));
  if (!queued) {  // cannot talk to the kernel: treat as a lost connection
    staged_begin = staged_end = 0;
    session->on_peer_closed();
    return false;
  }
  send_in_flight = true;
  ++ops;
  return true;
}

void connection::on_sent(const io::completion& done) noexcept {
  send_in_flight = false;
  if (_phase == connection_phase::closing) return;
  if (tls != tls_state::plaintext) return on_ciphertext_sent(done);  // tls.cc
  if (done.res < 0) {  // EPIPE, ECONNRESET: what is staged can never go out
    staged_begin = staged_end = 0;
    session->on_peer_closed();
    process_events();
    return pump();
  }
  staged_begin += static_cast<std::uint32_t>(done.res);
  if (staged_begin < staged_end) {  // short send: the rest now, in order
    if (!send_staged()) process_events();
    return pump();
  }
  if (body.how == body_progress::path::staged || body.how == body_progress::path::chunk_sending) {
    body.how = body_progress::path::none;  // the body and its ".CRLF" (or the chunk) are out
  }
  staged_begin = staged_end = 0;
  restart_timer();
  pump();
}

// Makes progress with whatever is due: abandoning, output, the body, closing, receiving.
void connection::pump() noexcept {
  if (!active(_phase)) return;
  if (!ever_ready && quit_requested) {  // abandoned before it was ready
    reason = quit_reason;
    failure = smtp::client_outcome::accepted;
    close_reply.assign_local(421, enhanced(4, 3, 2), "connection abandoned before it was ready");
    if (_phase == connection_phase::resolving) {
      server.dns().cancel(lookup);
      enter(connection_phase::unconnected);
      return finish();
    }
    if (fd >= 0) {
      then = after_close::finish;
      return end_socket();
    }
    return finish();
  }
  if (!connected(_phase)) return;
  if (session->phase() != smtp::client_phase::closed) arm_receive();
  if (tls != tls_state::plaintext) return pump_tls();  // tls.cc
  if (send_in_flight || body.step_in_flight) return;
  if (staged_end > staged_begin) {
    if (!send_staged()) process_events();
    return;
  }
  if (body.how == body_progress::path::chunk_ready && session->chunk_due()) {
    stage_chunk();  // the commands up to BDAT and the chunk: one send
    if (!send_staged()) process_events();
    return;
  }
  if (!session->output().empty()) {
    stage_output();
    if (!send_staged()) process_events();
    return;
  }
  if (body.phase() == body_phase::wanted && body.how == body_progress::path::none) {
    return start_body();
  }
  if (session->phase() == smtp::client_phase::closed) end_socket();
}

void connection::start_delivery(const delivery& next) noexcept {
  job = next;
  std::uint64_t total = 0;
  for (const spool::body_slice& piece : job.body) total += piece.length;
  if (job.envelope.size_bytes == 0) job.envelope.size_bytes = total;
  enter(connection_phase::delivering);
  body.clear();
  body.total = total;
  body_failed = false;
  ++server.counters().deliveries;
  if (session->chunking_active() && prefetch_chunk()) job.envelope.chunk_bytes = body.chunk_bytes;
  session->start_transaction(job.envelope);
  restart_timer();
}

void connection::request_quit(close_reason why) noexcept {
  if (quit_requested) return;
  quit_requested = true;
  quit_reason = why;
  // Otherwise the QUIT follows the delivery in progress (on_session_ready).
  if (_phase == connection_phase::idle) {
    enter(connection_phase::talking);
    session->quit();
    restart_timer();
    server.defer(*this);
  }
}

void connection::abandon(close_reason why) noexcept {
  if (quit_requested) return;
  quit_requested = true;
  quit_reason = why;
  server.defer(*this);
}

// ---- timers

// Every reply wait restarts the connection's deadline (RFC 5321 §4.5.3.2), several times per
// transaction; the next wait is mostly longer than the one before (MAIL 5 min, data end 10
// min after a few milliseconds), so the wheel is touched only when the new deadline comes
// before the tick the node is armed for. A node armed too early fires and re-arms (on_timer):
// a timeout never fires late, and the node fires early at most once per tick it was armed for.
void connection::schedule(timer_purpose purpose, std::uint32_t delay_ms) noexcept {
  core::timer_wheel& timers = server.owner().timers();
  timer_use = purpose;
  deadline_ms = timers.now() + std::max<std::uint32_t>(delay_ms, 1);  // as schedule_after
  if (!timer.armed() || timer.deadline_tick() > deadline_ms) {
    timers.schedule_at(timer, deadline_ms);
  }
}

void connection::restart_timer() noexcept {
  if (!connected(_phase)) return;
  const auto& config = server.config();
  switch (session->phase()) {
    case smtp::client_phase::greeting:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_greeting_ms));
    case smtp::client_phase::ehlo:
    case smtp::client_phase::helo:
    case smtp::client_phase::starttls:
    case smtp::client_phase::auth:
    case smtp::client_phase::tls_handshake:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_hello_ms));
    case smtp::client_phase::ready:
      if (_phase == connection_phase::idle)
        return schedule(timer_purpose::idle, config.idle_timeout_ms);
      return server.owner().timers().cancel(timer);
    case smtp::client_phase::rset:
    case smtp::client_phase::mail:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_mail_ms));
    case smtp::client_phase::rcpt:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_rcpt_ms));
    case smtp::client_phase::data:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_data_init_ms));
    case smtp::client_phase::body:
      return schedule(timer_purpose::reply, config.timeout_data_block_ms);
    case smtp::client_phase::data_end:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_data_end_ms));
    case smtp::client_phase::quit:
      return schedule(timer_purpose::reply, reply_timeout(config.timeout_quit_ms));
    case smtp::client_phase::closed: return schedule(timer_purpose::flush,
                                                     config.timeout_quit_ms);
  }
}

void connection::on_timer() noexcept {
  core::timer_wheel& timers = server.owner().timers();
  if (deadline_ms > timers.now()) return timers.schedule_at(timer, deadline_ms);  // extended
  const step_guard checked(*this);
  switch (timer_use) {
    case timer_purpose::connect: {
      ++server.counters().timeouts;
      connect_timed_out = true;
      // The connect completes with -ECANCELED, reported as a timeout (next address).
      const auto queued = server.io().prep_cancel(
          server.user_data(server.connect_kind, *this),
          io::pack_user_data(server.misc_kind, 0, 0), false, io::sqe::skip_success);
      if (!queued) fail_attempt(attempt_failure::connect_failed, ETIMEDOUT, nullptr);
      return;
    }
    case timer_purpose::idle:
      if (_phase == connection_phase::idle) request_quit(close_reason::idle_timeout);
      return pump();
    case timer_purpose::reply:  // RFC 5321 §4.5.3.2: a timeout is a transient failure
      if (tls == tls_state::handshake) {  // as a failed handshake (opportunistic: plaintext)
        ++server.counters().timeouts;
        ++server.counters().tls_timeouts;
        fail_tls_handshake("TLS handshake timed out");
        return pump();
      }
      session->on_timeout();
      process_events();
      return pump();
    case timer_purpose::flush:  // the last QUIT could not be flushed: close hard
      return end_socket();
  }
}

// ---- closing

void connection::end_socket() noexcept {
  if (fd < 0) return;
  if (_phase != connection_phase::closing) {
    enter(connection_phase::closing);
    server.owner().timers().cancel(timer);
    abort_body();
    if (connect_in_flight) {
      (void)server.io().prep_cancel(server.user_data(server.connect_kind, *this),
                                              io::pack_user_data(server.misc_kind, 0, 0), false,
                                              io::sqe::skip_success);
    }
    // Ends a pending receive (0), a send or splice blocked on a peer that stopped reading.
    server.descriptors().shutdown(fd, SHUT_RDWR);
  }
  if (ops > 0 || close_queued) return;
  close_queued = true;
  if (server.io().prep_close(fd, server.user_data(server.close_kind, *this))) {
    ++ops;
    return;
  }
  server.descriptors().close(fd);
  on_fd_closed();
}

void connection::on_fd_closed() noexcept {
  fd = -1;
  close_queued = false;
  enter(connection_phase::unconnected);
  end_tls();
  if (!ever_ready && quit_requested) return pump();  // abandoned: finish with its reason
  const after_close next = then;
  then = after_close::finish;
  switch (next) {
    case after_close::finish: return finish();
    case after_close::next_address: return try_next_address();
    case after_close::plaintext_retry:
      connect_to(current, true);
      if (fd < 0) try_next_address();  // the retry could not even start (recorded)
      return;
  }
}

void connection::finish() noexcept {
  RINGMTA_ASSERT(fd < 0 && ops == 0);
  if (_phase == connection_phase::finished) return;
  if (_phase == connection_phase::resolving) server.dns().cancel(lookup);
  enter(connection_phase::finished);
  server.owner().timers().cancel(timer);
  if (reason == close_reason::destination_failed) ++server.counters().destination_failures;
  // The slot is free before the handler hears of the close: it typically asks the queue for
  // the next connection at once, and at the shard's connection limit that open would be
  // refused for want of this very slot. So what the handler reads is copied out first (the
  // slot may be reused inside on_closed), and `this` is not touched after it.
  const smtp::parsed_reply reply = close_reply;
  const connection_handle closed = handle();
  const std::uint64_t cookie = destination;
  remote_host last = remote();  // views into `candidates`: copied too
  const std::string last_name(last.name);
  const core::endpoint last_address = last.address != nullptr ? *last.address : core::endpoint{};
  if (last.address != nullptr) last = {last_name, &last_address, last.offers_dsn};
  const close_result result{reason, ever_ready, deliveries, addresses_tried,
                            failure, &reply,    last};
  delivery_handler& handler = server.handler();
  server.release_slot(*this);
  handler.on_closed(closed, cookie, result);
}

}  // namespace ringmta::outbound
