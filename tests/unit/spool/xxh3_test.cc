// The spool's XXH3 (src/spool/xxh3.h) must give the system libxxhash's values on every path:
// the checksum is part of the file format, and a spool written by one CPU is read by another.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "../../../src/spool/xxh3.h"
#include "../../../src/spool/xxh3_avx2.h"

namespace ringmta::spool {
namespace {

constexpr std::size_t length_max = 4096;  // past XXH3's 240-byte switch and its 1 KiB blocks

std::string random_bytes(std::mt19937_64& rng, std::size_t length) {
  std::string bytes(length, '\0');
  for (auto& c : bytes) c = static_cast<char>(rng());
  return bytes;
}

// The library's streaming value after feeding `bytes` in random pieces.
template <typename Reset, typename Update, typename Digest>
std::uint64_t streamed(std::mt19937_64& rng, const std::string& bytes, std::uint64_t seed,
                       Reset reset, Update update, Digest digest) {
  XXH3_state_t state;
  reset(state, seed);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const std::size_t piece = std::min<std::size_t>(bytes.size() - done, 1 + rng() % 700);
    update(state, bytes.data() + done, piece);
    done += piece;
  }
  return digest(state);
}

std::uint64_t library_streamed(std::mt19937_64& rng, const std::string& bytes,
                               std::uint64_t seed) {
  return streamed(
      rng, bytes, seed, [](XXH3_state_t& s, std::uint64_t v) { XXH3_64bits_reset_withSeed(&s, v); },
      [](XXH3_state_t& s, const char* p, std::size_t n) { XXH3_64bits_update(&s, p, n); },
      [](const XXH3_state_t& s) { return XXH3_64bits_digest(&s); });
}

TEST(xxh3, selected_path_equals_the_library_one_shot_and_streaming) {
  std::mt19937_64 rng(16);
  for (std::size_t length = 0; length <= length_max; ++length) {
    const std::string bytes = random_bytes(rng, length);
    const std::uint64_t seed = rng();
    const std::uint64_t want = XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
    ASSERT_EQ(xxh3::hash(bytes.data(), bytes.size(), seed), want) << "length " << length;
    const std::uint64_t got = streamed(
        rng, bytes, seed, [](XXH3_state_t& s, std::uint64_t v) { xxh3::reset(s, v); },
        [](XXH3_state_t& s, const char* p, std::size_t n) { xxh3::update(s, p, n); },
        [](const XXH3_state_t& s) { return xxh3::digest(s); });
    ASSERT_EQ(got, want) << "streamed, length " << length;
    ASSERT_EQ(library_streamed(rng, bytes, seed), want) << "library streamed, length " << length;
  }
}

#if RINGMTA_XXH3_AVX2
// The AVX2 entry points themselves (not only whatever path was selected), and the selection:
// on a CPU with AVX2 the fast path must be the one taken.
TEST(xxh3, avx2_path_equals_the_library_and_is_selected_when_the_cpu_has_avx2) {
  if (!__builtin_cpu_supports("avx2")) GTEST_SKIP() << "CPU without AVX2";
  EXPECT_EQ(xxh3::selected(), xxh3::path::avx2);
  std::mt19937_64 rng(17);
  for (std::size_t length = 0; length <= length_max; ++length) {
    const std::string bytes = random_bytes(rng, length);
    const std::uint64_t seed = rng();
    const std::uint64_t want = XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
    ASSERT_EQ(ringmta_xxh3_avx2_hash(bytes.data(), bytes.size(), seed), want) << length;
    const std::uint64_t got = streamed(
        rng, bytes, seed,
        [](XXH3_state_t& s, std::uint64_t v) { ringmta_xxh3_avx2_reset(&s, v); },
        [](XXH3_state_t& s, const char* p, std::size_t n) { ringmta_xxh3_avx2_update(&s, p, n); },
        [](const XXH3_state_t& s) { return ringmta_xxh3_avx2_digest(&s); });
    ASSERT_EQ(got, want) << "streamed, length " << length;
  }
}
#endif

}  // namespace
}  // namespace ringmta::spool
