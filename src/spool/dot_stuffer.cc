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

}  // namespace ringmta::spool
