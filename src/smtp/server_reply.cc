// Reply formatting (RFC 5321 §4.2, RFC 2034 §3) and the default handler.
#include <cstring>

#include "ringmta/core/assert.h"
#include "ringmta/smtp/server_session.h"
#include "server_internal.h"

namespace ringmta::smtp {

bool is_enhanced_code(std::string_view enhanced) noexcept {
  // class "." subject "." detail; class 2, 4 or 5; subject and detail 1-3 digits (RFC 3463 §2).
  if (enhanced.size() < 5 || enhanced.size() > 9) return false;
  if (enhanced[0] != '2' && enhanced[0] != '4' && enhanced[0] != '5') return false;
  if (enhanced[1] != '.') return false;
  std::size_t digits = 0;
  int dots = 0;
  for (std::size_t i = 2; i < enhanced.size(); ++i) {
    const char c = enhanced[i];
    if (c == '.') {
      if (digits == 0 || ++dots > 1) return false;
      digits = 0;
    } else if (c >= '0' && c <= '9') {
      if (++digits > 3) return false;
    } else {
      return false;
    }
  }
  return dots == 1 && digits > 0;
}

std::string_view describe(abort_reason reason) noexcept {
  switch (reason) {
    case abort_reason::bare_lf: return "bare LF in message";
    case abort_reason::bare_cr: return "bare CR in message";
    case abort_reason::nul: return "NUL in message";
    case abort_reason::message_too_big: return "message too big";
    case abort_reason::line_too_long: return "message line too long";
    case abort_reason::reset: return "transaction reset";
    case abort_reason::timeout: return "timeout";
    case abort_reason::shutdown: return "shutdown";
    case abort_reason::connection_lost: return "connection lost";
    case abort_reason::refused: return "message refused at its first chunk";
  }
  return "aborted";
}

// The default handler accepts everything and drops the body: the smallest useful sink.
verdict server_handler::on_helo(std::string_view, bool) noexcept { return verdict::accept(); }
verdict server_handler::on_mail_from(const mailbox&, const mail_parameters&) noexcept {
  return verdict::accept();
}
verdict server_handler::on_rcpt_to(const mailbox&, const rcpt_parameters&) noexcept {
  return verdict::accept();
}
verdict server_handler::on_data_start() noexcept { return verdict::accept(); }
void server_handler::on_body(std::string_view, body_form) noexcept {}
verdict server_handler::on_data_end(const body_summary&) noexcept { return verdict::accept(); }
void server_handler::on_data_aborted(abort_reason) noexcept {}
void server_handler::on_reset() noexcept {}
verdict server_handler::on_vrfy(std::string_view) noexcept { return verdict::accept(); }
verdict server_handler::on_starttls() noexcept { return verdict::accept(); }
verdict server_handler::on_auth(std::string_view, std::string_view) noexcept {
  return verdict::respond(504, "5.5.4", "Unrecognized authentication type");
}
verdict server_handler::on_auth_response(std::string_view) noexcept {
  return verdict::respond(535, "5.7.8", "Authentication credentials invalid");
}
verdict server_handler::on_xclient(const xclient_attributes&) noexcept {
  return verdict::respond(550, "5.7.0", "XCLIENT not available");
}
void server_handler::on_xclient_refused() noexcept {}

std::size_t server_session::output_free() const noexcept {
  return output_bytes_capacity - (_output_end - _output_begin);
}

void server_session::consume_output(std::size_t bytes) noexcept {
  RINGMTA_ASSERT(bytes <= _output_end - _output_begin);
  _output_begin += bytes;
  if (_output_begin == _output_end) _output_begin = _output_end = 0;
}

// Room for `bytes` more octets at the end of the output, compacting first when needed.
char* server_session::reserve_output(std::size_t bytes) noexcept {
  if (_output.size() - _output_end < bytes) {  // move pending output to the front
    std::memmove(_output.data(), _output.data() + _output_begin, _output_end - _output_begin);
    _output_end -= _output_begin;
    _output_begin = 0;
  }
  RINGMTA_ASSERT(_output.size() - _output_end >= bytes);
  return _output.data() + _output_end;
}

// One reply line, written in place: code, '-' or ' ', enhanced code, text; control characters
// replaced and the line cut to reply_line_bytes_max including CRLF (RFC 5321 §4.5.3.1.5).
void server_session::write_line(std::uint16_t code, bool more, std::string_view enhanced,
                                std::string_view text, bool untrusted) noexcept {
  const bool with_enhanced = !enhanced.empty() && _config.extensions.enhanced_status_codes;
  const std::size_t prefix = 4 + (with_enhanced ? enhanced.size() + (text.empty() ? 0 : 1) : 0);
  const std::size_t room = detail::reply_line_bytes_max - 2 - prefix;
  const std::size_t take = text.size() < room ? text.size() : room;
  char* const line = reserve_output(prefix + take + 2);
  line[0] = static_cast<char>('0' + code / 100);
  line[1] = static_cast<char>('0' + (code / 10) % 10);
  line[2] = static_cast<char>('0' + code % 10);
  line[3] = more ? '-' : ' ';
  if (with_enhanced) {
    std::memcpy(line + 4, enhanced.data(), enhanced.size());
    if (!text.empty()) line[4 + enhanced.size()] = ' ';
  }
  char* const body = line + prefix;
  if (take > 0) std::memcpy(body, text.data(), take);
  for (std::size_t i = 0; untrusted && i < take; ++i) {
    const unsigned char c = static_cast<unsigned char>(body[i]);
    if (c < 0x20 || c == 0x7f) body[i] = '?';
  }
  body[take] = '\r';
  body[take + 1] = '\n';
  _output_end += prefix + take + 2;
}

// A reply of one or more lines ('\n' separates them), at most detail::reply_bytes_max octets;
// lines beyond that are dropped. 5xx replies count toward errors_max.
void server_session::write_reply(std::uint16_t code, std::string_view enhanced,
                                 std::string_view text, bool untrusted) noexcept {
  RINGMTA_ASSERT(code >= 200 && code <= 599);
  RINGMTA_ASSERT(enhanced.empty() || (is_enhanced_code(enhanced) &&
                                      enhanced[0] == static_cast<char>('0' + code / 100)));
  if (text.find('\n') == std::string_view::npos) {  // the common single-line reply
    write_line(code, false, enhanced, text, untrusted);
    if (code >= 500) ++_errors;
    return;
  }
  std::size_t lines = 0;
  std::size_t total = 0;
  for (std::size_t at = 0; at <= text.size();) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::size_t bytes = 6 + enhanced.size() + (end - at);
    if (bytes > detail::reply_line_bytes_max) bytes = detail::reply_line_bytes_max;
    if (lines > 0 && total + bytes > detail::reply_bytes_max) break;
    total += bytes;
    ++lines;
    at = end + 1;
  }
  std::size_t at = 0;
  for (std::size_t i = 0; i < lines; ++i) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    write_line(code, i + 1 < lines, enhanced, text.substr(at, end - at), untrusted);
    at = end + 1;
  }
  if (code >= 500) ++_errors;
}

}  // namespace ringmta::smtp
