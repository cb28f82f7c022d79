// net::header_filter: the inbound header walker. One pass over a message's header block as it
// streams past, looking at each header line's start once, does two things:
//  - removes every field of one name (with its folded continuation lines, RFC 5322 §2.2.3)
//    and keeps the first one's value. Used for X-Ringmta-Pool (server/egress.h): a tenant's
//    choice of egress pool that must never leave the MTA. Removal at reception means the
//    spool, DKIM signing (which sees what is spooled), delivery and DSNs never see the field,
//    and sending needs no work;
//  - counts the Received: fields (lines starting with "Received:", any case): RFC 5321 §6.3,
//    a relay counts them to stop mail loops (received_fields()).
//
// Bytes go out through `emit` in as few runs as the input allows; only the start of a line
// that could still be the field (at most the name and its colon) is held back across feeds.
// Once neither name can match a line, the walk jumps to its LF (memchr), so most header bytes
// are never looked at one by one. The body (after the first empty line) passes in one run per
// feed and is never looked at. A line is whatever ends in LF (CRLF or bare LF alike), so the
// walker never merges or splits other lines; pieces may be split anywhere.
// Pure, no allocation per feed beyond the bounded value; never looks past the header block.
#pragma once

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringmta::net {

class header_filter {
 public:
  static constexpr std::size_t value_bytes_max = 128;
  // `field` without the colon, any case ("X-Ringmta-Pool").
  explicit header_filter(std::string_view field) {
    for (const char c : field)
      _name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    _name += ':';
    if (_name.size() > sizeof _held_text) _name.resize(sizeof _held_text);  // names are short
    _value.reserve(value_bytes_max);  // feed() never allocates
  }
  void reset() noexcept {
    _in_headers = _line_start = true;
    _mode = mode::keep;
    _previous_dropped = _found = _capturing = _field_alive = _received_alive = false;
    _column = 0;
    _received = 0;
    _value.clear();
  }

  template <typename Emit>
  void feed(std::string_view bytes, Emit&& emit) {
    std::size_t run = 0;  // bytes[run, i) are to be emitted
    std::size_t i = 0;
    while (i < bytes.size() && _in_headers) {
      if (_line_start && !start_line(bytes[i])) break;  // the empty line: the body follows
      switch (_mode) {
        case mode::keep: {  // nothing to see on this line: on to its end
          const std::size_t end = bytes.find('\n', i);
          if (end == std::string_view::npos) {
            i = bytes.size();
          } else {
            i = end + 1;
            _line_start = true;
          }
          break;
        }
        case mode::drop: {  // the field's line (or a fold of it): none of it goes out
          if (i > run) emit(bytes.substr(run, i - run));
          const std::size_t end = bytes.find('\n', i);
          const std::size_t stop = end == std::string_view::npos ? bytes.size() : end + 1;
          if (_capturing) capture(bytes.substr(i, stop - i));
          run = i = stop;
          _line_start = end != std::string_view::npos;
          break;
        }
        case mode::matching:
          if (match(bytes, i, run, emit)) ++i;
          break;
      }
    }
    if (bytes.size() > run) emit(bytes.substr(run));
  }

  // End of the message: a line start held back is no field (no colon came): give it back.
  template <typename Emit>
  void finish(Emit&& emit) {
    if (_mode == mode::matching && _field_alive && _column > 0)
      emit(std::string_view(_held_text, _column));
    _field_alive = false;
    _mode = mode::keep;
  }

  bool found() const noexcept { return _found; }
  // The first field's value, unfolded and trimmed (at most value_bytes_max bytes).
  std::string_view value() const noexcept {
    std::string_view v = _value;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  }
  // Received: fields in the header block so far (RFC 5321 §6.3 loop detection).
  std::uint32_t received_fields() const noexcept { return _received; }

 private:
  enum class mode : unsigned char { keep, matching, drop };
  static constexpr std::string_view received_name = "received:";

  // At the first byte of a line: false for the empty line that ends the header block.
  bool start_line(char c) noexcept {
    _line_start = false;
    if (c == '\r' || c == '\n') {
      _in_headers = false;
      return false;
    }
    const bool continuation = c == ' ' || c == '\t';
    if (!(continuation && _previous_dropped)) {  // a fold of a dropped field stays dropped
      _previous_dropped = false;
      _capturing = false;
      _mode = mode::matching;
      _column = 0;
      _field_alive = _received_alive = true;
    }
    return true;
  }

  // One byte of a line's start against both names. The field's candidate bytes are held back
  // (in their own case) until it is known; a Received: candidate needs no holding. Returns
  // false when neither name matches it: the byte is left to the keep mode (it may be the LF).
  template <typename Emit>
  bool match(std::string_view bytes, std::size_t i, std::size_t& run, Emit& emit) {
    const char c = bytes[i];
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool field = _field_alive && lower == _name[_column];
    const bool received = _received_alive && lower == received_name[_column];
    if (field) {
      if (i > run) emit(bytes.substr(run, i - run));  // what precedes this line
      _held_text[_column] = c;
      run = i + 1;
    } else if (_field_alive && _column > 0) {  // not the field after all: give back what was held
      emit(std::string_view(_held_text, _column));
      run = i;
    }
    _field_alive = field;
    _received_alive = received;
    ++_column;
    if (received && _column == received_name.size()) {
      ++_received;
      _received_alive = false;
    }
    if (field && _column == _name.size()) {
      _mode = mode::drop;
      _previous_dropped = true;
      _capturing = !_found;
      _found = true;
      _field_alive = false;
    } else if (!_field_alive && !_received_alive) {
      _mode = mode::keep;
    }
    return field || received;
  }

  void capture(std::string_view piece) {
    for (const char c : piece) {
      if (_value.size() >= value_bytes_max) return;
      if (c != '\r' && c != '\n') _value += c;
    }
  }

  std::string _name;  // lowercase, with the colon
  char _held_text[64] = {};
  std::string _value;
  std::size_t _column = 0;  // bytes of this line's start matched so far (matching mode)
  std::uint32_t _received = 0;
  mode _mode = mode::keep;
  bool _in_headers = true;
  bool _line_start = true;
  bool _previous_dropped = false;
  bool _found = false;
  bool _capturing = false;
  bool _field_alive = false;     // this line's start may still be the field (held back)
  bool _received_alive = false;  // ... or a Received: field
};

}  // namespace ringmta::net
