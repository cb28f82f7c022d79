// The vectorised inner loop of DATA and BDAT scanning: find the next CR, LF or NUL (the octets
// the line rules act on: RFC 5321 §2.3.8, §4.5.2; NUL is refused or dropped, issue 10) and note
// 8-bit octets.
//
// The DATA state machine (server_session) spends its time here on large bodies. The x86-64
// build uses SSE2 (baseline on every x86-64) and switches to AVX2 at start-up when the CPU has
// it; other targets use a portable loop. All variants give identical results (tested).
// Never reads outside [begin, end).
#pragma once

#include <string_view>

namespace ringmta::smtp {

// First CR, LF or NUL in [begin, end), or end. Sets eight_bit when an octet above 127 lies before
// the returned position (it is never cleared).
const char* find_cr_lf_nul(const char* begin, const char* end, bool& eight_bit) noexcept;

// Individual variants, for tests and benchmarks. Those the CPU lacks fall back to portable.
const char* find_cr_lf_nul_portable(const char* begin, const char* end, bool& eight_bit) noexcept;
const char* find_cr_lf_nul_sse2(const char* begin, const char* end, bool& eight_bit) noexcept;
const char* find_cr_lf_nul_avx2(const char* begin, const char* end, bool& eight_bit) noexcept;

// "avx2", "sse2" or "portable": what find_cr_lf_nul() uses on this CPU.
std::string_view line_break_scanner_name() noexcept;

}  // namespace ringmta::smtp
