// XXH3-64 compiled for AVX2 (this file alone gets -mavx2): Debian's libxxhash is built for the
// baseline SSE2, and recovery hashes every live body at each start (issue 16). XXH3's vector
// paths compute the same values as its scalar one (xxhash.h: XXH_VECTOR only changes speed), so
// spool files stay compatible. Callers reach this only through xxh3.h, after a CPU check.
#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include "xxh3_avx2.h"

// The inlined copy renames XXH3_state_t (XXH_INLINE_ prefix); the layout is the same struct
// from the same header, so the caller's state is used as is.
_Static_assert(sizeof(XXH3_state_t) == RINGMTA_XXH3_STATE_BYTES, "state layout");

uint64_t ringmta_xxh3_avx2_hash(const void* bytes, size_t length, uint64_t seed) {
  return XXH3_64bits_withSeed(bytes, length, seed);
}

void ringmta_xxh3_avx2_reset(void* state, uint64_t seed) {
  XXH3_64bits_reset_withSeed((XXH3_state_t*)state, seed);
}

void ringmta_xxh3_avx2_update(void* state, const void* bytes, size_t length) {
  XXH3_64bits_update((XXH3_state_t*)state, bytes, length);
}

uint64_t ringmta_xxh3_avx2_digest(const void* state) {
  return XXH3_64bits_digest((const XXH3_state_t*)state);
}
