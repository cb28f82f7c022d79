#include "ringmta/smtp/client_session.h"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "client_syntax.h"
#include "ringmta/core/assert.h"
#include "ringmta/core/base64.h"

namespace ringmta::smtp {

namespace {

using namespace client_syntax;

// Joins two static texts into a caller's buffer (local reply texts; no allocation).
std::string_view join(char (&buffer)[160], std::string_view first, std::string_view second) {
  const std::size_t first_bytes = std::min(first.size(), sizeof(buffer));
  std::memcpy(buffer, first.data(), first_bytes);
  const std::size_t second_bytes = std::min(second.size(), sizeof(buffer) - first_bytes);
  std::memcpy(buffer + first_bytes, second.data(), second_bytes);
  return {buffer, first_bytes + second_bytes};
}

// The LFs in [text, text + bytes): memchr jumps from one to the next (a command is tens of
// bytes, a pipelined batch a few commands), where a byte-by-byte count looks at every byte.
std::uint32_t count_lines(const char* text, std::size_t bytes) noexcept {
  std::uint32_t lines = 0;
  const char* const end = text + bytes;
  while (text != end) {
    const void* lf = std::memchr(text, '\n', static_cast<std::size_t>(end - text));
    if (lf == nullptr) break;
    ++lines;
    text = static_cast<const char*>(lf) + 1;
  }
  return lines;
}

}  // namespace

std::string_view describe(client_phase phase) noexcept {
  switch (phase) {
    case client_phase::greeting: return "waiting for the greeting";
    case client_phase::ehlo: return "waiting for the reply to EHLO";
    case client_phase::helo: return "waiting for the reply to HELO";
    case client_phase::starttls: return "waiting for the reply to STARTTLS";
    case client_phase::auth: return "waiting for the reply to AUTH";
    case client_phase::tls_handshake: return "during the TLS handshake";
    case client_phase::ready: return "while idle";
    case client_phase::rset: return "waiting for the reply to RSET";
    case client_phase::mail: return "waiting for the reply to MAIL";
    case client_phase::rcpt: return "waiting for the reply to RCPT";
    case client_phase::data: return "waiting for the reply to DATA";
    case client_phase::body: return "while sending the message body";
    case client_phase::data_end: return "waiting for the reply to end of data";
    case client_phase::quit: return "waiting for the reply to QUIT";
    case client_phase::closed: return "after the connection was closed";
  }
  return "in an unknown phase";
}

std::string_view describe(client_close_reason reason) noexcept {
  switch (reason) {
    case client_close_reason::quit: return "quit";
    case client_close_reason::greeting_rejected: return "greeting rejected";
    case client_close_reason::hello_rejected: return "EHLO/HELO rejected";
    case client_close_reason::tls_unavailable: return "TLS unavailable";
    case client_close_reason::tls_failed: return "TLS handshake failed";
    case client_close_reason::auth_unavailable: return "AUTH unavailable";
    case client_close_reason::auth_failed: return "AUTH refused";
    case client_close_reason::service_closing: return "service closing (421)";
    case client_close_reason::reply_unexpected: return "unexpected reply";
    case client_close_reason::protocol_error: return "protocol error";
    case client_close_reason::peer_closed: return "connection closed by peer";
    case client_close_reason::timeout: return "timeout";
  }
  return "unknown";
}

std::string_view describe(client_outcome outcome) noexcept {
  switch (outcome) {
    case client_outcome::accepted: return "accepted";
    case client_outcome::transient_failure: return "transient failure";
    case client_outcome::permanent_failure: return "permanent failure";
    case client_outcome::no_recipients: return "no recipients accepted";
  }
  return "unknown";
}

client_session::client_session(const client_config& config) noexcept
    : _config(config), _parser(config.reply_lines_max) {
  bool eight_bit = false;
  // The HELO name is configuration: it must be a plain, bounded token (RFC 5321 §4.1.1.1).
  RINGMTA_ASSERT(!config.helo_name.empty());
  RINGMTA_ASSERT(parameter_ok(config.helo_name, client_helo_name_bytes_max));
  RINGMTA_ASSERT(path_ok(config.helo_name, eight_bit) && !eight_bit);
  reset();
}

void client_session::reset(client_tls_policy tls, std::string_view helo_name) noexcept {
  // Configuration, checked like the constructor's (RFC 5321 §4.1.1.1).
  bool eight_bit = false;
  RINGMTA_ASSERT(!helo_name.empty());
  RINGMTA_ASSERT(parameter_ok(helo_name, client_helo_name_bytes_max));
  RINGMTA_ASSERT(path_ok(helo_name, eight_bit) && !eight_bit);
  _config.helo_name = helo_name;
  reset(tls);
}

void client_session::reset(client_tls_policy tls) noexcept {
  _config.tls = tls;
  reset();
}

void client_session::reset() noexcept {
  _tls_discarded = 0;
  _parser.reset();
  _extensions.clear();
  _phase = client_phase::greeting;
  _tls_active = false;
  _auth_stage = auth_stage::none;
  _authenticated = false;
  _rset_needed = false;
  _unanswered = 1;  // the greeting is the reply to connecting (RFC 5321 §3.1)
  _envelope = {};
  _transaction_active = false;
  _needs_smtputf8 = _mail_failed = _stop_sending = _empty_body = false;
  _bdat = _chunk_pending = false;
  _send_step = _reply_step = _accepted = 0;
  _report_next = _known_end = _replied_index = 0;
  _bulk_from = bulk_none;
  _queue_head = _queue_count = 0;
  _output_begin = _output_end = 0;
}

// ---------------------------------------------------------------------------------------------
// Events and output.

client_event client_session::next_event() noexcept {
  if (_report_next < _known_end) return report_recipient(_report_next++);
  if (_queue_count == 0) return {};
  const queued_event item = _queue[_queue_head];
  _queue_head = static_cast<std::uint8_t>((_queue_head + 1) % queue_capacity);
  --_queue_count;
  client_event event;
  event.kind = item.kind;
  event.outcome = item.outcome;
  event.close_reason = item.close_reason;
  event.reply = item.reply;
  return event;
}

void client_session::queue(client_event_kind kind, client_outcome outcome,
                           client_close_reason reason, const parsed_reply* reply) noexcept {
  RINGMTA_ASSERT(_queue_count < queue_capacity);
  const auto slot = static_cast<std::uint8_t>((_queue_head + _queue_count) % queue_capacity);
  _queue[slot] = queued_event{kind, outcome, reason, reply};
  ++_queue_count;
}

client_event client_session::report_recipient(std::uint32_t index) noexcept {
  client_event event;
  event.kind = client_event_kind::recipient_result;
  event.recipient_index = index;
  switch (check_recipient(index)) {
    case recipient_problem::bad_address:
      // RFC 3463 X.1.3: bad destination mailbox address syntax; never sent to the server.
      _local_reply.assign_local(553, enhanced(5, 1, 3), "bad recipient address syntax");
      event.outcome = client_outcome::permanent_failure;
      event.reply = &_local_reply;
      return event;
    case recipient_problem::bad_parameter:
      _local_reply.assign_local(501, enhanced(5, 5, 4), "invalid DSN parameter for recipient");
      event.outcome = client_outcome::permanent_failure;
      event.reply = &_local_reply;
      return event;
    case recipient_problem::none:
      break;
  }
  if (index >= _bulk_from) {
    event.outcome = _bulk_outcome;
    event.reply = &_bulk_reply;
  } else {
    RINGMTA_ASSERT(index == _replied_index);
    event.outcome = _replied_outcome;
    event.reply = &_parser.reply();
  }
  return event;
}

void client_session::consume_output(std::size_t bytes) noexcept {
  RINGMTA_ASSERT(bytes <= static_cast<std::size_t>(_output_end - _output_begin));
  // Every command ends in CRLF and holds no other LF: each LF handed out is one command the
  // server may now answer.
  _unanswered += count_lines(_output + _output_begin, bytes);
  _output_begin = static_cast<std::uint16_t>(_output_begin + bytes);
  if (_output_begin == _output_end) _output_begin = _output_end = 0;
  pump();
}

std::size_t client_session::output_room() noexcept {
  if (_output_begin == _output_end) {
    _output_begin = _output_end = 0;
  } else if (_output_begin > 0 && sizeof(_output) - _output_end < client_command_bytes_max) {
    std::memmove(_output, _output + _output_begin, _output_end - _output_begin);
    _output_end = static_cast<std::uint16_t>(_output_end - _output_begin);
    _output_begin = 0;
  }
  return sizeof(_output) - _output_end;
}

void client_session::append(std::string_view text) noexcept {
  RINGMTA_ASSERT(text.size() <= sizeof(_output) - _output_end);
  if (text.empty()) return;  // an empty view may hold a null pointer: no memcpy
  std::memcpy(_output + _output_end, text.data(), text.size());
  _output_end = static_cast<std::uint16_t>(_output_end + text.size());
}

void client_session::append_number(std::uint64_t value) noexcept {
  char digits[24];
  const auto converted = std::to_chars(digits, digits + sizeof(digits), value);
  append({digits, static_cast<std::size_t>(converted.ptr - digits)});
}

void client_session::write_command(std::string_view verb, std::string_view argument) noexcept {
  RINGMTA_ASSERT(output_room() >= client_command_bytes_max);
  append(verb);
  if (!argument.empty()) {
    append(" ");
    append(argument);
  }
  append("\r\n");
}

// ---------------------------------------------------------------------------------------------
// Input.

std::size_t client_session::feed(std::string_view bytes) noexcept {
  if (_phase == client_phase::closed) return bytes.size();
  if (event_pending()) return 0;
  if (_phase == client_phase::tls_handshake) {
    // A later receive handed to the engine instead of to TLS: nothing in it can be trusted.
    fail_connection_local(client_close_reason::protocol_error, 421, enhanced(4, 5, 0),
                          "plaintext after the reply to STARTTLS");
    return bytes.size();
  }
  std::size_t used = 0;
  while (used < bytes.size()) {
    if (_phase == client_phase::tls_handshake) break;  // the rest is discarded below
    const reply_parser::step step = _parser.feed(bytes.substr(used));
    used += step.consumed;
    if (step.what == reply_parser::status::failed) {
      char text[160];
      fail_connection_local(client_close_reason::protocol_error, 421, enhanced(4, 5, 0),
                            join(text, "malformed reply: ", describe(_parser.error())));
      return bytes.size();
    }
    if (step.what == reply_parser::status::need_more) break;
    on_reply_line();
    if (step.what == reply_parser::status::reply_done) on_reply(_parser.reply());
    if (_phase == client_phase::closed) return bytes.size();
    if (event_pending()) break;
  }
  if (_phase == client_phase::tls_handshake && used < bytes.size()) {
    // RFC 3207 §5, CVE-2011-0411 mirrored: whatever follows the 220 to STARTTLS in plaintext
    // was sent ahead of the handshake (a server's TLS data can only answer our ClientHello),
    // so it is injection. It is dropped, never read as replies after the handshake (Postfix
    // flushes its input the same way); the embedder sees how much in tls_discarded_bytes().
    _tls_discarded += bytes.size() - used;
    return bytes.size();
  }
  return used;
}

void client_session::on_reply_line() noexcept {
  // RFC 5321 §4.1.1.1: after the first line (the server's name) each line of a positive EHLO
  // reply is one extension keyword with its parameters.
  if (_phase == client_phase::ehlo && _parser.code() / 100 == 2 && _parser.line_count() > 1) {
    _extensions.parse_line(_parser.line_text());
  }
}

void client_session::on_reply(const parsed_reply& reply) noexcept {
  if (_unanswered == 0) {
    // Nothing was asked. A 421 may come unasked when the server shuts down (RFC 5321 §3.8).
    fail_connection(reply.code == 421 ? client_close_reason::service_closing
                                      : client_close_reason::reply_unexpected,
                    reply, false);
    return;
  }
  --_unanswered;
  if (reply.code == 421 && _phase != client_phase::quit) {
    fail_connection(client_close_reason::service_closing, reply, false);
    return;
  }
  if (_transaction_active) {
    on_transaction_reply(reply);
  } else {
    on_setup_reply(reply);
  }
}

void client_session::on_setup_reply(const parsed_reply& reply) noexcept {
  const bool unexpected_class = reply.code_class() == 3;
  switch (_phase) {
    case client_phase::greeting:
      if (unexpected_class) break;
      if (!reply.positive()) {
        // RFC 5321 §3.1: after a 554 banner the client sends QUIT; the embedder tries another MX.
        fail_connection(client_close_reason::greeting_rejected, reply, true);
        return;
      }
      write_command("EHLO", _config.helo_name);
      _phase = client_phase::ehlo;
      return;
    case client_phase::ehlo:
      if (unexpected_class) break;
      if (reply.positive()) {
        _extensions.esmtp = true;
        after_hello();
      } else if (reply.permanent()) {
        // RFC 5321 §3.2: a server that refuses EHLO may still speak SMTP; fall back to HELO.
        _extensions.clear();
        write_command("HELO", _config.helo_name);
        _phase = client_phase::helo;
      } else {
        fail_connection(client_close_reason::hello_rejected, reply, true);
      }
      return;
    case client_phase::helo:
      if (unexpected_class) break;
      if (!reply.positive()) {
        fail_connection(client_close_reason::hello_rejected, reply, true);
        return;
      }
      _extensions.clear();
      after_hello();
      return;
    case client_phase::starttls:
      if (reply.code == 220) {
        _phase = client_phase::tls_handshake;
        queue(client_event_kind::start_tls, client_outcome::accepted, client_close_reason::quit,
              nullptr);
        return;
      }
      if (reply.positive() || unexpected_class) break;
      if (_config.tls == client_tls_policy::required) {
        fail_connection(client_close_reason::tls_unavailable, reply, true);
      } else {
        enter_ready();  // opportunistic: carry on in plaintext (RFC 3207 §4.1)
      }
      return;
    case client_phase::auth:
      on_auth_reply(reply);
      return;
    case client_phase::quit:
      fail_connection(client_close_reason::quit, reply, false);
      return;
    default:
      break;
  }
  fail_connection(client_close_reason::reply_unexpected, reply, false);
}

void client_session::after_hello() noexcept {
  if (_config.tls != client_tls_policy::none && !_tls_active) {
    if (_extensions.starttls) {
      // RFC 3207 §4: STARTTLS ends a pipelining group; nothing is sent until the handshake.
      write_command("STARTTLS", {});
      _phase = client_phase::starttls;
      return;
    }
    if (_config.tls == client_tls_policy::required) {
      fail_connection_local(client_close_reason::tls_unavailable, 421, enhanced(4, 7, 4),
                            "TLS is required, but STARTTLS was not offered", true);
      return;
    }
  }
  if (_config.auth.mode != client_auth_mode::off) return start_auth();
  enter_ready();
}

void client_session::set_auth(const client_auth& auth) noexcept {
  // Configuration (loaded and checked at start-up): a NUL would end PLAIN's field early, CR/LF
  // cannot occur inside base64 but would mean a broken file.
  for (const std::string_view field : {auth.user, auth.password}) {
    RINGMTA_ASSERT(field.size() <= client_auth_field_bytes_max);
    RINGMTA_ASSERT(field.find_first_of(std::string_view("\0\r\n", 3)) == std::string_view::npos);
  }
  RINGMTA_ASSERT(auth.mode == client_auth_mode::off || !auth.user.empty());
  _config.auth = auth;
}

// RFC 4954 §4. The credentials never go out unprotected unless the operator said so, and never
// to a server that did not offer AUTH (it would not know what to do with them anyway).
void client_session::start_auth() noexcept {
  const client_auth& auth = _config.auth;
  std::string_view refusal;
  if (auth.mode == client_auth_mode::refused)
    refusal = "credentials for this host need TLS policy required or verify; not sent";
  else if (auth.mode == client_auth_mode::over_tls && !_tls_active)
    refusal = "AUTH needs TLS here and the session is not encrypted; credentials not sent";
  else if (!_extensions.auth)
    refusal = "the server does not offer AUTH; not sending the message unauthenticated";
  const std::string_view offered = _extensions.auth_mechanisms();
  auto lists = [&](std::string_view name) {
    for (std::size_t at = 0; at < offered.size();) {
      std::size_t end = offered.find(' ', at);
      if (end == std::string_view::npos) end = offered.size();
      if (equals_upper(offered.substr(at, end - at), name)) return true;
      at = end + 1;
    }
    return false;
  };
  const bool plain = lists("PLAIN");
  if (refusal.empty() && !plain && !lists("LOGIN"))
    refusal = "no AUTH mechanism in common (PLAIN, LOGIN)";
  if (!refusal.empty()) {
    fail_connection_local(client_close_reason::auth_unavailable, 454, enhanced(4, 7, 0),
                          refusal, true);
    return;
  }
  _phase = client_phase::auth;
  if (plain) {  // RFC 4616 §2: [authzid] NUL authcid NUL passwd, as the initial response
    _auth_stage = auth_stage::plain;
    write_base64_command("AUTH PLAIN ", auth.user, auth.password);
  } else {
    _auth_stage = auth_stage::login_start;
    write_command("AUTH", "LOGIN");
  }
}

// 235 ends the exchange; LOGIN's two 334 prompts get the user and the password (whatever
// their text says, as every client does); anything 4xx/5xx ends the connection.
void client_session::on_auth_reply(const parsed_reply& reply) noexcept {
  const bool last = _auth_stage == auth_stage::plain || _auth_stage == auth_stage::login_password;
  if (reply.code == 235 && last) {
    _auth_stage = auth_stage::none;
    _authenticated = true;
    enter_ready();
    return;
  }
  if (reply.code == 334 && _auth_stage == auth_stage::login_start) {
    _auth_stage = auth_stage::login_user;
    write_base64_command({}, _config.auth.user);
    return;
  }
  if (reply.code == 334 && _auth_stage == auth_stage::login_user) {
    _auth_stage = auth_stage::login_password;
    write_base64_command({}, _config.auth.password);
    return;
  }
  _auth_stage = auth_stage::none;
  if (reply.code >= 400) {
    fail_connection(client_close_reason::auth_failed, reply, true);
    return;
  }
  // An unexpected 2xx/3xx: the server's state is unknown, so no QUIT (it may be read as a SASL
  // response); the connection just ends.
  fail_connection(client_close_reason::reply_unexpected, reply, false);
}

// "AUTH PLAIN " + base64(NUL user NUL password) (RFC 4616 §2, no authzid) when `password`
// is given, else base64(user) alone (a LOGIN response; the password goes the same way).
void client_session::write_base64_command(std::string_view prefix, std::string_view first,
                                          std::string_view second) noexcept {
  const bool plain_form = !prefix.empty();
  char clear[2 * client_auth_field_bytes_max + 2];
  std::size_t n = 0;
  if (plain_form) clear[n++] = '\0';
  std::memcpy(clear + n, first.data(), first.size());
  n += first.size();
  if (plain_form) {
    clear[n++] = '\0';
    std::memcpy(clear + n, second.data(), second.size());
    n += second.size();
  }
  char encoded[core::base64_encoded_bytes(sizeof clear)];
  const std::size_t written = core::base64_encode({clear, n}, encoded);
  RINGMTA_ASSERT(output_room() >= client_command_bytes_max && written > 0);
  append(prefix);
  append({encoded, written});
  append("\r\n");
  // Neither the clear text nor its encoding stays in this stack frame.
  volatile char* wipe_clear = clear;
  for (std::size_t i = 0; i < n; ++i) wipe_clear[i] = 0;
  volatile char* wipe_encoded = encoded;
  for (std::size_t i = 0; i < written; ++i) wipe_encoded[i] = 0;
}

void client_session::enter_ready() noexcept {
  _phase = client_phase::ready;
  queue(client_event_kind::ready, client_outcome::accepted, client_close_reason::quit, nullptr);
}

void client_session::fail_connection_local(client_close_reason reason, std::uint16_t code,
                                           reply_enhanced_code code_enhanced,
                                           std::string_view text, bool send_quit) noexcept {
  _close_reply.assign_local(code, code_enhanced, text);
  fail_connection(reason, _close_reply, send_quit);
}

void client_session::fail_connection(client_close_reason reason, const parsed_reply& reply,
                                     bool send_quit) noexcept {
  if (_phase == client_phase::closed) return;
  _close_reply.copy_from(reply);
  // Events that invite the embedder to go on (ready, send_body, start_tls) are void now; a
  // message_result already queued stands.
  std::uint8_t kept = 0;
  queued_event keep[queue_capacity];
  for (std::uint8_t i = 0; i < _queue_count; ++i) {
    const queued_event& item = _queue[(_queue_head + i) % queue_capacity];
    if (item.kind == client_event_kind::message_result) keep[kept++] = item;
  }
  _queue_head = 0;
  _queue_count = 0;
  for (std::uint8_t i = 0; i < kept; ++i) _queue[_queue_count++] = keep[i];

  _phase = client_phase::closed;
  if (_transaction_active) {
    if (_mail_failed) {
      // The recipients already carry MAIL's verdict; the message keeps it too.
      conclude(_bulk_outcome, _bulk_reply, false);
    } else {
      // RFC 5321 §4.5.3.2 / §3.8: a lost connection or a timeout defers whatever is
      // undecided. After "." this may deliver twice (RFC 1047); that beats losing mail.
      fail_all_recipients(client_outcome::transient_failure, _close_reply);
      conclude(client_outcome::transient_failure, _bulk_reply, false);
    }
  }
  _stop_sending = true;
  queue(client_event_kind::closed, client_outcome::accepted, reason, &_close_reply);
  // Commands not yet handed out are void (a pipelined batch after a 421 or a malformed reply);
  // only a polite QUIT remains to be sent.
  _output_begin = _output_end = 0;
  if (send_quit) write_command("QUIT", {});
}

// ---------------------------------------------------------------------------------------------
// Embedder calls.

void client_session::body_sent() noexcept {
  if (_bdat) {  // the chunk followed the BDAT command: nothing to add
    RINGMTA_ASSERT(_chunk_pending);
    _chunk_pending = false;
    return;
  }
  RINGMTA_ASSERT(_phase == client_phase::body);
  // RFC 5321 §4.1.1.4: the body ended in CRLF, so "." CRLF completes <CRLF>.<CRLF>.
  RINGMTA_ASSERT(output_room() >= 3);
  append(".\r\n");
  _phase = client_phase::data_end;
}

void client_session::tls_started() noexcept {
  RINGMTA_ASSERT(_phase == client_phase::tls_handshake);
  _tls_active = true;
  // RFC 3207 §4.2: forget everything learnt in plaintext and say EHLO again.
  _extensions.clear();
  _parser.reset();
  write_command("EHLO", _config.helo_name);
  _phase = client_phase::ehlo;
}

void client_session::tls_failed(std::string_view why) noexcept {
  RINGMTA_ASSERT(_phase == client_phase::tls_handshake);
  // RFC 3463 X.7.5: cryptographic failure. No QUIT: plaintext may not follow STARTTLS.
  fail_connection_local(client_close_reason::tls_failed, 421, enhanced(4, 7, 5),
                        why.empty() ? std::string_view("TLS handshake failed") : why);
}

void client_session::quit() noexcept {
  if (_phase == client_phase::closed) return;
  RINGMTA_ASSERT(_phase == client_phase::ready && !_transaction_active);
  write_command("QUIT", {});
  _phase = client_phase::quit;
}

void client_session::on_timeout() noexcept {
  if (_phase == client_phase::closed) return;
  if (_phase == client_phase::quit) {
    fail_connection_local(client_close_reason::quit, 221, enhanced(2, 0, 0),
                          "no reply to QUIT before the timeout");
    return;
  }
  char text[160];
  fail_connection_local(client_close_reason::timeout, 421, enhanced(4, 4, 2),
                        join(text, "timeout ", describe(_phase)));
}

void client_session::on_peer_closed() noexcept {
  if (_phase == client_phase::closed) return;
  if (_phase == client_phase::quit) {
    fail_connection_local(client_close_reason::quit, 221, enhanced(2, 0, 0),
                          "connection closed after QUIT");
    return;
  }
  char text[160];
  const std::string_view when =
      _parser.mid_reply() ? std::string_view("in the middle of a reply") : describe(_phase);
  fail_connection_local(client_close_reason::peer_closed, 421, enhanced(4, 4, 2),
                        join(text, "connection closed by the server ", when));
}

}  // namespace ringmta::smtp
