// server_session: the mail transaction commands (MAIL, RCPT, DATA, BDAT), end of message, and
// the small commands (RSET, NOOP, QUIT, VRFY, EXPN, HELP, STARTTLS, AUTH).
#include <charconv>
#include <cstring>

#include "ringmta/core/assert.h"
#include "ringmta/smtp/server_session.h"
#include "server_internal.h"

namespace ringmta::smtp {

using detail::iequals_upper;
using detail::starts_with_upper;

namespace {

// Splits " FROM:<path> params" after the given prefix. A space after the colon is tolerated
// (many clients send one, RFC 5321 §4.1.2 does not allow it).
bool split_path_argument(std::string_view argument, std::string_view prefix,
                         std::string_view& path) noexcept {
  if (!starts_with_upper(argument, prefix)) return false;
  path = argument.substr(prefix.size());
  if (!path.empty() && path.front() == ' ') path.remove_prefix(1);
  return !path.empty() && path.front() == '<';
}

}  // namespace

bool server_session::reject_parameters(const parameter_result& result) noexcept {
  std::array<char, 96> text;
  switch (result.error) {
    case parameter_error::none:
      return false;
    case parameter_error::unknown:
      write_reply(555, "5.5.4", detail::join(text, {"Unsupported parameter: ", result.keyword}),
                  true);
      break;
    case parameter_error::duplicate:
      write_reply(501, "5.5.4", detail::join(text, {"Duplicate parameter: ", result.keyword}),
                  true);
      break;
    case parameter_error::syntax:
    case parameter_error::value:
      write_reply(501, "5.5.4", detail::join(text, {"Invalid parameter: ", result.keyword}),
                  true);
      break;
  }
  return true;
}

// Checks what follows a parsed path: nothing, or " params" (only after EHLO).
bool server_session::reject_parameter_text(std::string_view text) noexcept {
  if (text.empty()) return false;
  if (text.front() != ' ') {
    write_reply(501, "5.5.4", "Syntax error after the address");
    return true;
  }
  if (!_extended) {  // RFC 5321 §4.1.1.11: parameters need the EHLO extension model
    write_reply(555, "5.5.4", "Parameters need EHLO");
    return true;
  }
  return false;
}

void server_session::command_mail(std::string_view argument) noexcept {
  if (_helo_bytes == 0) {
    write_reply(503, "5.5.1", "Send HELO/EHLO first");
    return;
  }
  if (_has_mail) {
    write_reply(503, "5.5.1", "Nested MAIL command");
    return;
  }
  std::string_view text;
  if (!split_path_argument(argument, " FROM:", text)) {
    write_reply(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    return;
  }
  const path_result path = parse_path(text, path_kind::reverse, _config.extensions.smtputf8);
  if (path.error == path_error::utf8_not_allowed) {
    write_reply(553, "5.6.7", describe(path.error));
    return;
  }
  if (path.error != path_error::none) {
    write_reply(501, "5.1.7", describe(path.error));
    return;
  }
  const std::string_view parameters = text.substr(path.consumed);
  if (reject_parameter_text(parameters)) return;
  if (reject_parameters(parse_mail_parameters(parameters, _config.extensions, auth_advertised(),
                                              _mail_parameters, _envid)))
    return;
  if (path.box.is_utf8 && !_mail_parameters.smtputf8) {  // RFC 6531 §3.4
    write_reply(553, "5.6.7", describe(path_error::utf8_not_allowed));
    return;
  }
  if (_mail_parameters.has_size && _mail_parameters.size > _message_bytes_max) {
    write_reply(552, "5.3.4", "Message size exceeds fixed maximum message size");  // RFC 1870
    return;
  }
  _reverse_path_bytes = detail::copy_into(_reverse_path, path.box.address);
  decide(pending_kind::mail, _handler.on_mail_from(path.box, _mail_parameters));
}

void server_session::command_rcpt(std::string_view argument) noexcept {
  if (!_has_mail || _message_open) {
    write_reply(503, "5.5.1", _has_mail ? "RCPT not allowed inside a BDAT message"
                                        : "Need MAIL before RCPT");
    return;
  }
  std::string_view text;
  if (!split_path_argument(argument, " TO:", text)) {
    write_reply(501, "5.5.4", "Syntax: RCPT TO:<address>");
    return;
  }
  const path_result path = parse_path(text, path_kind::forward, _mail_parameters.smtputf8);
  if (path.error == path_error::utf8_not_allowed) {
    write_reply(553, "5.6.7", describe(path.error));
    return;
  }
  if (path.error != path_error::none) {
    write_reply(501, "5.1.3", describe(path.error));
    return;
  }
  const std::string_view parameters = text.substr(path.consumed);
  if (reject_parameter_text(parameters)) return;
  rcpt_parameters rcpt;
  if (reject_parameters(parse_rcpt_parameters(parameters, _config.extensions, rcpt, _orcpt)))
    return;
  if (_recipients >= _config.limits.recipients_max) {  // RFC 5321 §4.5.3.1.10
    write_reply(452, "4.5.3", "Too many recipients");
    return;
  }
  decide(pending_kind::rcpt, _handler.on_rcpt_to(path.box, rcpt));
}

// Checks common to DATA and BDAT; writes the reply and returns false when not allowed.
bool server_session::transaction_ready(std::uint16_t& code, std::string_view& enhanced,
                                       std::string_view& text) const noexcept {
  if (!_has_mail) {
    code = 503, enhanced = "5.5.1", text = "Need MAIL command";
    return false;
  }
  if (_recipients == 0) {  // RFC 5321 §3.3: "554 No valid recipients"
    code = 554, enhanced = "5.5.1", text = "No valid recipients";
    return false;
  }
  return true;
}

void server_session::command_data(std::string_view argument) noexcept {
  if (!argument.empty()) {
    write_reply(501, "5.5.4", "Syntax: DATA");
    return;
  }
  std::uint16_t code = 0;
  std::string_view enhanced;
  std::string_view text;
  if (!transaction_ready(code, enhanced, text)) {
    write_reply(code, enhanced, text);
    return;
  }
  if (_message_open) {
    write_reply(503, "5.5.1", "DATA not allowed inside a BDAT message");
    return;
  }
  if (_mail_parameters.body == body_type::binary_mime) {  // RFC 3030 §3
    write_reply(503, "5.5.1", "BINARYMIME needs BDAT");
    return;
  }
  begin_message(body_form::wire);
  decide(pending_kind::data_start, _handler.on_data_start());
}

// Remembers the reply of a BDAT chunk that is read and dropped: it goes out after the chunk.
void server_session::discard_chunk(std::uint16_t code, std::string_view enhanced,
                                   std::string_view text) noexcept {
  _deferred_code = code;
  _deferred_enhanced_bytes = detail::copy_into(_deferred_enhanced, enhanced);
  _deferred_text_bytes = detail::copy_into(_deferred_text, text);
  _bdat_discard = true;
  _phase = phase::bdat_chunk;
  if (_bdat_remaining == 0) end_of_chunk();
}

// RFC 3030 §2: "BDAT" SP chunk-size [SP "LAST"].
void server_session::command_bdat(std::string_view argument) noexcept {
  if (!_config.extensions.chunking) {
    write_reply(502, "5.5.1", "Command not implemented");
    return;
  }
  std::uint64_t size = 0;
  const char* digits = argument.data() + (argument.empty() ? 0 : 1);
  const char* end = argument.data() + argument.size();
  const auto parsed = std::from_chars(digits, end, size);
  const std::string_view rest(parsed.ptr, static_cast<std::size_t>(end - parsed.ptr));
  if (argument.empty() || argument[0] != ' ' || parsed.ec != std::errc() || digits[0] == '+' ||
      !(rest.empty() || iequals_upper(rest, " LAST"))) {
    // The client sends a chunk behind it whose size we cannot know: reading on would take
    // message octets for commands (a smuggling vector), so the connection ends here.
    close_with(501, "5.5.4", "Syntax: BDAT size [LAST]; closing, the chunk cannot be skipped",
               abort_reason::connection_lost);
    return;
  }
  // A chunk that alone exceeds the message size limit can only be refused (RFC 3030 §2 has
  // the server read every announced octet): reading up to 2^64-1 octets to discard them would
  // hold the connection for good, and its octets must never be taken for commands. So it is
  // refused at once and the connection closed, before anything of the chunk is read.
  if (size > _message_bytes_max) {
    close_with(552, "5.3.4", "Chunk size exceeds fixed maximum message size, closing connection",
               abort_reason::message_too_big);
    return;
  }
  _bdat_remaining = size;
  _bdat_last = !rest.empty();
  std::uint16_t code = 0;
  std::string_view enhanced;
  std::string_view text;
  if (!transaction_ready(code, enhanced, text)) {
    discard_chunk(code, enhanced, text);
    return;
  }
  if (_message_open) {
    ++_summary.chunk_count;
    _phase = phase::bdat_chunk;
    if (_bdat_remaining == 0) end_of_chunk();
    return;
  }
  begin_message(body_form::raw);
  _summary.chunk_count = 1;
  decide(pending_kind::bdat_start, _handler.on_data_start());
}

void server_session::apply_bdat_start(bool ok, const verdict& answer) noexcept {
  if (!ok) {
    // RFC 3030 §2: the transaction failed; chunks of this message already in the pipeline are
    // read and dropped, each answered with the refusal (write_failure_reply), and its LAST
    // chunk ends it. Opening a new message at the next chunk instead accepted the message
    // without the refused chunk (simulator, seed 158391188475168). The handler refused, so it
    // holds nothing: no on_data_aborted. A refused LAST chunk ends the message at once
    // (end_of_chunk) and leaves the transaction, as a refused DATA does.
    _message_failed = true;
    _failure = abort_reason::refused;
    const reply& r = answer.get_reply();
    discard_chunk(r.code, r.enhanced.empty() ? std::string_view(r.code >= 500 ? "5.0.0" : "4.0.0")
                                             : r.enhanced,
                  r.text);
    return;
  }
  _phase = phase::bdat_chunk;
  if (_bdat_remaining == 0) end_of_chunk();
}

void server_session::write_failure_reply() noexcept {
  switch (_failure) {
    case abort_reason::bare_lf:  // RFC 5321 §2.3.8: lines end with CRLF only
      write_reply(550, "5.6.0", "Message contains bare <LF>: lines must end with <CR><LF>");
      break;
    case abort_reason::bare_cr:
      write_reply(550, "5.6.0", "Message contains bare <CR>: lines must end with <CR><LF>");
      break;
    case abort_reason::nul:  // RFC 2045 §2.7, §2.8
      write_reply(550, "5.6.0", "Message contains NUL octets: not allowed in mail text");
      break;
    case abort_reason::message_too_big:  // RFC 1870 §6.2
      write_reply(552, "5.3.4", "Message size exceeds fixed maximum message size");
      break;
    case abort_reason::line_too_long:  // RFC 5321 §4.5.3.1.6
      write_reply(550, "5.6.0", "Message has a line longer than the limit");
      break;
    case abort_reason::refused:  // the first chunk's refusal (discard_chunk kept it)
      write_reply(_deferred_code,
                  std::string_view(_deferred_enhanced.data(), _deferred_enhanced_bytes),
                  std::string_view(_deferred_text.data(), _deferred_text_bytes), true);
      break;
    default:
      write_reply(451, "4.3.0", "Message aborted");
      break;
  }
}

void server_session::end_of_data() noexcept {
  ++_progress;
  _phase = phase::command;
  _message_open = false;
  if (_message_failed) {
    write_failure_reply();
    clear_transaction(false);
    return;
  }
  _summary.message_bytes = _summary.wire_bytes - _stuffed_dots;
  if (_summary.message_bytes > _message_bytes_max) {
    fail_message(abort_reason::message_too_big);
    write_failure_reply();
    clear_transaction(false);
    return;
  }
  decide(pending_kind::data_end, _handler.on_data_end(_summary));
}

void server_session::end_of_chunk() noexcept {
  ++_progress;
  _phase = phase::command;
  if (_bdat_discard) {
    _bdat_discard = false;
    write_reply(_deferred_code,
                std::string_view(_deferred_enhanced.data(), _deferred_enhanced_bytes),
                std::string_view(_deferred_text.data(), _deferred_text_bytes), true);
    if (_bdat_last && _message_open) _message_open = false;  // a refused one-chunk message
    return;
  }
  if (_bdat_last) finish_bdat_message();
  if (_message_failed) {
    write_failure_reply();
    if (_bdat_last) clear_transaction(false);
    return;
  }
  if (!_bdat_last) {
    std::array<char, 24> number;
    const auto done = std::to_chars(number.data(), number.data() + number.size(),
                                    _summary.message_bytes);
    std::array<char, 64> text;
    write_reply(250, "2.0.0",
                detail::join(text, {std::string_view(number.data(), static_cast<std::size_t>(
                                                                        done.ptr - number.data())),
                                    " octets received"}));
    return;
  }
  _message_open = false;
  decide(pending_kind::data_end, _handler.on_data_end(_summary));
}

void server_session::command_rset(std::string_view argument) noexcept {
  if (!argument.empty()) {
    write_reply(501, "5.5.4", "Syntax: RSET");
    return;
  }
  abort_open_message();
  clear_transaction(true);
  write_reply(250, "2.0.0", "Ok");
}

void server_session::command_noop(std::string_view) noexcept {  // §4.1.1.9: argument ignored
  write_reply(250, "2.0.0", "Ok");
}

void server_session::command_quit(std::string_view argument) noexcept {
  if (!argument.empty()) {
    write_reply(501, "5.5.4", "Syntax: QUIT");
    return;
  }
  abort_open_message();
  _phase = phase::closed;
  std::array<char, detail::reply_line_bytes_max> text;
  write_reply(221, "2.0.0", detail::join(text, {_config.hostname, " closing connection"}));
}

void server_session::command_vrfy(std::string_view argument) noexcept {
  if (!_config.vrfy_enabled) {
    write_reply(502, "5.5.1", "VRFY command is disabled");
    return;
  }
  if (argument.size() < 2) {
    write_reply(501, "5.5.4", "Syntax: VRFY address");
    return;
  }
  decide(pending_kind::vrfy, _handler.on_vrfy(argument.substr(1)));
}

void server_session::command_expn(std::string_view) noexcept {
  write_reply(502, "5.5.1", "EXPN command is disabled");
}

// Lists only the commands this session would accept now (EXPN is always refused).
void server_session::command_help(std::string_view) noexcept {
  std::array<char, 128> text;
  const std::string_view help = detail::join(
      text, {"Commands: EHLO HELO MAIL RCPT DATA", _config.extensions.chunking ? " BDAT" : "",
             " RSET NOOP QUIT", _config.vrfy_enabled ? " VRFY" : "", " HELP",
             _config.starttls_offered && !_tls_active ? " STARTTLS" : "",
             auth_advertised() ? " AUTH" : "", "\nSee RFC 5321"});
  write_reply(214, "2.0.0", help);
}

void server_session::command_starttls(std::string_view argument) noexcept {
  if (!_config.starttls_offered || _tls_active) {
    write_reply(_tls_active ? 503 : 502, "5.5.1",
                _tls_active ? "TLS already active" : "STARTTLS not available");
    return;
  }
  if (!argument.empty()) {
    write_reply(501, "5.5.4", "Syntax: STARTTLS");
    return;
  }
  if (_has_mail) {
    write_reply(503, "5.5.1", "STARTTLS not allowed during a mail transaction");
    return;
  }
  decide(pending_kind::starttls, _handler.on_starttls());
}

// RFC 4954 §4: AUTH mechanism [initial-response].
void server_session::command_auth(std::string_view argument) noexcept {
  if (!auth_advertised()) {
    if (_config.auth_offered)
      // RFC 4954 §6: the mechanisms need an encrypted session first.
      write_reply(538, "5.7.11", "Encryption required for requested authentication mechanism");
    else
      write_reply(502, "5.5.1", "AUTH not available");
    return;
  }
  if (!_extended || _authenticated || _has_mail) {
    write_reply(503, "5.5.1", !_extended ? "Send EHLO first"
                              : _authenticated ? "Already authenticated"
                                               : "AUTH not allowed during a mail transaction");
    return;
  }
  const std::string_view rest = argument.empty() ? argument : argument.substr(1);
  const std::size_t space = rest.find(' ');
  const std::string_view mechanism = rest.substr(0, space);
  const std::string_view initial = space == std::string_view::npos ? "" : rest.substr(space + 1);
  bool listed = false;
  for (std::size_t at = 0; at < _config.auth_mechanisms.size() && !mechanism.empty();) {
    std::size_t end = _config.auth_mechanisms.find(' ', at);
    if (end == std::string_view::npos) end = _config.auth_mechanisms.size();
    if (detail::iequals(mechanism, _config.auth_mechanisms.substr(at, end - at))) listed = true;
    at = end + 1;
  }
  if (mechanism.empty() || initial.find(' ') != std::string_view::npos) {
    write_reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
    return;
  }
  if (!listed) {
    write_reply(504, "5.5.4", "Unrecognized authentication type");
    return;
  }
  decide(pending_kind::auth, _handler.on_auth(mechanism, initial));
}

void server_session::auth_response_line(std::string_view line) noexcept {
  if (line == "*") {  // RFC 4954 §4: the client cancels
    _auth_exchange = false;
    write_reply(501, "5.7.0", "Authentication cancelled");
    return;
  }
  decide(pending_kind::auth_response, _handler.on_auth_response(line));
}

// Postfix XCLIENT_README: only from clients the embedder trusts (550 5.7.0 otherwise, as
// Postfix answers), never inside a transaction ("between MAIL and DOT, or MAIL and RSET").
void server_session::command_xclient(std::string_view argument) noexcept {
  if (!_xclient_offered) {
    write_reply(550, "5.7.0", "Error: insufficient authorization");
    _handler.on_xclient_refused();
    return;
  }
  if (_has_mail || _message_open) {
    write_reply(503, "5.5.1", "Error: MAIL transaction in progress");
    return;
  }
  std::array<char, command_line_capacity> storage;  // decoded values never outgrow the line
  xclient_attributes attributes;
  const xclient_result parsed = parse_xclient(argument, attributes, storage);
  if (parsed.error != xclient_error::none) {
    std::array<char, 128> text;
    write_reply(501, "5.5.4", detail::join(text, {describe(parsed.error), parsed.attribute}),
                true);
    return;
  }
  _xclient_login = attributes.login.given();
  decide(pending_kind::xclient, _handler.on_xclient(attributes));
}

bool server_session::in_message() const noexcept { return _message_open; }

bool server_session::idle() const noexcept {
  return _phase == phase::command && _pending == pending_kind::none && !_has_mail &&
         !_message_open && !_auth_exchange && _line_bytes_buffered == 0;
}

}  // namespace ringmta::smtp
