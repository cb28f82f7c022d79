// Which allocator this binary runs on (DESIGN principle 8: every binary links mimalloc).
// Binaries log it at start-up.
#pragma once

#include <cstdint>
#include <string>

namespace ringmta::core {

// "mimalloc 2.0.9" when mimalloc serves malloc/new in this process, else "libc malloc".
std::string allocator_name();

}  // namespace ringmta::core
