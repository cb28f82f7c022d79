#include "ringmta/spool/dot_stuffer.h"

#include <cstring>

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

// Line by line with memchr: the common body has no stuffed dot and moves nothing.
std::size_t undo_dot_stuffing(char* data, std::size_t size) noexcept {
  std::size_t out = 0;
  std::size_t in = 0;
  while (in < size) {
    if (data[in] == '.') ++in;  // a line start: drop the stuffed dot
    const void* found = std::memchr(data + in, '\n', size - in);
    const std::size_t line_end =
        found == nullptr ? size
                         : static_cast<std::size_t>(static_cast<const char*>(found) - data) + 1;
    if (out != in) std::memmove(data + out, data + in, line_end - in);
    out += line_end - in;
    in = line_end;
  }
  return out;
}

}  // namespace ringmta::spool
