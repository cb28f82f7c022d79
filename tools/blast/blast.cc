#include "blast/blast.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "loadkit/integrity.h"
#include "ringmta/core/clock.h"

namespace ringmta::blast {

namespace {
constexpr std::uint16_t buffer_group = 1;
constexpr std::uint32_t eof_wait_ms = 2000;  // after 221: the server closes first (TIME_WAIT)
constexpr std::size_t staging_bytes = 2 * smtp::client_output_bytes_max;
constexpr std::size_t address_bytes_max = 256;
}  // namespace

struct connection {
  blast_shard* owner = nullptr;
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  int fd = -1;
  std::optional<smtp::client_session> session;
  bool connecting = false;
  bool recv_armed = false;
  bool send_in_flight = false;
  bool body_pending = false;   // send_body seen, body not yet handed to the kernel
  bool data_in_flight = false; // the send carrying "." is in flight
  bool greeted = false;
  bool ehlo_done = false;
  bool waiting_eof = false;
  bool for_due = false;        // --rate: opened for a due message, not ready yet
  // --bdat: the transaction is scripted here (RFC 3030 with RFC 2920): MAIL, RCPTs and
  // "BDAT n LAST" + the message go out in one write; the replies go to our own parser while
  // client_session stays in `ready` (it handled greeting and EHLO and will say QUIT).
  bool scripted = false;
  bool bdat_pending = false;   // the scripted write is not yet handed to the kernel
  std::uint32_t replies_seen = 0;
  std::uint32_t rcpt_accepted = 0;
  std::uint32_t command_bytes = 0;
  std::optional<smtp::reply_parser> parser;
  std::vector<char> commands;
  bool has_error = false;
  error_kind error = error_kind::aborted;
  std::uint32_t messages_left = 0;
  std::uint64_t connect_ns = 0, ehlo_ns = 0, data_sent_ns = 0, message_start_ns = 0;
  // The message in progress: rendered into fixed buffers, the body shared.
  const body_variant* body = nullptr;
  std::uint32_t header_bytes = 0;
  std::uint32_t from_bytes = 0;
  char header[1024];
  char from[address_bytes_max];
  std::vector<std::array<char, address_bytes_max>> rcpt_text;  // sized once per pooled object
  std::vector<smtp::client_recipient> rcpts;
  // Send: engine output copied here, then one sendmsg over staging + header + body pieces.
  std::uint32_t staged_bytes = 0;
  std::uint32_t iov_first = 0;
  std::uint32_t iov_count = 0;
  iovec iov[6];
  msghdr message{};
  char staging[staging_bytes];
  loadkit::owned_timer<connection> timeout{&blast_shard::on_connection_timeout};
  // --starttls / --tls: the TLS session, from the ClientHello to the end of the connection.
  std::unique_ptr<tls::session> tls;
  bool tls_handshaking = false;
  std::uint32_t target = 0;
  std::uint64_t tls_start_ns = 0;

