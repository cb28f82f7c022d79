#include "xxh3.h"

#include "xxh3_avx2.h"

namespace ringmta::spool::xxh3 {

static_assert(sizeof(XXH3_state_t) == RINGMTA_XXH3_STATE_BYTES, "state layout");

namespace {

struct operations {
  std::uint64_t (*hash)(const void*, std::size_t, std::uint64_t);
  void (*reset)(void*, std::uint64_t);
  void (*update)(void*, const void*, std::size_t);
  std::uint64_t (*digest)(const void*);
  xxh3::path path;
};

std::uint64_t library_hash(const void* bytes, std::size_t length, std::uint64_t seed) {
  return XXH3_64bits_withSeed(bytes, length, seed);
}
void library_reset(void* state, std::uint64_t seed) {
  XXH3_64bits_reset_withSeed(static_cast<XXH3_state_t*>(state), seed);
}
void library_update(void* state, const void* bytes, std::size_t length) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state), bytes, length);
}
std::uint64_t library_digest(const void* state) {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state));
}

constexpr operations library_operations{library_hash, library_reset, library_update,
                                        library_digest, path::baseline};
#if RINGMTA_XXH3_AVX2
constexpr operations avx2_operations{ringmta_xxh3_avx2_hash, ringmta_xxh3_avx2_reset,
                                     ringmta_xxh3_avx2_update, ringmta_xxh3_avx2_digest,
                                     path::avx2};
#endif

// Chosen once, on first use (a function-local static: safe from other static initialisers).
const operations& chosen() noexcept {
#if RINGMTA_XXH3_AVX2
  static const operations& value =
      __builtin_cpu_supports("avx2") ? avx2_operations : library_operations;
  return value;
#else
  return library_operations;
#endif
}

}  // namespace

std::uint64_t hash(const void* bytes, std::size_t length, std::uint64_t seed) noexcept {
  return chosen().hash(bytes, length, seed);
}
void reset(XXH3_state_t& state, std::uint64_t seed) noexcept { chosen().reset(&state, seed); }
void update(XXH3_state_t& state, const void* bytes, std::size_t length) noexcept {
  chosen().update(&state, bytes, length);
}
std::uint64_t digest(const XXH3_state_t& state) noexcept { return chosen().digest(&state); }
path selected() noexcept { return chosen().path; }

}  // namespace ringmta::spool::xxh3
