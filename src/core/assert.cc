#include "ringmta/core/assert.h"

#include <cstdio>
#include <cstdlib>

namespace ringmta::core {

void assert_fail(const char* expression, const char* file, int line) noexcept {
  std::fprintf(stderr, "ringmta: assertion failed: %s at %s:%d\n", expression, file, line);
  std::fflush(stderr);
  std::abort();
}

}  // namespace ringmta::core
