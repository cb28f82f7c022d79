// XXH3-64 for the spool's record checksums (format.h), on the fastest code path this CPU runs:
// AVX2 when present (xxh3_avx2.c), else the system libxxhash. Same values either way.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack / in place
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace ringmta::spool::xxh3 {

std::uint64_t hash(const void* bytes, std::size_t length, std::uint64_t seed) noexcept;
void reset(XXH3_state_t& state, std::uint64_t seed) noexcept;
void update(XXH3_state_t& state, const void* bytes, std::size_t length) noexcept;
std::uint64_t digest(const XXH3_state_t& state) noexcept;

// Which path the calls above take (tests compare the two; start-up may log it).
enum class path : std::uint8_t { baseline, avx2 };
path selected() noexcept;

}  // namespace ringmta::spool::xxh3
