// net::header_filter: removes every field of one name (with its folded continuation lines,
// RFC 5322 §2.2.3) from a message's header block as it streams past, and keeps the first
// one's value. Used for X-Ringmta-Pool (server/egress.h): a tenant's choice of egress pool
// that must never leave the MTA. Removal at reception means the spool, DKIM signing (which
// sees what is spooled), delivery and DSNs never see the field, and sending needs no work.
//
// Bytes go out through `emit` in as few runs as the input allows; only the start of a line
// that could still be the field (at most the name and its colon) is held back across feeds.
// The body (after the first empty line) passes in one run per feed. A line is whatever ends
// in LF (CRLF or bare LF alike), so the filter never merges or splits other lines.
// Pure, no allocation per feed beyond the bounded value; never looks past the header block.
#pragma once

#include <cctype>
#include <cstddef>
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
    _previous_dropped = _found = _capturing = false;
    _held = 0;
    _value.clear();
  }

  template <typename Emit>
  void feed(std::string_view bytes, Emit&& emit) {
    std::size_t run = 0;  // bytes[run, i) are to be emitted
    std::size_t i = 0;
    for (; i < bytes.size() && _in_headers; ++i) {
      const char c = bytes[i];
      if (_line_start) {
        _line_start = false;
        if (c == '\r' || c == '\n') {  // the empty line: the body follows, all of it kept
          _in_headers = false;
          break;
        }
        const bool continuation = c == ' ' || c == '\t';
        if (!(continuation && _previous_dropped)) {
          _previous_dropped = false;
          _capturing = false;
          _mode = mode::matching;
          _held = 0;
        }
      }
      if (_mode == mode::matching) {
        if (static_cast<char>(std::tolower(static_cast<unsigned char>(c))) == _name[_held]) {
          if (i > run) emit(bytes.substr(run, i - run));  // what precedes this line
          _held_text[_held] = c;                           // held back, in its own case
          run = i + 1;
          if (++_held == _name.size()) {
            _mode = mode::drop;
            _previous_dropped = true;
            _capturing = !_found;
            _found = true;
          }
          continue;
        }
        if (_held > 0) {  // not the field after all: give back what was held
          emit(std::string_view(_held_text, _held));
          _held = 0;
          run = i;
        }
        _mode = mode::keep;
      }
      if (_mode == mode::drop) {
        if (i > run) emit(bytes.substr(run, i - run));
        run = i + 1;
        if (_capturing && c != '\r' && c != '\n' && _value.size() < value_bytes_max) _value += c;
      }
      if (c == '\n') _line_start = true;
    }
    if (bytes.size() > run) emit(bytes.substr(run));
  }

  // End of the message: a line start held back is no field (no colon came): give it back.
  template <typename Emit>
  void finish(Emit&& emit) {
    if (_mode == mode::matching && _held > 0) emit(std::string_view(_held_text, _held));
    _held = 0;
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

 private:
  enum class mode : unsigned char { keep, matching, drop };
  std::string _name;  // lowercase, with the colon
  char _held_text[64] = {};
  std::string _value;
  std::size_t _held = 0;
  mode _mode = mode::keep;
  bool _in_headers = true;
  bool _line_start = true;
  bool _previous_dropped = false;
  bool _found = false;
  bool _capturing = false;
};

}  // namespace ringmta::net
