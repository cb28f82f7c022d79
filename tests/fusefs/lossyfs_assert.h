// LOSSYFS_ASSERT: an assertion that stays on in release builds, like RINGMTA_ASSERT.
//
// lossyfs is a test tool that must keep building while the project's libraries change, so it
// links none of them and carries this one-line copy instead of core/assert.h. A failed
// assertion is a bug in lossyfs: it prints where and aborts (the mount then reads ENOTCONN).
#pragma once

#include <cstdio>
#include <cstdlib>

#define LOSSYFS_ASSERT(expression)                                                      \
  do {                                                                                  \
    if (__builtin_expect(!(expression), 0)) {                                           \
      std::fprintf(stderr, "lossyfs: assertion failed: %s at %s:%d\n", #expression,     \
                   __FILE__, __LINE__);                                                 \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
