// C entry points of xxh3_avx2.c; only xxh3.cc calls them, and only on a CPU with AVX2.
#pragma once

#include <stddef.h>
#include <stdint.h>

#define RINGMTA_XXH3_STATE_BYTES 576

#ifdef __cplusplus
extern "C" {
#endif

uint64_t ringmta_xxh3_avx2_hash(const void* bytes, size_t length, uint64_t seed);
void ringmta_xxh3_avx2_reset(void* state, uint64_t seed);
void ringmta_xxh3_avx2_update(void* state, const void* bytes, size_t length);
uint64_t ringmta_xxh3_avx2_digest(const void* state);

#ifdef __cplusplus
}
#endif
