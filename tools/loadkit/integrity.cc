#include "loadkit/integrity.h"

#include <cstring>

namespace ringmta::loadkit {

namespace {

bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && is_blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_blank(text.back())) text.remove_suffix(1);
  return text;
}

bool run_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.';
}

// Case-insensitive "name:" at the start of line; returns the value after the colon.
bool field_value(std::string_view line, std::string_view name, std::string_view& value) noexcept {
  if (line.size() <= name.size() || line[name.size()] != ':') return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = line[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    char n = name[i];
    if (n >= 'A' && n <= 'Z') n = static_cast<char>(n - 'A' + 'a');
    if (c != n) return false;
  }
  value = line.substr(name.size() + 1);
  return true;
}

}  // namespace

bool valid_run(std::string_view run) noexcept {
  if (run.empty() || run.size() > run_bytes_max) return false;
  for (const char c : run) {
    if (!run_char(c)) return false;
  }
  return true;
}

bool parse_id_value(std::string_view value, std::string_view& run, std::uint64_t& n) noexcept {
  value = trim(value);
  const std::size_t dash = value.rfind('-');
  if (dash == std::string_view::npos) return false;
  const std::string_view candidate = value.substr(0, dash);
  const std::string_view digits = value.substr(dash + 1);
  if (!valid_run(candidate) || digits.empty() || digits.size() > 19) return false;
  std::uint64_t number = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return false;
    number = number * 10 + static_cast<std::uint64_t>(c - '0');
  }
  run = candidate;
  n = number;
  return true;
}

bool parse_checksum_value(std::string_view value, std::uint64_t& checksum) noexcept {
  value = trim(value);
  constexpr std::string_view prefix = "xxh64=";
  if (value.size() != prefix.size() + 16 || value.substr(0, prefix.size()) != prefix) {
    return false;
  }
  std::uint64_t number = 0;
  for (const char c : value.substr(prefix.size())) {
    unsigned digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<unsigned>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<unsigned>(c - 'A' + 10);
    } else {
      return false;
    }
    number = (number << 4) | digit;
  }
  checksum = number;
  return true;
}

void write_hex16(char* out, std::uint64_t value) noexcept {
  static constexpr char digits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    out[i] = digits[value & 0xf];
    value >>= 4;
  }
}

std::size_t write_decimal(char* out, std::uint64_t value, std::size_t width) noexcept {
  char reversed[20];
  std::size_t length = 0;
  do {
    reversed[length++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  std::size_t written = 0;
  for (std::size_t pad = length; pad < width; ++pad) out[written++] = '0';
  while (length > 0) out[written++] = reversed[--length];
  return written;
}

std::uint64_t body_checksum(std::span<const std::string_view> pieces) noexcept {
  XXH64_state_t state;
  XXH64_reset(&state, 0);
  for (const std::string_view piece : pieces) XXH64_update(&state, piece.data(), piece.size());
  return XXH64_digest(&state);
}

void message_scanner::begin(bool wire_form, scan_observer* observer) noexcept {
  XXH64_reset(&_hash, 0);
  _observer = observer;
  _wire_form = wire_form;
  _line_start = true;
  _in_body = false;
  _line_overflow = false;
  _has_checksum = false;
  _checksum_malformed = false;
  _result = scan_result{};
  _line_bytes = 0;
}

// Splits at line starts that carry a stuffed dot (RFC 5321 §4.5.2: the receiver drops the first
// character of a line when it is a period) and passes the runs in between on, so a 1 KiB body
// costs one memchr pass and a few hash updates, not one call per line.
void message_scanner::feed(std::string_view slice) noexcept {
  const char* p = slice.data();
  const char* const end = p + slice.size();
  if (p == end) return;
  if (_wire_form && _line_start && *p == '.') ++p;
  _line_start = false;
  const char* run = p;
  while (p < end) {
    const void* lf = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    if (lf == nullptr) break;
    p = static_cast<const char*>(lf) + 1;
    if (p == end) {
      _line_start = true;
      break;
    }
    if (_wire_form && *p == '.') {
      emit({run, static_cast<std::size_t>(p - run)});
      ++p;
      run = p;
    }
  }
  if (end > run) emit({run, static_cast<std::size_t>(end - run)});
}

void message_scanner::emit(std::string_view bytes) noexcept {
  if (_observer != nullptr) _observer->on_message_bytes(bytes);
  if (_in_body) {
    body_bytes(bytes);
  } else {
    header_bytes(bytes);
  }
}

void message_scanner::header_bytes(std::string_view bytes) noexcept {
  while (!bytes.empty()) {
    const std::size_t lf = bytes.find('\n');
    const std::size_t take = lf == std::string_view::npos ? bytes.size() : lf + 1;
    _result.header_bytes += take;
    if (_line_bytes + take > line_bytes_max) {
      _line_overflow = true;
    } else {
      std::memcpy(_line + _line_bytes, bytes.data(), take);
      _line_bytes += take;
    }
    bytes.remove_prefix(take);
    if (lf == std::string_view::npos) return;
    header_line_done();
    if (_in_body) {
      body_bytes(bytes);
      return;
    }
  }
}

void message_scanner::header_line_done() noexcept {
  const bool overflow = _line_overflow;
  std::string_view line{_line, _line_bytes};
  _line_bytes = 0;
  _line_overflow = false;
  if (overflow) return;  // longer than any tag line: not ours
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    _in_body = true;
    return;
  }
  std::string_view value;
  if (field_value(line, id_field, value)) {
    std::string_view run;
    std::uint64_t n = 0;
    if (!_result.has_id && parse_id_value(value, run, n)) {
      std::memcpy(_run, run.data(), run.size());
      _result.run = {_run, run.size()};
      _result.n = n;
      _result.has_id = true;
    } else if (!_result.has_id) {
      _result.id_malformed = true;
    }
  } else if (field_value(line, checksum_field, value)) {
    std::uint64_t declared = 0;
    if (!_has_checksum && parse_checksum_value(value, declared)) {
      _result.checksum_declared = declared;
      _has_checksum = true;
    } else {
      _checksum_malformed = true;
    }
  }
}

void message_scanner::body_bytes(std::string_view bytes) noexcept {
  if (bytes.empty()) return;
  _result.body_bytes += bytes.size();
  XXH64_update(&_hash, bytes.data(), bytes.size());
}

scan_result message_scanner::finish() noexcept {
  _result.checksum_computed = XXH64_digest(&_hash);
  if (_checksum_malformed) {
    _result.verdict = integrity::corrupt;
  } else if (_has_checksum) {
    _result.verdict = _result.checksum_declared == _result.checksum_computed ? integrity::ok
                                                                             : integrity::corrupt;
  } else {
    _result.verdict = integrity::untagged;
  }
  return _result;
}

}  // namespace ringmta::loadkit
