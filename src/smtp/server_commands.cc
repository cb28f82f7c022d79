// server_session commands (RFC 5321 §4.1.1, §4.3.2) and how verdicts move the state machine.
// One table maps verbs to handlers; apply() owns every transition that follows a verdict.
#include <charconv>
#include <cstring>

#include "ringmta/core/assert.h"
#include "ringmta/smtp/server_session.h"
#include "server_internal.h"

namespace ringmta::smtp {

using detail::iequals_upper;
using detail::starts_with_upper;

struct server_session::command_entry {
  std::string_view verb;
  void (server_session::*run)(std::string_view argument) noexcept;
};

void server_session::process_line(std::string_view line) noexcept {
  ++_progress;
  std::string_view content = line.substr(0, line.size() - 1);  // without LF
  if (!content.empty() && content.back() == '\r') {
    content.remove_suffix(1);
  } else if (_config.bare_line_ending == bare_line_ending_policy::reject) {
    _auth_exchange = false;
    write_reply(500, "5.5.2", "Syntax error: command line must end with <CR><LF>");
    return;
  }
  if (content.find('\r') != std::string_view::npos) {
    _auth_exchange = false;
    write_reply(500, "5.5.2", "Syntax error: bare <CR> in command line");
    return;
  }
  if (_auth_exchange) {
    auth_response_line(content);
    return;
  }
  while (!content.empty() && content.back() == ' ') content.remove_suffix(1);
  dispatch(content);
}

void server_session::dispatch(std::string_view line) noexcept {
  static constexpr command_entry commands[] = {
      {"EHLO", &server_session::command_ehlo}, {"HELO", &server_session::command_helo},
      {"MAIL", &server_session::command_mail}, {"RCPT", &server_session::command_rcpt},
      {"DATA", &server_session::command_data}, {"BDAT", &server_session::command_bdat},
      {"RSET", &server_session::command_rset}, {"NOOP", &server_session::command_noop},
      {"QUIT", &server_session::command_quit}, {"VRFY", &server_session::command_vrfy},
      {"EXPN", &server_session::command_expn}, {"HELP", &server_session::command_help},
      {"STARTTLS", &server_session::command_starttls}, {"AUTH", &server_session::command_auth},
      {"XCLIENT", &server_session::command_xclient},
  };
  // RFC 5321 §4.1.1: verbs are case-insensitive; the argument keeps its leading space.
  const std::size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  const std::string_view argument = space == std::string_view::npos ? "" : line.substr(space);
  if (verb.empty()) {
    write_reply(500, "5.5.2", "Syntax error: empty command");
    return;
  }
  if (_refusing && !iequals_upper(verb, "QUIT")) {  // RFC 5321 §3.1, after a 554 greeting
    write_reply(503, "5.5.1", "Bad sequence of commands: no SMTP service here, send QUIT");
    return;
  }
  for (const command_entry& entry : commands) {
    if (iequals_upper(verb, entry.verb)) {
      (this->*entry.run)(argument);
      return;
    }
  }
  for (const std::string_view known : {"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"}) {
    if (iequals_upper(verb, known)) {
      write_reply(502, "5.5.1", "Command not implemented");
      return;
    }
  }
  write_reply(500, "5.5.1", "Command unrecognized");
}

void server_session::decide(pending_kind kind, const verdict& answer) noexcept {
  if (answer.is_pending()) {
    _pending = kind;
    return;
  }
  apply(kind, answer);
}

void server_session::resume(const verdict& answer) noexcept {
  if (_phase == phase::closed) return;  // timeout or shutdown cancelled the wait
  RINGMTA_ASSERT(_pending != pending_kind::none);
  RINGMTA_ASSERT(!answer.is_pending());
  const pending_kind kind = _pending;
  _pending = pending_kind::none;
  apply(kind, answer);
  check_error_limit();
}

// Writes the embedder's reply, or the default when it accepted. A respond() without enhanced
// code gets the class default "C.0.0"; 3xx replies carry none (RFC 3463 has no class 3).
void server_session::write_verdict(const verdict& answer, std::uint16_t code,
                                   std::string_view enhanced, std::string_view text) noexcept {
  if (answer.what() == verdict::kind::respond) {
    const reply& r = answer.get_reply();
    code = r.code;
    text = r.text;
    enhanced = r.enhanced;
    if (enhanced.empty()) {
      static constexpr std::string_view defaults[] = {"", "", "2.0.0", "", "4.0.0", "5.0.0"};
      enhanced = code >= 100 && code < 600 ? defaults[code / 100] : "";
    }
  }
  if (code / 100 == 3) enhanced = "";
  write_reply(code, enhanced, text, answer.what() == verdict::kind::respond);
}

void server_session::apply(pending_kind kind, const verdict& answer) noexcept {
  const bool ok = answer.what() == verdict::kind::accept || answer.get_reply().code < 400;
  switch (kind) {
    case pending_kind::none:
      RINGMTA_ASSERT(false);
      break;
    case pending_kind::helo:
    case pending_kind::ehlo:
      if (!ok) {
        _helo_bytes = 0;
        write_verdict(answer, 550, "5.7.1", "");
      } else if (kind == pending_kind::ehlo) {
        _extended = true;
        write_ehlo_reply();
      } else {
        _extended = false;
        write_reply(250, "", _config.hostname);
      }
      break;
    case pending_kind::mail:
      if (ok) {
        _has_mail = true;
        _smtputf8_used = _mail_parameters.smtputf8;
      } else {
        _reverse_path_bytes = 0;
      }
      write_verdict(answer, 250, "2.1.0", "Sender OK");
      break;
    case pending_kind::rcpt:
      if (ok) ++_recipients;
      write_verdict(answer, 250, "2.1.5", "Recipient OK");
      break;
    case pending_kind::data_start:
      if (!ok) {
        _message_open = false;
        write_verdict(answer, 554, "5.0.0", "");
        break;
      }
      _phase = phase::data;
      if (answer.what() == verdict::kind::respond)
        write_reply(354, "", answer.get_reply().text, true);
      else
        write_reply(354, "", "End data with <CR><LF>.<CR><LF>");
      break;
    case pending_kind::bdat_start:
      apply_bdat_start(ok, answer);
      break;
    case pending_kind::data_end:
      if (ok) ++_messages_accepted;
      write_verdict(answer, 250, "2.0.0", "Message accepted");
      clear_transaction(false);
      break;
    case pending_kind::vrfy:
      write_verdict(answer, 252, "2.5.0",
                    "Cannot VRFY user, but will accept message and attempt delivery");
      break;
    case pending_kind::starttls:
      if (!ok) {
        write_verdict(answer, 454, "4.7.0", "TLS not available");
        break;
      }
      write_verdict(answer, 220, "2.0.0", "Ready to start TLS");
      clear_transaction(true);
      _phase = phase::tls_handshake;  // RFC 3207 §4.2: discard until the handshake is done
      break;
    case pending_kind::auth:
    case pending_kind::auth_response:
      apply_auth(answer);
      break;
    case pending_kind::xclient:
      apply_xclient(answer);
      break;
  }
}

// Postfix XCLIENT_README: success starts the session over as if the claimed client had just
// connected (no HELO, no transaction) and answers with the greeting; TLS stays as it is.
void server_session::apply_xclient(const verdict& answer) noexcept {
  if (answer.what() == verdict::kind::respond && answer.get_reply().code >= 300) {
    write_verdict(answer, 550, "5.7.0", "");
    if (answer.get_reply().code == 421) _phase = phase::closed;
    return;
  }
  _helo_bytes = 0;
  _extended = false;
  _authenticated = _xclient_login;
  std::array<char, detail::reply_line_bytes_max> text;
  write_reply(220, "", detail::join(text, {_config.hostname, " ", _config.greeting_text}), true);
}

void server_session::apply_auth(const verdict& answer) noexcept {
  if (answer.what() == verdict::kind::accept) {
    _auth_exchange = false;
    _authenticated = true;
    write_reply(235, "2.7.0", "Authentication successful");
    return;
  }
  const std::uint16_t code = answer.get_reply().code;
  if (code == 334) {  // RFC 4954 §4: a server challenge, base64 text
    _auth_exchange = true;
    write_reply(334, "", answer.get_reply().text, true);
    return;
  }
  _auth_exchange = false;
  if (code < 400) _authenticated = true;
  write_verdict(answer, code, "", "");
  if (code == 421) _phase = phase::closed;  // RFC 5321 §3.8: e.g. a brute-force lockout
}

void server_session::clear_transaction(bool notify) noexcept {
  if (notify && _has_mail) _handler.on_reset();
  _has_mail = false;
  _recipients = 0;
  _reverse_path_bytes = 0;
  _smtputf8_used = false;
  _message_open = false;
  _mail_parameters = mail_parameters{};
}

// Aborts a BDAT message in progress (RSET, EHLO, QUIT between chunks).
void server_session::abort_open_message() noexcept {
  if (_message_open) fail_message(abort_reason::reset);
  _message_open = false;
}

void server_session::command_ehlo(std::string_view argument) noexcept { greet(argument, true); }
void server_session::command_helo(std::string_view argument) noexcept { greet(argument, false); }

// RFC 5321 §4.1.1.1. The name is one token of printable characters (UTF-8 allowed with
// SMTPUTF8); whether it is a plausible name is the embedder's policy, not syntax.
void server_session::greet(std::string_view argument, bool extended) noexcept {
  const std::string_view domain = argument.empty() ? argument : argument.substr(1);
  bool valid = !domain.empty() && domain.size() <= _helo.size();
  for (const char ch : domain) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c <= 32 || c == 127 || (c >= 128 && !_config.extensions.smtputf8)) valid = false;
  }
  if (valid && !is_valid_utf8(domain)) valid = false;
  if (!valid) {
    write_reply(501, "5.5.4", extended ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
    return;
  }
  abort_open_message();
  clear_transaction(true);  // RFC 5321 §4.1.4: EHLO/HELO resets the transaction
  _auth_exchange = false;
  _helo_bytes = detail::copy_into(_helo, domain);
  decide(extended ? pending_kind::ehlo : pending_kind::helo, _handler.on_helo(domain, extended));
}

