#include "ringmta/smtp/reply_parser.h"

#include <algorithm>
#include <cstring>

#include "ringmta/core/assert.h"

namespace ringmta::smtp {

namespace {

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Reads 1 to 3 digits at text[pos]; returns how many were read (0 = none or more than 3).
std::size_t read_digits(std::string_view text, std::size_t pos, std::uint16_t& value) noexcept {
  std::size_t count = 0;
  value = 0;
  while (pos + count < text.size() && is_digit(text[pos + count])) {
    if (count == 3) return 0;
    value = static_cast<std::uint16_t>(value * 10 + (text[pos + count] - '0'));
    ++count;
  }
  return count;
}

}  // namespace

std::size_t parse_enhanced_code(std::string_view text, reply_enhanced_code& code) noexcept {
  // RFC 3463 §2: status-code = class "." subject "." detail
  if (text.size() < 5) return 0;
  const char status_class = text[0];
  if (status_class != '2' && status_class != '4' && status_class != '5') return 0;
  if (text[1] != '.') return 0;
  std::uint16_t subject = 0;
  const std::size_t subject_digits = read_digits(text, 2, subject);
  std::size_t pos = 2 + subject_digits;
  if (subject_digits == 0 || pos >= text.size() || text[pos] != '.') return 0;
  std::uint16_t detail = 0;
  const std::size_t detail_digits = read_digits(text, pos + 1, detail);
  pos += 1 + detail_digits;
  if (detail_digits == 0) return 0;
  // RFC 2034 §4: the code is followed by SP and the text (or ends the line).
  if (pos != text.size() && text[pos] != ' ') return 0;
  code.status_class = static_cast<std::uint8_t>(status_class - '0');
  code.subject = subject;
  code.detail = detail;
  return pos;
}

std::string_view describe(reply_parse_error error) noexcept {
  switch (error) {
    case reply_parse_error::none: return "no error";
    case reply_parse_error::line_too_long: return "reply line longer than 512 bytes";
    case reply_parse_error::too_many_lines: return "too many lines in one reply";
    case reply_parse_error::bad_code: return "malformed reply code";
    case reply_parse_error::code_mismatch: return "different codes in one multi-line reply";
    case reply_parse_error::bad_separator: return "malformed reply separator";
    case reply_parse_error::bare_lf: return "bare LF in reply";
    case reply_parse_error::bare_cr: return "bare CR in reply";
    case reply_parse_error::nul_byte: return "NUL byte in reply";
  }
  return "unknown reply error";
}

void parsed_reply::assign_local(std::uint16_t reply_code, reply_enhanced_code code_enhanced,
                                std::string_view text) noexcept {
  RINGMTA_ASSERT(reply_code >= 200 && reply_code <= 599);
  code = reply_code;
  enhanced = code_enhanced;
  line_count = 1;
  local = true;
  text_truncated = text.size() > sizeof(text_data);
  text_bytes = static_cast<std::uint16_t>(std::min(text.size(), sizeof(text_data)));
  if (text_bytes != 0) std::memcpy(text_data, text.data(), text_bytes);
}

void parsed_reply::copy_from(const parsed_reply& other) noexcept {
  if (&other == this) return;
  code = other.code;
  enhanced = other.enhanced;
  line_count = other.line_count;
  text_bytes = other.text_bytes;
  text_truncated = other.text_truncated;
  local = other.local;
  std::memcpy(text_data, other.text_data, other.text_bytes);
}

reply_parser::reply_parser(std::uint16_t lines_max) noexcept : _lines_max(lines_max) {
  RINGMTA_ASSERT(lines_max >= 1);
  reset();
}

void reply_parser::reset() noexcept {
  _line_bytes = 0;
  _in_multiline = false;
  _reply_complete = false;
  _error = reply_parse_error::none;
  _line_text = {};
  _reply.code = 0;
  _reply.enhanced = {};
  _reply.line_count = 0;
  _reply.text_bytes = 0;
  _reply.text_truncated = false;
  _reply.local = false;
}

reply_parser::step reply_parser::fail(reply_parse_error error, std::size_t consumed) noexcept {
  _error = error;
  return {status::failed, consumed};
}

reply_parser::step reply_parser::feed(std::string_view bytes) noexcept {
  if (_error != reply_parse_error::none) return {status::failed, 0};
  if (bytes.empty()) return {status::need_more, 0};
  if (_reply_complete) {
    // The previous call finished a reply (its view stayed valid until now): start the next one.
    _reply_complete = false;
    _reply.code = 0;
    _reply.enhanced = {};
    _reply.line_count = 0;
    _reply.text_bytes = 0;
    _reply.text_truncated = false;
  }
  _line_text = {};
  const void* lf = std::memchr(bytes.data(), '\n', bytes.size());
  const std::size_t take =
      lf != nullptr ? static_cast<std::size_t>(static_cast<const char*>(lf) - bytes.data()) + 1
                    : bytes.size();
  // A full buffer is the line limit (RFC 5321 §4.5.3.1.5): no line is held past 512 bytes.
  if (_line_bytes + take > reply_line_bytes_max) {
    return fail(reply_parse_error::line_too_long, take);
  }
  std::memcpy(_line + _line_bytes, bytes.data(), take);
  _line_bytes = static_cast<std::uint16_t>(_line_bytes + take);
  if (lf == nullptr) return {status::need_more, take};

  const reply_parse_error error = complete_line();
  if (error != reply_parse_error::none) return fail(error, take);
  return {_in_multiline ? status::line_done : status::reply_done, take};
}

// Validates the line in _line (ending in LF) and folds it into _reply.
reply_parse_error reply_parser::complete_line() noexcept {
  const std::size_t length = _line_bytes;
  _line_bytes = 0;
  // RFC 5321 §2.3.8: lines end in CRLF; a bare LF is not a line ending we accept.
  if (length < 2 || _line[length - 2] != '\r') return reply_parse_error::bare_lf;
  const std::string_view content(_line, length - 2);
  if (content.find('\r') != std::string_view::npos) return reply_parse_error::bare_cr;
  if (content.find('\0') != std::string_view::npos) return reply_parse_error::nul_byte;
  // RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39
  if (content.size() < 3 || content[0] < '2' || content[0] > '5' || content[1] < '0' ||
      content[1] > '5' || !is_digit(content[2])) {
    return reply_parse_error::bad_code;
  }
  bool last = true;
  if (content.size() > 3) {
    if (content[3] == '-') {
      last = false;
    } else if (content[3] != ' ') {
      return reply_parse_error::bad_separator;
    }
  }
  const auto code = static_cast<std::uint16_t>((content[0] - '0') * 100 + (content[1] - '0') * 10 +
                                               (content[2] - '0'));
  if (_reply.line_count == 0) {
    _reply.code = code;
  } else if (_reply.code != code) {
    return reply_parse_error::code_mismatch;
  }
  if (_reply.line_count >= _lines_max) return reply_parse_error::too_many_lines;
  ++_reply.line_count;

  std::string_view text = content.size() > 4 ? content.substr(4) : std::string_view{};
  _line_text = text;
  reply_enhanced_code enhanced;
  const std::size_t enhanced_bytes = parse_enhanced_code(text, enhanced);
  // RFC 3463 §2: the class of the enhanced code repeats the class of the reply code; a code of
  // another class is not an enhanced code of this reply and stays part of the text.
  if (enhanced_bytes != 0 && enhanced.status_class == code / 100) {
    if (_reply.line_count == 1) _reply.enhanced = enhanced;
    text.remove_prefix(enhanced_bytes);
    if (!text.empty()) text.remove_prefix(1);  // the SP after the code
  }
  if (_reply.line_count > 1) append_text("\n");
  append_text(text);

  _in_multiline = !last;
  _reply_complete = last;
  return reply_parse_error::none;
}

void reply_parser::append_text(std::string_view text) noexcept {
  const std::size_t room = sizeof(_reply.text_data) - _reply.text_bytes;
  const std::size_t take = std::min(room, text.size());
  if (take < text.size()) _reply.text_truncated = true;
  if (take == 0) return;  // an empty view may hold a null pointer: no memcpy
  std::memcpy(_reply.text_data + _reply.text_bytes, text.data(), take);
  _reply.text_bytes = static_cast<std::uint16_t>(_reply.text_bytes + take);
}

std::string parsed_reply::one_line_text() const {
  std::string out;
  std::string_view rest = text();
  while (!rest.empty()) {
    const auto newline = rest.find('\n');
    std::string_view line = rest.substr(0, newline);
    rest = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    while (!line.empty() && line.back() == ' ') line.remove_suffix(1);
    if (line.empty()) continue;
    if (!out.empty()) out += ' ';
    out += line;
  }
  return out;
}

}  // namespace ringmta::smtp
