// SSE2/AVX2 search for CR, LF or NUL with 8-bit detection folded into the same pass (the
// movemask of the raw bytes is their top bits), so each body octet is read once.
#include "ringmta/smtp/data_scanner.h"

#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ringmta::smtp {

const char* find_cr_lf_nul_portable(const char* begin, const char* end,
                                     bool& eight_bit) noexcept {
  unsigned char high = 0;
  const char* p = begin;
  for (; p < end; ++p) {
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c == '\r' || c == '\n' || c == 0) break;
    high |= c;
  }
  if (high & 0x80) eight_bit = true;
  return p;
}

#if defined(__x86_64__)

namespace {
inline unsigned low_bits(unsigned count) noexcept { return (1u << count) - 1u; }
// CR (13), LF (10) and NUL (0) are all <= 13: one unsigned minimum and one compare find every
// candidate (as cheap as the CR/LF pair alone); the rare other control octets among them
// (tab, form feed...) are skipped one by one.
inline bool is_stop(char c) noexcept { return c == '\r' || c == '\n' || c == '\0'; }
}  // namespace

const char* find_cr_lf_nul_sse2(const char* begin, const char* end, bool& eight_bit) noexcept {
  const __m128i limit = _mm_set1_epi8(13);
  unsigned high = 0;
  const char* p = begin;
  for (; end - p >= 16; p += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    unsigned candidates =
        static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, limit), v)));
    const unsigned top = static_cast<unsigned>(_mm_movemask_epi8(v));
    for (; candidates != 0; candidates &= candidates - 1) {
      const unsigned at = static_cast<unsigned>(__builtin_ctz(candidates));
      if (!is_stop(p[at])) continue;
      high |= top & low_bits(at);
      if (high) eight_bit = true;
      return p + at;
    }
    high |= top;
  }
  if (high) eight_bit = true;
  return find_cr_lf_nul_portable(p, end, eight_bit);
}

__attribute__((target("avx2"))) const char* find_cr_lf_nul_avx2_impl(const char* begin,
                                                                      const char* end,
                                                                      bool& eight_bit) noexcept {
  const __m256i limit = _mm256_set1_epi8(13);
  std::uint32_t high = 0;
  const char* p = begin;
  for (; end - p >= 32; p += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    std::uint32_t candidates = static_cast<std::uint32_t>(
        _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(v, limit), v)));
    const std::uint32_t top = static_cast<std::uint32_t>(_mm256_movemask_epi8(v));
    for (; candidates != 0; candidates &= candidates - 1) {
      const unsigned at = static_cast<unsigned>(__builtin_ctz(candidates));
      if (!is_stop(p[at])) continue;
      const std::uint32_t below = at == 0 ? 0u : (0xffffffffu >> (32 - at));
      high |= top & below;
      if (high) eight_bit = true;
      return p + at;
    }
    high |= top;
  }
  if (high) eight_bit = true;
  return find_cr_lf_nul_sse2(p, end, eight_bit);
}

namespace {

bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

using scanner_fn = const char* (*)(const char*, const char*, bool&) noexcept;

scanner_fn pick_scanner() noexcept {
  return cpu_has_avx2() ? &find_cr_lf_nul_avx2_impl : &find_cr_lf_nul_sse2;
}

}  // namespace

const char* find_cr_lf_nul_avx2(const char* begin, const char* end, bool& eight_bit) noexcept {
  if (!cpu_has_avx2()) return find_cr_lf_nul_portable(begin, end, eight_bit);
  return find_cr_lf_nul_avx2_impl(begin, end, eight_bit);
}

const char* find_cr_lf_nul(const char* begin, const char* end, bool& eight_bit) noexcept {
  // A function-local static: safe even when called from another file's static initializer.
  static const scanner_fn chosen = pick_scanner();
  return chosen(begin, end, eight_bit);
}

std::string_view line_break_scanner_name() noexcept {
  return cpu_has_avx2() ? "avx2" : "sse2";
}

#else  // not x86-64

const char* find_cr_lf_nul_sse2(const char* begin, const char* end, bool& eight_bit) noexcept {
  return find_cr_lf_nul_portable(begin, end, eight_bit);
}
const char* find_cr_lf_nul_avx2(const char* begin, const char* end, bool& eight_bit) noexcept {
  return find_cr_lf_nul_portable(begin, end, eight_bit);
}
const char* find_cr_lf_nul(const char* begin, const char* end, bool& eight_bit) noexcept {
  return find_cr_lf_nul_portable(begin, end, eight_bit);
}
std::string_view line_break_scanner_name() noexcept { return "portable"; }

#endif

}  // namespace ringmta::smtp