bool server_session::auth_advertised() const noexcept {
  return _config.auth_offered && (!_config.auth_requires_tls || _tls_active);
}

void server_session::write_ehlo_reply() noexcept {
  const extension_set& ext = _config.extensions;
  std::array<char, 32> size_line;
  std::string_view size_text = "SIZE";
  if (_config.limits.message_bytes_max > 0) {
    std::memcpy(size_line.data(), "SIZE ", 5);
    const auto done = std::to_chars(size_line.data() + 5, size_line.data() + size_line.size(),
                                    _config.limits.message_bytes_max);
    size_text = std::string_view(size_line.data(),
                                 static_cast<std::size_t>(done.ptr - size_line.data()));
  }
  std::array<char, detail::reply_line_bytes_max> auth_line;
  const std::string_view auth_text = detail::join(auth_line, {"AUTH ", _config.auth_mechanisms});
  std::array<char, 64> xclient_line;
  const std::string_view xclient_text =
      detail::join(xclient_line, {"XCLIENT ", xclient_attribute_names});
  const std::pair<bool, std::string_view> lines[] = {
      {true, _config.hostname},
      {ext.pipelining, "PIPELINING"},
      {ext.size, size_text},
      {_config.starttls_offered && !_tls_active, "STARTTLS"},
      {auth_advertised(), auth_text},
      {_xclient_offered, xclient_text},
      {ext.enhanced_status_codes, "ENHANCEDSTATUSCODES"},
      {ext.eight_bit_mime, "8BITMIME"},
      {ext.binary_mime && ext.chunking, "BINARYMIME"},
      {ext.chunking, "CHUNKING"},
      {ext.dsn, "DSN"},
      {ext.smtputf8, "SMTPUTF8"},
  };
  std::size_t last = 0;
  for (std::size_t i = 0; i < std::size(lines); ++i) {
    if (lines[i].first) last = i;
  }
  for (std::size_t i = 0; i <= last; ++i) {
    if (lines[i].first) write_line(250, i != last, "", lines[i].second, false);
  }
}

}  // namespace ringmta::smtp
