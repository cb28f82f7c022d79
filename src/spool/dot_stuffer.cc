#include "ringmta/spool/dot_stuffer.h"

namespace ringmta::spool {

std::size_t dot_stuffer::stuffed_size(std::string_view input) const noexcept {
  std::size_t size = input.size();
  bool line_start = _line_start;
  for (char c : input) {
    if (line_start && c == '.') ++size;
    line_start = c == '\n';
  }
  return size;
}

std::size_t undo_dot_stuffing(char* data, std::size_t size) noexcept {
  std::size_t out = 0;
  bool line_start = true;
  for (std::size_t in = 0; in < size; ++in) {
    const char c = data[in];
    if (!(line_start && c == '.')) data[out++] = c;
    line_start = c == '\n';
  }
  return out;
}

}  // namespace ringmta::spool