  std::uint64_t user_data(io::op_kind kind) const noexcept {
    return io::pack_user_data(kind, generation, slot);
  }
  void set_error(error_kind kind) noexcept {
    if (!has_error) {
      has_error = true;
      error = kind;
    }
  }
};

namespace {
error_kind connect_error(int error) noexcept {
  switch (error) {
    case ECONNREFUSED: return error_kind::refused;
    case ECONNRESET: case EPIPE: return error_kind::reset;
    case ETIMEDOUT: return error_kind::timeout;
    case ENETUNREACH: case EHOSTUNREACH: return error_kind::unreachable;
    case EADDRNOTAVAIL: return error_kind::no_local_port;
    default: return error_kind::connect_other;
  }
}

error_kind close_error(smtp::client_close_reason reason) noexcept {
  using smtp::client_close_reason;
  switch (reason) {
    case client_close_reason::greeting_rejected: return error_kind::greeting_rejected;
    case client_close_reason::hello_rejected:
    case client_close_reason::auth_unavailable:  // blast sends no credentials: not reached
    case client_close_reason::auth_failed: return error_kind::hello_rejected;
    case client_close_reason::tls_unavailable:
    case client_close_reason::tls_failed: return error_kind::tls;
    case client_close_reason::service_closing: return error_kind::service_closing;
    case client_close_reason::reply_unexpected: return error_kind::reply_unexpected;
    case client_close_reason::protocol_error: return error_kind::protocol_error;
    case client_close_reason::timeout: return error_kind::timeout;
    case client_close_reason::quit:
    case client_close_reason::peer_closed: break;
  }
  return error_kind::peer_closed;
}
}  // namespace

blast_shard::blast_shard(const blast_config& config, blast_shared& shared, unsigned id)
    : _config(config),
      _shared(shared),
      _id(id),
      _concurrency(config.concurrency / config.threads +
                   (id < config.concurrency % config.threads ? 1 : 0)),
      _rate(config.rate / config.threads),
      _connections(std::max<std::uint32_t>(1, _concurrency)),
      _random(0x5eed0000ull + id) {
  _idle.reserve(_connections.capacity());
  _recv_retry.reserve(_connections.capacity());
  _swap.reserve(_connections.capacity());
}

blast_shard::~blast_shard() = default;

core::result<void> blast_shard::start(shard::shard& owner) noexcept {
  _shard = &owner;
  for (io::op_kind* kind : {&_kind_connect, &_kind_recv, &_kind_send, &_kind_misc}) {
    auto added = owner.add_handler(*this);
    if (!added) return core::fail(added.error());
    *kind = added.value();
  }
  _buffers = std::make_unique<io::buffer_ring>();
  io::buffer_ring_options options;
  options.group_id = buffer_group;
  // Replies are small and consumed at once, but every open connection may have one arrive in
  // the same loop iteration: room for two per connection, at least 1024, at most 32768.
  options.buffer_count = std::bit_ceil(std::clamp<std::uint32_t>(2 * _concurrency, 1024, 32768));
  options.buffer_bytes = 1024;
  if (auto ok = _buffers->init(owner.ring(), options); !ok) return ok;
  owner.add_buffer_ring(*_buffers);
  _tick.owner = this;
  owner.timers().schedule_after(_tick.node, 1);
  return {};
}

void blast_shard::stop() noexcept {
  _stopping = true;
  _shard->timers().cancel(_tick.node);
  _connections.for_each_live([this](connection& c, std::uint32_t, std::uint32_t) {
    _shard->timers().cancel(c.timeout.node);
    if (c.fd >= 0) {
      if (c.waiting_eof && !c.has_error) {  // QUIT answered: only the server's FIN was missing
        _counters.sessions_done.add();
      } else {
        _counters.errors[static_cast<std::size_t>(error_kind::aborted)].add();
        _counters.sessions_failed.add();
      }
      _counters.open.add(~std::uint64_t{0});
      ::shutdown(c.fd, SHUT_RDWR);
      ::close(c.fd);
      c.fd = -1;
    }
  });
}

void blast_shard::on_completion(shard::shard&, const io::completion& done) noexcept {
  const io::op_kind kind = done.kind();
  if (kind == _kind_misc) return;
  connection* c = _connections.get(done.tag());
  if (c == nullptr || c->fd < 0 || _stopping) {  // stale: give its buffer back
    if (done.has_buffer() && _buffers) {
      (void)_buffers->consume(done);
      _buffers->recycle(done.buffer_id());
    }
    return;
  }
  if (kind == _kind_connect) {
    on_connect(*c, done);
  } else if (kind == _kind_recv) {
    on_recv(*c, done);
  } else if (kind == _kind_send) {
    on_send(*c, done);
  }
}

bool blast_shard::take_session() noexcept {
  if (_stopping || _shared.stop_starting.load(std::memory_order_relaxed)) return false;
  if (_config.sessions == 0) return true;
  return _shared.sessions_left.fetch_sub(1, std::memory_order_relaxed) > 0;
}

connection* blast_shard::open_session() noexcept {
  auto h = _connections.acquire();
  if (h.object == nullptr) return nullptr;
  connection& c = *h.object;
  c.owner = this;
  c.timeout.owner = &c;
  c.slot = h.slot;
  c.generation = h.generation;
  if (!c.session) {
    smtp::client_config client;
    client.helo_name = _config.ehlo;
    client.pipelining = _config.pipelining != pipelining_mode::off;
    client.tls = _config.tls == tls_mode::starttls ? smtp::client_tls_policy::required
                                                   : smtp::client_tls_policy::none;
    c.session.emplace(client);
    c.rcpt_text.resize(_config.recipients);
    c.rcpts.resize(_config.recipients);
    if (_config.bdat) {
      c.parser.emplace();
      c.commands.resize(std::size_t{_config.recipients} * (address_bytes_max + 16) + 512);
    }
  } else {
    c.session->reset();
  }
  if (c.parser) c.parser->reset();
  c.scripted = c.bdat_pending = false;
  c.connecting = c.recv_armed = c.send_in_flight = c.body_pending = c.data_in_flight = false;
  c.greeted = c.ehlo_done = c.waiting_eof = c.for_due = c.has_error = false;
  c.staged_bytes = c.iov_count = c.iov_first = 0;
  c.messages_left = _config.messages_per_session;
  c.tls.reset();
  c.tls_handshaking = false;
  c.target = _next_target % static_cast<std::uint32_t>(_config.targets.size());
  _counters.sessions_started.add();
  _counters.open.add(1);
  const core::endpoint& target = _config.targets[_next_target++ % _config.targets.size()];
  c.connect_ns = core::monotonic_ns();
  c.fd = ::socket(target.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c.fd < 0) {
    c.set_error(error_kind::connect_other);
    finish(c);
    return nullptr;
  }
  const int one = 1;  // commands and the end of data go out at once (no Nagle wait)
  ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  _shard->timers().schedule_after(c.timeout.node, _config.timeout_ms);
  if (!_shard->ring().prep_connect(c.fd, target.sockaddr_pointer(), target.length,
                                   c.user_data(_kind_connect))) {
    c.set_error(error_kind::connect_other);
    finish(c);
    return nullptr;
  }
  c.connecting = true;
  return &c;
}

void blast_shard::on_connect(connection& c, const io::completion& done) noexcept {
  c.connecting = false;
  if (done.res < 0) {
    c.set_error(connect_error(-done.res));
    finish(c);
    return;
  }
  arm_recv(c);
  if (_config.tls == tls_mode::implicit) start_tls(c);  // RFC 8314: the ClientHello first
}

void blast_shard::arm_recv(connection& c) noexcept {
  if (_shard->ring().prep_recv_multishot(c.fd, buffer_group, c.user_data(_kind_recv))) {
    c.recv_armed = true;
  }
}

void blast_shard::on_recv(connection& c, const io::completion& done) noexcept {
  if (!done.more()) c.recv_armed = false;
  std::span<std::byte> bytes;
  if (done.has_buffer()) bytes = _buffers->consume(done);
  const auto recycle = [&] {
    if (done.has_buffer()) _buffers->recycle(done.buffer_id());
  };
  if (done.res == -ENOBUFS) {  // the group ran dry: re-arm once buffers come back
    _buffers->note_enobufs();
    _recv_retry.push_back(std::uint64_t{c.generation} << 32 | c.slot);
    return;
  }
  if (done.res <= 0 || c.waiting_eof) {
    recycle();
    if (c.waiting_eof) {
      if (done.res <= 0 || !c.recv_armed) finish(c);
      return;
    }
    if (done.res < 0) c.set_error(connect_error(-done.res));
    c.session->on_peer_closed();
    drain_events(c);
    return;
  }
  const std::uint32_t generation = c.generation;
  const std::string_view chunk(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  _shard->timers().schedule_after(c.timeout.node, _config.timeout_ms);
  if (c.tls) feed_tls(c, chunk);
  else feed_plaintext(c, chunk);
  recycle();
  if (c.generation == generation && c.fd >= 0 && !c.recv_armed) arm_recv(c);
}

// Server bytes (decrypted, with TLS) into the engine or the scripted BDAT parser.
bool blast_shard::feed_plaintext(connection& c, std::string_view chunk) noexcept {
  const std::uint32_t generation = c.generation;
  while (!chunk.empty()) {
    if (c.scripted) {
      feed_scripted(c, chunk);
      if (c.generation != generation || c.fd < 0) return false;
      continue;
    }
    const std::size_t used = c.session->feed(chunk);
    chunk.remove_prefix(used);
    if (!c.greeted && c.session->phase() != smtp::client_phase::greeting) {
      c.greeted = true;
      c.ehlo_ns = core::monotonic_ns();
      _results.connect.record(c.ehlo_ns - c.connect_ns);
    }
    drain_events(c);
    if (c.generation != generation || c.fd < 0) return false;
    if (c.waiting_eof) break;  // the session ended
    if (used == 0 && !c.session->event_pending()) break;
  }
  return true;
}

// Ciphertext → tls::session → plaintext → feed_plaintext; the handshake's end restarts the
// engine after STARTTLS (it says EHLO again, RFC 3207 §4.2).
bool blast_shard::feed_tls(connection& c, std::string_view chunk) noexcept {
  const std::uint32_t generation = c.generation;
  for (int guard = 0; guard < 256; ++guard) {
    const std::size_t taken = c.tls->feed(chunk);
    chunk.remove_prefix(taken);
    if (c.tls_handshaking && c.tls->handshake_completed()) {
      c.tls_handshaking = false;
      _counters.tls_handshakes.add();
      if (c.tls->resumed()) _counters.tls_resumed.add();
      _results.tls.record(core::monotonic_ns() - c.tls_start_ns);
      if (_config.tls == tls_mode::starttls) c.session->tls_started();
    }
    if (c.tls->state() == tls::state::failed ||
        (c.tls_handshaking && c.tls->state() != tls::state::handshake)) {
      _counters.tls_failures.add();
      c.tls_handshaking = false;
      c.set_error(error_kind::tls);
      finish(c);
      return false;
    }
    const std::string_view plain = c.tls->plaintext();
    if (!plain.empty()) {
      const bool alive = feed_plaintext(c, plain);
      if (!alive || c.generation != generation) return false;
      c.tls->consume_plaintext(plain.size());
    } else if (!c.tls_handshaking && c.session->output().size() > 0) {
      drain_events(c);  // the EHLO after tls_started()
    }
    if (c.waiting_eof || (chunk.empty() && c.tls->plaintext().empty())) break;
    if (taken == 0 && plain.empty()) break;
  }
  if (c.fd >= 0 && !c.send_in_flight && !c.tls->ciphertext().empty()) submit_send(c);
  return true;
}

void blast_shard::start_tls(connection& c) noexcept {
  const std::string key = _config.targets[c.target].to_string();
  tls::client_options options;
  options.cache = _config.tls_resume ? &_tls_cache : nullptr;
  options.cache_key = key;
  options.now_s = core::wall_seconds();
  c.tls = tls::session::connect(_config.tls_context, options);
  if (!c.tls) {
    c.set_error(error_kind::tls);
    finish(c);
    return;
  }
  c.tls_handshaking = true;
  c.tls_start_ns = core::monotonic_ns();
  if (!c.send_in_flight) submit_send(c);  // the ClientHello
}

// --starttls / --tls: the pieces flush() gathered are encrypted, as far as they fit.
void blast_shard::encrypt_pending(connection& c) noexcept {
  while (c.iov_first < c.iov_count && c.tls->established()) {
    iovec& piece = c.iov[c.iov_first];
    const std::size_t taken =
        c.tls->write({static_cast<const char*>(piece.iov_base), piece.iov_len});
    piece.iov_base = static_cast<char*>(piece.iov_base) + taken;
    piece.iov_len -= taken;
    if (piece.iov_len != 0) return;  // the ciphertext buffer is full: after this send
    ++c.iov_first;
  }
}

void blast_shard::drain_events(connection& c) noexcept {
  for (;;) {
    const smtp::client_event e = c.session->next_event();
    switch (e.kind) {
      case smtp::client_event_kind::none: flush(c); return;
      case smtp::client_event_kind::ready: on_ready(c); break;
      case smtp::client_event_kind::recipient_result: on_recipient_result(c, e); break;
      case smtp::client_event_kind::send_body: c.body_pending = true; break;
      case smtp::client_event_kind::message_result: on_message_result(c, e); break;
      case smtp::client_event_kind::start_tls: start_tls(c); break;
      case smtp::client_event_kind::closed: on_closed(c, e); return;
    }
  }
}

}  // namespace ringmta::blast

namespace ringmta::blast {

void blast_shard::on_ready(connection& c) noexcept {
  const std::uint64_t now = core::monotonic_ns();
  if (!c.ehlo_done) {
    c.ehlo_done = true;
    _results.ehlo.record(now - c.ehlo_ns);
    if (c.for_due) {
      c.for_due = false;
      --_connecting_for_due;
    }
    if (_config.bdat && !use_bdat(c)) _counters.bdat_fallbacks.add();  // said at the end
    if (_config.pipelining == pipelining_mode::on && !c.session->pipelining_active()) {
      c.set_error(error_kind::no_pipelining);
      c.session->quit();
      return;
    }
  }
  next_step(c, now);
}

// Between transactions: the next message (now, or when due under --rate), or QUIT.
void blast_shard::next_step(connection& c, std::uint64_t now) noexcept {
  const bool stop = _stopping || _shared.stop_starting.load(std::memory_order_relaxed);
  if (c.messages_left == 0 || stop) {
    c.session->quit();
    return;
  }
  if (_rate <= 0) {
    start_message(c, now);
    return;
  }
  if (_scheduled < due_messages(now)) {
    start_message(c, intended_ns(_scheduled++));
    return;
  }
  _idle.push_back(std::uint64_t{c.generation} << 32 | c.slot);
}

void blast_shard::start_message(connection& c, std::uint64_t intended_ns) noexcept {
  const std::uint64_t id = _shared.next_id.fetch_add(1, std::memory_order_relaxed);
  const double draw = _random.uniform();
  const body_variant* body = &_config.bodies.back();
  for (const body_variant& v : _config.bodies) {
    if (draw < v.cumulative_weight) {
      body = &v;
      break;
    }
  }
  c.body = body;
  c.from_bytes = static_cast<std::uint32_t>(
      _config.from->render(c.from, sizeof c.from, id, 0, 0, _config.domain_suffix, _id));
  const std::uint32_t domains = std::max<std::uint32_t>(1, _config.domains);
  for (std::uint32_t r = 0; r < _config.recipients; ++r) {
    const auto d = static_cast<std::uint32_t>((id * _config.recipients + r) % domains);
    const std::size_t n = _config.to->render(c.rcpt_text[r].data(), address_bytes_max, id, r, d,
                                             _config.domain_suffix, _id);
    c.rcpts[r] = smtp::client_recipient{{c.rcpt_text[r].data(), n}, {}, {}};
  }
  c.header_bytes = static_cast<std::uint32_t>(render_header(
      _config, id, {c.from, c.from_bytes}, c.rcpts[0].address, *body, c.header, sizeof c.header));
  smtp::client_envelope envelope;
  envelope.reverse_path = {c.from, c.from_bytes};
  envelope.recipients = c.rcpts;
  envelope.size_bytes = c.header_bytes + body->bytes;
  c.message_start_ns = intended_ns;
  c.data_sent_ns = 0;
  if (_rate > 0 && core::monotonic_ns() > intended_ns + 1'000'000) ++_results.late_starts;
  --c.messages_left;
  _counters.messages_started.add();
  if (use_bdat(c)) {
    prepare_bdat(c);
    return;
  }
  c.session->start_transaction(envelope);
}

bool blast_shard::use_bdat(const connection& c) const noexcept {
  return _config.bdat && c.session->extensions().chunking && c.session->pipelining_active();
}

// RFC 3030 §2 + RFC 2920: the whole transaction in one write; the replies (MAIL, each RCPT,
// BDAT) come back in order.
void blast_shard::prepare_bdat(connection& c) noexcept {
  char* out = c.commands.data();
  const auto put = [&out](std::string_view text) {
    std::memcpy(out, text.data(), text.size());
    out += text.size();
  };
  put("MAIL FROM:<");
  put({c.from, c.from_bytes});
  put(">\r\n");
  for (const smtp::client_recipient& r : c.rcpts) {
    put("RCPT TO:<");
    put(r.address);
    put(">\r\n");
  }
  put("BDAT ");
  char digits[20];
  put({digits, loadkit::write_decimal(digits, c.header_bytes + c.body->bytes, 1)});
  put(" LAST\r\n");
  c.command_bytes = static_cast<std::uint32_t>(out - c.commands.data());
  c.scripted = true;
  c.bdat_pending = true;
  c.replies_seen = 0;
  c.rcpt_accepted = 0;
  _counters.messages_bdat.add();
}

void blast_shard::feed_scripted(connection& c, std::string_view& chunk) noexcept {
  const std::uint32_t generation = c.generation;
  while (!chunk.empty() && c.scripted) {
    const smtp::reply_parser::step step = c.parser->feed(chunk);
    chunk.remove_prefix(step.consumed);
    if (step.what == smtp::reply_parser::status::failed) {
      c.set_error(error_kind::protocol_error);
      finish(c);
      return;
    }
    if (step.what == smtp::reply_parser::status::reply_done) {
      on_scripted_reply(c, c.parser->reply());
      if (c.generation != generation || c.fd < 0) return;
    }
  }
}

void blast_shard::on_scripted_reply(connection& c, const smtp::parsed_reply& reply) noexcept {
  const std::uint32_t index = c.replies_seen++;
  const std::uint32_t recipients = static_cast<std::uint32_t>(c.rcpts.size());
  if (index == 0) return;  // MAIL: its failure shows in every later reply
  if (index <= recipients) {
    if (reply.code < _results.rcpt_codes.size()) ++_results.rcpt_codes[reply.code];
    if (reply.positive()) {
      ++c.rcpt_accepted;
      _counters.recipients_accepted.add();
    } else if (reply.permanent()) {
      _counters.recipients_permfail.add();
    } else {
      _counters.recipients_tempfail.add();
    }
    return;
  }
  const std::uint64_t now = core::monotonic_ns();  // the reply to BDAT LAST ends the message
  if (reply.code < _results.data_codes.size()) ++_results.data_codes[reply.code];
  if (c.data_sent_ns != 0) _results.data.record(now - c.data_sent_ns);
  _results.message.record(now > c.message_start_ns ? now - c.message_start_ns : 0);
  if (c.rcpt_accepted == 0) {
    _counters.messages_no_recipients.add();
  } else if (reply.positive()) {
    _counters.messages_accepted.add();
  } else if (reply.permanent()) {
    _counters.messages_permfail.add();
  } else {
    _counters.messages_tempfail.add();
  }
  c.scripted = false;
  next_step(c, now);
  drain_events(c);  // QUIT from the engine, or the next scripted write
}

void blast_shard::on_recipient_result(connection& c, const smtp::client_event& e) noexcept {
  (void)c;
  if (!e.reply->local && e.reply->code < _results.rcpt_codes.size()) {
    ++_results.rcpt_codes[e.reply->code];
  }
  switch (e.outcome) {
    case smtp::client_outcome::accepted: _counters.recipients_accepted.add(); break;
    case smtp::client_outcome::permanent_failure: _counters.recipients_permfail.add(); break;
    default: _counters.recipients_tempfail.add(); break;
  }
}

void blast_shard::on_message_result(connection& c, const smtp::client_event& e) noexcept {
  const std::uint64_t now = core::monotonic_ns();
  if (!e.reply->local && e.reply->code < _results.data_codes.size()) {
    ++_results.data_codes[e.reply->code];
  }
  if (c.data_sent_ns != 0) _results.data.record(now - c.data_sent_ns);
  _results.message.record(now > c.message_start_ns ? now - c.message_start_ns : 0);
  switch (e.outcome) {
    case smtp::client_outcome::accepted: _counters.messages_accepted.add(); break;
    case smtp::client_outcome::permanent_failure: _counters.messages_permfail.add(); break;
    case smtp::client_outcome::no_recipients: _counters.messages_no_recipients.add(); break;
    case smtp::client_outcome::transient_failure: _counters.messages_tempfail.add(); break;
  }
}

void blast_shard::on_closed(connection& c, const smtp::client_event& e) noexcept {
  if (e.close_reason != smtp::client_close_reason::quit) c.set_error(close_error(e.close_reason));
  if (!c.has_error && c.recv_armed) {
    // RFC 5321 §4.1.1.10: the server closes after 221; waiting for its FIN leaves TIME_WAIT
    // on its side, not on our ephemeral ports.
    c.waiting_eof = true;
    _shard->timers().schedule_after(c.timeout.node, eof_wait_ms);
    return;
  }
  finish(c);
}

// Hands the engine's output (and the body, when due) to the kernel in one sendmsg.
void blast_shard::flush(connection& c) noexcept {
  if (c.send_in_flight || c.fd < 0 || c.connecting) return;
  c.iov_count = 0;
  c.iov_first = 0;
  c.staged_bytes = 0;
  const auto stage = [&c] {
    const std::string_view out = c.session->output();
    if (out.empty()) return;
    RINGMTA_ASSERT(c.staged_bytes + out.size() <= staging_bytes);
    std::memcpy(c.staging + c.staged_bytes, out.data(), out.size());
    c.iov[c.iov_count++] = iovec{c.staging + c.staged_bytes, out.size()};
    c.staged_bytes += static_cast<std::uint32_t>(out.size());
    c.session->consume_output(out.size());
  };
  // The message itself: its tagged header, the shared body text, then its own tail.
  const auto add_message = [&] {
    c.iov[c.iov_count++] = iovec{c.header, c.header_bytes};
    if (c.body->prefix_bytes > 0) {
      c.iov[c.iov_count++] =
          iovec{const_cast<char*>(_config.body_text.data()), c.body->prefix_bytes};
    }
    c.iov[c.iov_count++] = iovec{const_cast<char*>(c.body->tail.data()), c.body->tail.size()};
    _counters.body_bytes.add(c.header_bytes + c.body->bytes);
  };
  stage();
  if (c.bdat_pending) {
    c.bdat_pending = false;
    c.iov[c.iov_count++] = iovec{c.commands.data(), c.command_bytes};
    add_message();
    c.data_in_flight = true;
  }
  if (c.body_pending) {
    c.body_pending = false;
    add_message();
    c.session->body_sent();  // the engine adds ".\r\n" (RFC 5321 §4.1.1.4)
    stage();
    c.data_in_flight = true;
  }
  if (c.iov_count == 0 && !(c.tls && !c.tls->ciphertext().empty())) return;
  submit_send(c);
}

void blast_shard::submit_send(connection& c) noexcept {
  if (c.tls) {  // send ciphertext: whatever is queued, after encrypting what fits
    encrypt_pending(c);
    const std::string_view out = c.tls->ciphertext();
    if (out.empty()) return;
    if (!_shard->ring().prep_send(c.fd, out.data(), static_cast<std::uint32_t>(out.size()),
                                  c.user_data(_kind_send))) {
      c.set_error(error_kind::connect_other);
      finish(c);
      return;
    }
    c.send_in_flight = true;
    return;
  }
  c.message = msghdr{};
  c.message.msg_iov = c.iov + c.iov_first;
  c.message.msg_iovlen = c.iov_count - c.iov_first;
  if (!_shard->ring().prep_sendmsg(c.fd, &c.message, c.user_data(_kind_send))) {
    c.set_error(error_kind::connect_other);
    finish(c);
    return;
  }
  c.send_in_flight = true;
}

void blast_shard::on_send(connection& c, const io::completion& done) noexcept {
  c.send_in_flight = false;
  if (done.res < 0) {
    c.set_error(connect_error(-done.res));
    c.session->on_peer_closed();
    drain_events(c);
    return;
  }
  auto sent = static_cast<std::size_t>(done.res);
  if (c.tls) {
    c.tls->consume_ciphertext(sent);
    if (c.iov_first < c.iov_count || !c.tls->ciphertext().empty()) {
      submit_send(c);  // more of the message, or what OpenSSL queued meanwhile
      return;
    }
    sent = 0;
  }
  while (c.iov_first < c.iov_count && sent >= c.iov[c.iov_first].iov_len) {
    sent -= c.iov[c.iov_first].iov_len;
    ++c.iov_first;
  }
  if (c.iov_first < c.iov_count) {  // short send: the rest goes now
    c.iov[c.iov_first].iov_base = static_cast<char*>(c.iov[c.iov_first].iov_base) + sent;
    c.iov[c.iov_first].iov_len -= sent;
    submit_send(c);
    return;
  }
  if (c.data_in_flight) {
    c.data_in_flight = false;
    c.data_sent_ns = core::monotonic_ns();
  }
  drain_events(c);  // output the engine produced meanwhile (and a body now due)
}

void blast_shard::finish(connection& c) noexcept {
  auto& ring = _shard->ring();
  if (c.recv_armed) {
    (void)ring.prep_cancel(c.user_data(_kind_recv), io::pack_user_data(_kind_misc, 0, 0), false,
                           io::sqe::skip_success);
  }
  if (c.connecting) {
    (void)ring.prep_cancel(c.user_data(_kind_connect), io::pack_user_data(_kind_misc, 0, 0),
                           false, io::sqe::skip_success);
  }
  if (c.fd >= 0 && !ring.prep_close(c.fd, io::pack_user_data(_kind_misc, 0, 1),
                                    io::sqe::skip_success)) {
    ::close(c.fd);
  }
  c.fd = -1;
  _shard->timers().cancel(c.timeout.node);
  if (c.tls_handshaking) _counters.tls_failures.add();  // the handshake never completed
  c.tls.reset();
  c.tls_handshaking = false;
  if (c.for_due) --_connecting_for_due;
  if (c.scripted) _counters.messages_tempfail.add();  // lost with the connection: retry later
  if (c.has_error) {
    _counters.errors[static_cast<std::size_t>(c.error)].add();
    _counters.sessions_failed.add();
  } else {
    _counters.sessions_done.add();
    _results.session.record(core::monotonic_ns() - c.connect_ns);
  }
  _counters.open.add(~std::uint64_t{0});  // -1
  _connections.release(c.slot);
  pump();
  check_finished();
}

void blast_shard::on_connection_timeout(core::timer_node& node) noexcept {
  connection& c = loadkit::owned_timer<connection>::owner_of(node);
  blast_shard& self = *c.owner;
  if (c.waiting_eof || c.connecting || !c.greeted) {
    if (!c.waiting_eof) c.set_error(error_kind::timeout);
    self.finish(c);
    return;
  }
  c.set_error(error_kind::timeout);
  c.session->on_timeout();
  self.drain_events(c);
}

// Message k of this shard's schedule: shards are offset by 1/R from each other, each at R/T.
std::uint64_t blast_shard::intended_ns(std::uint64_t k) const noexcept {
  const double seconds = double(_id) / _config.rate + double(k) / _rate;
  return _shared.start_ns + static_cast<std::uint64_t>(seconds * 1e9);
}

std::uint64_t blast_shard::due_messages(std::uint64_t now_ns) const noexcept {
  const double elapsed = double(now_ns - _shared.start_ns) / 1e9 - double(_id) / _config.rate;
  if (elapsed < 0) return 0;
  return static_cast<std::uint64_t>(std::floor(elapsed * _rate)) + 1;
}

// Starts what is due: sessions up to this shard's concurrency (closed loop), or due messages on
// idle sessions, opening sessions for the rest while there is room (open loop).
void blast_shard::pump() noexcept {
  if (_stopping || _pumping) return;  // finish() inside open_session() must not recurse
  _pumping = true;
  pump_once();
  _pumping = false;
}

void blast_shard::pump_once() noexcept {
  const bool stop = _shared.stop_starting.load(std::memory_order_relaxed);
  if (stop) {  // --duration: idle sessions say QUIT, nothing new starts
    _swap.swap(_idle);
    for (const std::uint64_t handle : _swap) {
      connection* c = _connections.get(static_cast<std::uint32_t>(handle),
                                       static_cast<std::uint32_t>(handle >> 32));
      if (c != nullptr && c->fd >= 0) {
        c->session->quit();
        drain_events(*c);
      }
    }
    _swap.clear();
    return;
  }
  if (_rate <= 0) {
    while (_connections.live_count() < _concurrency && take_session()) open_session();
    return;
  }
  const std::uint64_t now = core::monotonic_ns();
  const std::uint64_t due = due_messages(now);
  while (_scheduled < due) {
    if (!_idle.empty()) {
      const std::uint64_t handle = _idle.back();
      _idle.pop_back();
      connection* c = _connections.get(static_cast<std::uint32_t>(handle),
                                       static_cast<std::uint32_t>(handle >> 32));
      if (c == nullptr || c->fd < 0 || c->session->phase() != smtp::client_phase::ready) continue;
      start_message(*c, intended_ns(_scheduled++));
      drain_events(*c);
      continue;
    }
    if (due - _scheduled <= _connecting_for_due) break;  // sessions on their way take these
    if (_connections.live_count() >= _concurrency || !take_session()) break;  // backlog
    if (connection* c = open_session()) {
      c->for_due = true;
      ++_connecting_for_due;
    }
  }
}

void blast_shard::check_finished() noexcept {
  if (_finished || _connections.live_count() != 0) return;
  const bool exhausted = _stopping || _shared.stop_starting.load(std::memory_order_relaxed) ||
                         (_config.sessions != 0 &&
                          _shared.sessions_left.load(std::memory_order_relaxed) <= 0) ||
                         _concurrency == 0;
  if (!exhausted) return;
  _finished = true;
  _shared.shards_finished.fetch_add(1, std::memory_order_acq_rel);
}

void blast_shard::on_tick(core::timer_node& node) noexcept {
  blast_shard& self = loadkit::owned_timer<blast_shard>::owner_of(node);
  if (self._stopping) return;
  self._swap.swap(self._recv_retry);
  for (const std::uint64_t handle : self._swap) {
    connection* c = self._connections.get(static_cast<std::uint32_t>(handle),
                                          static_cast<std::uint32_t>(handle >> 32));
    if (c != nullptr && c->fd >= 0 && !c->recv_armed) self.arm_recv(*c);
  }
  self._swap.clear();
  self.pump();
  self.check_finished();
  self._shard->timers().schedule_after(node, self._rate > 0 ? 1 : 20);
}

}  // namespace ringmta::blast
