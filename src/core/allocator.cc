#include "ringmta/core/allocator.h"

#include <fmt/format.h>

#if RINGMTA_WITH_MIMALLOC
#include <mimalloc.h>
#endif

namespace ringmta::core {

std::string allocator_name() {
#if RINGMTA_WITH_MIMALLOC
  // Linking libmimalloc.so interposes malloc/free and the C++ operators process-wide; calling
  // into it here also keeps the linker from dropping it as unused (--as-needed).
  const int version = mi_version();
  return fmt::format("mimalloc {}.{}.{}", version / 100, (version / 10) % 10, version % 10);
#else
  return "libc malloc";
#endif
}

}  // namespace ringmta::core
