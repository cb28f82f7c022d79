// SMTP transparency for raw BDAT chunks, so the stored body is always in DATA wire form.
//
// RFC 5321 §4.5.2: a line that begins with "." gets one more "." in front. BDAT (RFC 3030)
// carries the message unstuffed, in chunks that may split a line anywhere, so the "at line
// start" state travels across calls. A line starts at the beginning of the body and after
// every LF (a bare LF counts too, so the stuffed form is safe for any reader of it).
// Never allocates: output goes to the sink as slices of the input plus single ".".
#pragma once

#include <cstddef>
#include <string_view>

namespace ringmta::spool {

class dot_stuffer {
 public:
  // Calls sink(std::string_view) with consecutive pieces of the stuffed output.
  template <typename Sink>
  void feed(std::string_view input, Sink&& sink) {
    std::size_t start = 0;
    for (std::size_t i = 0; i < input.size(); ++i) {
      if (_line_start && input[i] == '.') {
        if (i > start) sink(input.substr(start, i - start));
        sink(std::string_view(".", 1));
        start = i;  // the original "." follows the inserted one
      }
      _line_start = input[i] == '\n';
    }
    if (input.size() > start) sink(input.substr(start));
  }

  // Stuffed size of `input` from the current state, without changing the state.
  std::size_t stuffed_size(std::string_view input) const noexcept;
  bool at_line_start() const noexcept { return _line_start; }
  void reset() noexcept { _line_start = true; }

 private:
  bool _line_start = true;
};

// The inverse for a whole stuffed body (BDAT sends the raw message; `spool cat` shows it):
// removes the "." added at each line start, in place, and returns the new size.
std::size_t undo_dot_stuffing(char* data, std::size_t size) noexcept;

}  // namespace ringmta::spool
