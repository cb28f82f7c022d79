// Assertions that stay on in release builds.
//
// A failed assertion is a programmer error (STYLE.md: errors in three kinds): the process prints
// where and why, then aborts. Peer errors are SMTP replies and operating errors are negative
// errno values; neither may ever reach an assertion.
#pragma once

namespace ringmta::core {
[[noreturn]] void assert_fail(const char* expression, const char* file, int line) noexcept;
}  // namespace ringmta::core

#define RINGMTA_ASSERT(expression)                                                  \
  do {                                                                              \
    if (__builtin_expect(!(expression), 0))                                         \
      ::ringmta::core::assert_fail(#expression, __FILE__, __LINE__);                \
  } while (0)
