// server_session: input framing, the DATA and BDAT state machines, lifecycle events.
// Commands live in server_commands.cc, reply formatting in server_reply.cc.
#include "ringmta/smtp/server_session.h"

#include <algorithm>
#include <cstring>

#include "ringmta/core/assert.h"
#include "ringmta/smtp/data_scanner.h"
#include "server_internal.h"

namespace ringmta::smtp {

server_session::server_session(const server_config& config, server_handler& handler,
                               std::span<char> long_line_storage) noexcept
    : _config(config),
      _handler(handler),
      _tls_active(config.tls_active),
      // 0: no fixed maximum (RFC 1870 §4: "SIZE" without a number); a huge bound keeps the
      // comparisons free of overflow.
      _message_bytes_max(config.limits.message_bytes_max != 0 ? config.limits.message_bytes_max
                                                              : std::uint64_t{1} << 62) {
  // Set here, not in the initializer list: _line is declared (and so "initialized") later.
  _line_buffer = long_line_storage.size() > command_line_capacity
                     ? long_line_storage
                     : std::span<char>(_line.data(), _line.size());
  RINGMTA_ASSERT(config.limits.command_line_bytes_max >= 64);
  RINGMTA_ASSERT(config.limits.command_line_bytes_max <= 512 + 128);  // room for extensions
  // line_limit(): the parts that depend on the configuration alone (AUTH= follows TLS).
  const extension_set& ext = config.extensions;
  _mail_line_bytes_max = config.limits.command_line_bytes_max + (ext.size ? 26 : 0) +
                         (ext.eight_bit_mime || ext.binary_mime ? 16 : 0) +
                         (ext.smtputf8 ? 10 : 0) + (ext.dsn ? 316 : 0);
  _rcpt_line_bytes_max = config.limits.command_line_bytes_max + (ext.dsn ? 536 : 0);
  RINGMTA_ASSERT(config.hostname.size() <= domain_bytes_max);
}

void server_session::start() noexcept {
  RINGMTA_ASSERT(_phase == phase::not_started);
  std::array<char, detail::reply_line_bytes_max> text;
  write_reply(220, "", detail::join(text, {_config.hostname, " ", _config.greeting_text}), true);
  _phase = phase::command;
}

void server_session::start_refusing(std::string_view text) noexcept {
  RINGMTA_ASSERT(_phase == phase::not_started);
  std::array<char, detail::reply_line_bytes_max> line;
  write_reply(554, "", detail::join(line, {_config.hostname, " ", text}), true);
  --_errors;  // the greeting is not the client's error
  _refusing = true;
  _phase = phase::command;
}

std::size_t server_session::feed(std::string_view bytes) noexcept {
  RINGMTA_ASSERT(_phase != phase::not_started);
  std::size_t used = 0;
  while (used < bytes.size() && _pending == pending_kind::none) {
    const std::string_view rest = bytes.substr(used);
    switch (_phase) {
      case phase::not_started:
      case phase::closed:
      case phase::tls_handshake:
        return bytes.size();  // discarded: after QUIT/421, or plaintext behind STARTTLS
      case phase::command:
        if (output_free() < detail::step_output_bytes_max) return used;  // drain output first
        used += feed_command(rest);
        break;
      case phase::skip_line:
        used += feed_skip(rest);
        break;
      case phase::data:
        used += feed_data(rest);
        break;
      case phase::bdat_chunk:
        used += feed_bdat(rest);
        break;
    }
    check_error_limit();
  }
  if (_phase == phase::closed || _phase == phase::tls_handshake) return bytes.size();
  return used;
}

void server_session::check_error_limit() noexcept {
  const std::uint32_t limit = _config.limits.errors_max;  // 0: unlimited
  if (limit != 0 && _errors >= limit && _phase != phase::closed &&
      _pending == pending_kind::none) {
    close_with(421, "4.7.0", "Too many errors, closing connection", abort_reason::connection_lost);
  }
}

bool server_session::output_full() const noexcept {
  return output_free() < detail::step_output_bytes_max;
}

// Collects one command line (up to and including LF). Zero-copy when the whole line is in
// `bytes`; otherwise the part seen so far waits in the line buffer. The limit depends on the
// command (line_limit), known once its first five octets are.
std::size_t server_session::feed_command(std::string_view bytes) noexcept {
  std::array<char, 5> head_bytes;
  std::string_view head = bytes.substr(0, 5);  // the usual case: nothing buffered
  if (_line_bytes_buffered >= 5) {
    head = std::string_view(_line_buffer.data(), 5);
  } else if (_line_bytes_buffered > 0) {
    std::size_t n = detail::copy_into(head_bytes, {_line_buffer.data(), _line_bytes_buffered});
    for (std::size_t i = 0; n < 5 && i < bytes.size(); ++i) head_bytes[n++] = bytes[i];
    head = std::string_view(head_bytes.data(), n);
  }
  const std::size_t limit = line_limit(head);
  const std::size_t room = limit > _line_bytes_buffered ? limit - _line_bytes_buffered : 0;
  const std::size_t window = bytes.size() < room ? bytes.size() : room;
  const void* lf = std::memchr(bytes.data(), '\n', window);
  if (lf != nullptr) {
    const std::size_t take =
        static_cast<std::size_t>(static_cast<const char*>(lf) - bytes.data()) + 1;
    if (_line_bytes_buffered == 0) {
      process_line(bytes.substr(0, take));
    } else {
      std::memcpy(_line_buffer.data() + _line_bytes_buffered, bytes.data(), take);
      const std::size_t total = _line_bytes_buffered + take;
      _line_bytes_buffered = 0;
      process_line(std::string_view(_line_buffer.data(), total));
    }
    return take;
  }
  if (bytes.size() >= room) {  // no LF within the limit
    _line_bytes_buffered = 0;
    _auth_exchange = false;
    write_reply(500, "5.5.2", "Line too long");
    _phase = phase::skip_line;
    return room;
  }
  std::memcpy(_line_buffer.data() + _line_bytes_buffered, bytes.data(), bytes.size());
  _line_bytes_buffered += bytes.size();
  return bytes.size();
}

// RFC 5321 §4.5.3.1.4: 512 octets, which an extension may raise for the commands it adds
// parameters to. MAIL: SIZE +26 (RFC 1870 §3), SMTPUTF8 +10 (RFC 6531 §3.4), AUTH= +500 (RFC
// 4954 §5), and for BODY and DSN the longest values the parameter parser takes: " BODY=
// BINARYMIME" 16, " RET=HDRS ENVID=" + 100 characters as xtext (up to 300 octets, RFC 3461
// §4.3, §4.4). RCPT with DSN: " NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=" + 500 (RFC 3461 §4.1,
// §4.2). AUTH lines and SASL responses: auth_line_bytes_max (12288, RFC 4954 §4). `head` is
// the line's first octets (up to five): too few to tell the command allow the largest limit.
// XCLIENT from a client it is offered to: command_line_capacity (Postfix's line_length_limit
// is 2048; NAME, HELO and LOGIN may each be 255 octets before xtext encoding).
std::size_t server_session::line_limit(std::string_view head) const noexcept {
  const std::size_t base = _config.limits.command_line_bytes_max;
  const std::size_t auth =
      std::min<std::size_t>(_config.limits.auth_line_bytes_max, _line_buffer.size());
  if (_auth_exchange) return auth;
  const bool auth_now = auth_advertised();
  const std::size_t mail = _mail_line_bytes_max + (auth_now ? 500 : 0);
  const std::size_t xclient =
      _xclient_offered ? std::max(base, command_line_capacity) : base;
  if (head.size() < 5) {
    const std::size_t most = std::max({mail, _rcpt_line_bytes_max, xclient});
    return auth_now ? std::max(auth, most) : most;
  }
  if (detail::starts_with_upper(head, "MAIL ")) return mail;
  if (detail::starts_with_upper(head, "RCPT ")) return _rcpt_line_bytes_max;
  if (auth_now && detail::starts_with_upper(head, "AUTH ")) return std::max(auth, base);
  if (detail::starts_with_upper(head, "XCLIE")) return xclient;
  return base;
}

std::size_t server_session::feed_skip(std::string_view bytes) noexcept {
  const void* lf = std::memchr(bytes.data(), '\n', bytes.size());
  if (lf == nullptr) return bytes.size();
  ++_progress;
  _phase = phase::command;
  return static_cast<std::size_t>(static_cast<const char*>(lf) - bytes.data()) + 1;
}

void server_session::begin_message(body_form form) noexcept {
  _summary = body_summary{};
  _summary.form = form;
  _summary.declared = _mail_parameters.body;
  _data_state = data_state::line_start;
  _message_open = true;
  _message_failed = false;
  _bare_seen_last = false;
  _dot_nul_dropped = false;
  _line_bytes = 0;
  _stuffed_dots = 0;
  _in_header_section = true;
  _line_lead_dot = false;
}

void server_session::fail_message(abort_reason reason) noexcept {
  if (_message_failed) return;
  _message_failed = true;
  _failure = reason;
  _handler.on_data_aborted(reason);
}

// Hands body octets to the embedder unless the message already failed; enforces the size limit
// before the octets that would exceed it are handed over.
void server_session::emit_body(const char* begin, const char* end) noexcept {
  if (begin == end || _message_failed) return;
  const std::uint64_t bytes = static_cast<std::uint64_t>(end - begin);
  _summary.wire_bytes += bytes;
  if (_summary.wire_bytes > _message_bytes_max + _stuffed_dots) {
    fail_message(abort_reason::message_too_big);
    return;
  }
  _handler.on_body(std::string_view(begin, bytes), _summary.form);
}

void server_session::end_line() noexcept {
  ++_summary.line_count;
  const std::uint32_t limit = _config.limits.text_line_bytes_max;
  if (limit != 0 && _line_bytes + 2 > limit) fail_message(abort_reason::line_too_long);
  if (_line_bytes == 0 && !_line_lead_dot) _in_header_section = false;  // RFC 5322 §2.1
  _line_bytes = 0;
  _line_lead_dot = false;
  _data_state = data_state::line_start;
}

namespace {
constexpr std::string_view held_dot = ".";
constexpr std::string_view crlf = "\r\n";
constexpr std::string_view lf_only = "\n";
constexpr std::string_view lone_dot_line = "..\r\n";  // a "." line that must not end DATA
constexpr std::string_view crlf_space = "\r\n ";
}  // namespace

// long_line_policy::fold: the octets [c.p, next_special) continue the current line (no CR,
// LF or NUL among them); each time the line reaches the limit it is broken there. The break
// depends only on the line's octets, never on how the client's segments split them, so the
// stored message (and its DKIM signature) is the same for the same input.
void server_session::fold_long_line(data_cursor& c, const char* next_special) noexcept {
  const std::uint64_t limit = _config.limits.text_line_bytes_max - 2;  // octets before CRLF
  while (!_message_failed) {
    const std::uint64_t room = limit - (_line_lead_dot ? 1 : 0);  // a stuffing dot is stored
    if (_line_bytes + static_cast<std::uint64_t>(next_special - c.p) <= room) return;
    RINGMTA_ASSERT(_line_bytes <= room);
    const char* const at = c.p + (room - _line_bytes);  // the first octet that does not fit
    emit_body(c.run, at);
    c.run = c.p = at;
    // RFC 5322 §2.2.3: in the header section CRLF and a blank continue the field; in DATA a
    // "." that now begins a line gets its stuffing dot (RFC 5321 §4.5.2).
    const bool space = _in_header_section;
    const bool dot = !space && *at == '.' && _summary.form == body_form::wire;
    emit_static(space ? crlf_space : crlf);
    if (dot) emit_static(held_dot);
    _stuffed_dots += 2 + (space || dot ? 1 : 0);  // ours: not counted against the size limit
    _summary.folded = true;
    ++_summary.line_count;
    _line_bytes = space ? 1 : 0;
    _line_lead_dot = dot;
  }
}

void server_session::emit_static(std::string_view bytes) noexcept {
  emit_body(bytes.data(), bytes.data() + bytes.size());
}

// DATA body (RFC 5321 §4.1.1.4, §4.5.2). Only <CR><LF>.<CR><LF> ends it; a line-start "." is
// held back until the next octet shows whether it is the end marker or a stuffing dot; bare CR
// and bare LF fail the message or are normalized (never a line start that could end it).
// The hot path is line_start/in_line: one vector search per line, CRLF checked in place.
std::size_t server_session::feed_data(std::string_view bytes) noexcept {
  data_cursor c{bytes.data(), bytes.data(), bytes.data() + bytes.size(), false};
  const bool normalize = _config.bare_line_ending == bare_line_ending_policy::normalize;
  while (c.p < c.end) {
    switch (_data_state) {
      case data_state::line_start:
        if (*c.p == '.') {
          emit_body(c.run, c.p);
          c.run = c.p++;
          c.dot_here = true;
          _data_state = data_state::dot;
          break;
        }
        _data_state = data_state::in_line;
        [[fallthrough]];
      case data_state::in_line: {
        const char* q = find_cr_lf_nul(c.p, c.end, _summary.eight_bit);
        if (_config.long_lines == long_line_policy::fold && _config.limits.text_line_bytes_max)
          fold_long_line(c, q);
        _line_bytes += static_cast<std::uint64_t>(q - c.p);
        c.p = q;
        if (c.p == c.end) break;
        if (*c.p == '\r' && c.p + 1 < c.end && c.p[1] == '\n') {  // CRLF in one buffer
          c.p += 2;
          _bare_seen_last = false;
          end_line();
        } else if (*c.p == '\r') {
          ++c.p;
          _data_state = data_state::after_cr;
        } else if (*c.p == '\0') {
          const bool line_empty = _line_bytes == 0;
          data_nul(c, normalize);
          if (normalize && line_empty) _data_state = data_state::line_start_after_nul;
        } else if (!normalize) {  // bare LF: RFC 5321 §2.3.8
          fail_message(abort_reason::bare_lf);
          ++c.p;
        } else {
          emit_body(c.run, c.p);
          emit_static(crlf);
          c.run = ++c.p;
          normalized_line_end();
        }
        break;
      }
      case data_state::line_start_after_nul:
        data_after_line_start_nul(c);
        break;
      case data_state::after_cr:
        data_after_cr(c, normalize);
        break;
      case data_state::dot:
        data_after_dot(c, normalize);
        break;
      case data_state::dot_cr:
        if (data_after_dot_cr(c, normalize)) {
          end_of_data();
          return static_cast<std::size_t>(c.p - bytes.data());
        }
        break;
    }
  }
  // A held "." or ".\r" is not handed over yet: the next octets decide what it is.
  if (_data_state != data_state::dot && _data_state != data_state::dot_cr) emit_body(c.run, c.end);
  const std::uint32_t limit = _config.limits.text_line_bytes_max;
  if (limit != 0 && _line_bytes + 2 > limit) fail_message(abort_reason::line_too_long);
  return bytes.size();
}

// A CR ended the previous buffer or was just seen: LF completes the line, anything else makes
// it a bare CR.
void server_session::data_after_cr(data_cursor& c, bool normalize) noexcept {
  if (*c.p == '\n') {
    ++c.p;
    _bare_seen_last = false;
    end_line();
  } else if (!normalize) {
    fail_message(abort_reason::bare_cr);
    _data_state = data_state::in_line;
  } else {  // the CR is in the run (or was handed over already); supply its LF
    emit_body(c.run, c.p);
    emit_static(lf_only);
    c.run = c.p;
    normalized_line_end();
  }
}

// NUL (RFC 2045 §2.7, §2.8: neither 7bit nor 8bit data contains it; many a downstream ends
// a string there): fails the message, or is dropped under the normalize policy.
void server_session::data_nul(data_cursor& c, bool normalize) noexcept {
  if (!normalize) {
    fail_message(abort_reason::nul);
    ++c.p;
    return;
  }
  emit_body(c.run, c.p);
  c.run = ++c.p;
  _summary.normalized = true;
}

// The client's line began with NUL (dropped), so a "." after it is text, not a stuffing dot
// (RFC 5321 §4.5.2 unstuffs only a first "."). Without the NUL it begins the stored line, so
// it gets a stuffing dot of its own: "<NUL>.<CR><LF>" must not become the end marker there.
void server_session::data_after_line_start_nul(data_cursor& c) noexcept {
  if (*c.p == '.') {
    emit_body(c.run, c.p);
    emit_static(held_dot);
    c.run = c.p;
    ++_stuffed_dots;
  }
  _data_state = data_state::in_line;
}

// A line started with "." (held): CR may begin the end marker, LF is a bare LF, anything else
// makes the dot a stuffing dot (RFC 5321 §4.5.2: kept in wire form, not counted by SIZE).
void server_session::data_after_dot(data_cursor& c, bool normalize) noexcept {
  if (*c.p == '\0' && normalize) {
    // Dropped, and the dot stays held (re-emitted from static storage if the line goes on):
    // ".<NUL><CR><LF>" must not become ".<CR><LF>", the end marker, in the stored wire form.
    c.run = ++c.p;
    c.dot_here = false;
    _dot_nul_dropped = true;
    _summary.normalized = true;
    return;
  }
  _dot_nul_dropped = _dot_nul_dropped && *c.p == '\r';
  if (*c.p == '\r') {
    ++c.p;
    _data_state = data_state::dot_cr;
  } else if (*c.p == '\n') {
    if (!normalize) {  // the body is abandoned: `run` need not stay exact
      fail_message(abort_reason::bare_lf);
      _data_state = data_state::in_line;
      ++c.p;
    } else {
      emit_lone_dot_line();
      c.run = ++c.p;
      normalized_line_end();
    }
  } else {
    ++_stuffed_dots;
    _line_lead_dot = true;  // stored with the line: folding counts it (_line_bytes does not)
    if (!c.dot_here) {  // the dot came in an earlier buffer
      emit_static(held_dot);
      c.run = c.p;
    }
    _data_state = data_state::in_line;
  }
}

// ".\r" held: LF after a real CRLF line start is the end of data (returns true).
bool server_session::data_after_dot_cr(data_cursor& c, bool normalize) noexcept {
  const bool nul_dropped = _dot_nul_dropped;
  _dot_nul_dropped = false;
  if (*c.p == '\n' && !_bare_seen_last && !nul_dropped) {
    ++c.p;
    return true;
  }
  if (*c.p == '\n') {  // a "." line after a normalized ending or a NUL: re-stuffed, no end
    emit_lone_dot_line();
    c.run = ++c.p;
    _bare_seen_last = false;
    end_line();
  } else if (!normalize) {
    fail_message(abort_reason::bare_cr);
    _data_state = data_state::in_line;
  } else {
    emit_lone_dot_line();
    c.run = c.p;
    normalized_line_end();
  }
  return false;
}

// A "." line whose ending was not a real CRLF pair: written as ".." CRLF (a stuffed dot), so
// the stored wire form can never contain an end marker the client did not send.
void server_session::emit_lone_dot_line() noexcept {
  ++_stuffed_dots;
  emit_static(lone_dot_line);
}

void server_session::normalized_line_end() noexcept {
  _summary.normalized = true;
  _bare_seen_last = true;
  end_line();
}

// BDAT chunk octets (RFC 3030 §2): exactly the announced count, raw. Unless the message is
// BINARYMIME, the octets obey the same line rules as DATA (bare CR, bare LF, NUL, line length:
// scan_bdat), since they may be relayed over DATA where a bare CR could end a line downstream.
std::size_t server_session::feed_bdat(std::string_view bytes) noexcept {
  const std::size_t take =
      _bdat_remaining < bytes.size() ? static_cast<std::size_t>(_bdat_remaining) : bytes.size();
  if (!_bdat_discard && !_message_failed) {
    _summary.message_bytes += take;
    if (_summary.message_bytes > _message_bytes_max) {
      fail_message(abort_reason::message_too_big);
    } else if (_summary.declared == body_type::binary_mime) {  // no line rules
      for (const char* p = bytes.data(); p < bytes.data() + take;) {
        p = find_cr_lf_nul(p, bytes.data() + take, _summary.eight_bit);
        if (p < bytes.data() + take && *p++ == '\n') ++_summary.line_count;
      }
      emit_body(bytes.data(), bytes.data() + take);
    } else {
      scan_bdat(bytes.substr(0, take));
    }
  }
  _bdat_remaining -= take;
  if (_bdat_remaining == 0) end_of_chunk();
  return take;
}

// The line rules of feed_data without dot handling (BDAT content is not dot-stuffed and has
// no end marker). A CR at the end of a chunk waits in after_cr for the next chunk's first
// octet; a CR that ends the message is bare (finish_bdat_message).
void server_session::scan_bdat(std::string_view chunk) noexcept {
  data_cursor c{chunk.data(), chunk.data(), chunk.data() + chunk.size(), false};
  const bool normalize = _config.bare_line_ending == bare_line_ending_policy::normalize;
  while (c.p < c.end && !_message_failed) {
    if (_data_state == data_state::after_cr) {
      data_after_cr(c, normalize);
      continue;
    }
    const char* q = find_cr_lf_nul(c.p, c.end, _summary.eight_bit);
    if (q != c.p) _data_state = data_state::in_line;
    if (_config.long_lines == long_line_policy::fold && _config.limits.text_line_bytes_max)
      fold_long_line(c, q);
    _line_bytes += static_cast<std::uint64_t>(q - c.p);
    c.p = q;
    if (c.p == c.end) break;
    if (*c.p == '\r') {
      ++c.p;
      _data_state = data_state::after_cr;
    } else if (*c.p == '\0') {
      data_nul(c, normalize);
    } else if (!normalize) {  // bare LF: RFC 5321 §2.3.8
      fail_message(abort_reason::bare_lf);
    } else {
      emit_body(c.run, c.p);
      emit_static(crlf);
      c.run = ++c.p;
      normalized_line_end();
    }
  }
  if (!_message_failed) emit_body(c.run, c.end);
  const std::uint32_t limit = _config.limits.text_line_bytes_max;
  if (limit != 0 && _line_bytes + 2 > limit) fail_message(abort_reason::line_too_long);
}

// The LAST chunk was read. A CR that ended it is bare; a last line without CRLF gets one: RFC
// 3030 allows such a message, but DATA, over which it may be relayed, cannot carry it (the
// next hop would never see the end of data) and every stored body ends with CRLF.
void server_session::finish_bdat_message() noexcept {
  if (_message_failed || _summary.declared == body_type::binary_mime) return;
  if (_data_state == data_state::after_cr) {
    if (_config.bare_line_ending == bare_line_ending_policy::reject) {
      fail_message(abort_reason::bare_cr);
      return;
    }
    emit_static(lf_only);
    normalized_line_end();
  } else if (_data_state == data_state::in_line) {
    emit_static(crlf);
    _summary.final_crlf_added = true;
    end_line();
  }
}

void server_session::close_with(std::uint16_t code, std::string_view enhanced,
                                std::string_view text, abort_reason reason) noexcept {
  if (_phase == phase::closed) return;
  if (_message_open) fail_message(reason);
  _message_open = false;
  _pending = pending_kind::none;
  _auth_exchange = false;
  _phase = phase::closed;
  std::array<char, detail::reply_line_bytes_max> line;
  write_reply(code, enhanced, detail::join(line, {_config.hostname, " ", text}));
}

void server_session::on_timeout() noexcept {
  close_with(421, "4.4.2", "Error: timeout exceeded", abort_reason::timeout);
}

void server_session::shutdown() noexcept {
  close_with(421, "4.3.2", "Service shutting down", abort_reason::shutdown);
}

void server_session::connection_lost() noexcept {
  if (_message_open) fail_message(abort_reason::connection_lost);
  _message_open = false;
  _pending = pending_kind::none;
  _phase = phase::closed;
}

void server_session::tls_established() noexcept {
  RINGMTA_ASSERT(_phase == phase::tls_handshake);
  // RFC 3207 §4.2: forget everything learned before TLS, the client starts over with EHLO.
  _tls_active = true;
  _helo_bytes = 0;
  _extended = false;
  _authenticated = false;
  _line_bytes_buffered = 0;
  clear_transaction(false);
  _phase = phase::command;
}

std::string_view server_session::protocol_name() const noexcept {
  // RFC 3848 (ESMTPS/ESMTPA/ESMTPSA), RFC 6531 §3.7.3 (UTF8SMTP...).
  static constexpr std::string_view names[2][4] = {
      {"ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"},
      {"UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"}};
  if (!_extended) return "SMTP";
  const int index = (_tls_active ? 1 : 0) + (_authenticated ? 2 : 0);
  return names[_smtputf8_used ? 1 : 0][index];
}

envelope_view server_session::envelope() const noexcept {
  envelope_view view;
  view.has_mail = _has_mail;
  view.reverse_path = std::string_view(_reverse_path.data(), _reverse_path_bytes);
  view.mail = &_mail_parameters;
  view.recipient_count = _recipients;
  return view;
}

}  // namespace ringmta::smtp
