// RFC 6376 §3.4 canonicalization. The body path hands out slices of its input: a line with no
// whitespace to fold goes out as one piece (often many lines at once), so hashing sees large
// updates and nothing is copied. See dkim/canonical.h.
#include "ringmta/dkim/canonical.h"

#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace ringmta::dkim {

namespace {

constexpr std::string_view crlf = "\r\n";
constexpr std::string_view crlfs =  // empty lines are emitted in pieces of up to 16
    "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";

inline bool is_wsp(char c) noexcept { return c == ' ' || c == '\t'; }
inline bool is_wsp_or_break(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

// The first octet at or after p that canonicalization must look at: CR or LF, and for
// relaxed also TAB and an SP that is followed by WSP or a line break (a lone SP between words
// stays as it is). An SP whose successor is not in [p, end) counts as special.
template <bool Relaxed>
const char* find_special(const char* p, const char* end) noexcept {
#if defined(__x86_64__)
  const __m128i cr = _mm_set1_epi8('\r');
  const __m128i lf = _mm_set1_epi8('\n');
  const __m128i sp = _mm_set1_epi8(' ');
  const __m128i tab = _mm_set1_epi8('\t');
  for (; end - p > 16; p += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf));
    if constexpr (Relaxed) {
      const __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 1));
      const __m128i next_wsp = _mm_or_si128(
          _mm_or_si128(_mm_cmpeq_epi8(next, sp), _mm_cmpeq_epi8(next, tab)),
          _mm_or_si128(_mm_cmpeq_epi8(next, cr), _mm_cmpeq_epi8(next, lf)));
      special = _mm_or_si128(special, _mm_cmpeq_epi8(v, tab));
      special = _mm_or_si128(special, _mm_and_si128(_mm_cmpeq_epi8(v, sp), next_wsp));
    }
    const unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(special));
    if (mask != 0) return p + __builtin_ctz(mask);
  }
#endif
  for (; p < end; ++p) {
    const char c = *p;
    if (c == '\r' || c == '\n') return p;
    if constexpr (Relaxed) {
      if (c == '\t') return p;
      if (c == ' ' && (p + 1 == end || is_wsp_or_break(p[1]))) return p;
    }
  }
  return end;
}

}  // namespace

std::string_view name_of(canonicalization c) noexcept {
  return c == canonicalization::simple ? "simple" : "relaxed";
}

void body_canonicalizer::reset(canonicalization mode, bool stuffed) noexcept {
  *this = body_canonicalizer{};
  _mode = mode;
  _stuffed = stuffed;
}

// Canonical content of the current line: held empty lines and a held WSP run go first.
void body_canonicalizer::content(std::string_view bytes, byte_sink& out) noexcept {
  if (!_line_content) {
    while (_empty_lines > 0) {
      const std::uint64_t n = _empty_lines < 16 ? _empty_lines : 16;
      out.update(crlfs.substr(0, n * 2));
      _empty_lines -= n;
    }
    _line_content = true;
  }
  if (_wsp) {  // RFC 6376 §3.4.4 b: a WSP run inside a line becomes one SP
    out.update(" ");
    _wsp = false;
  }
  out.update(bytes);
  _any_content = true;
}

// A CRLF: ends a line with content at once; an empty line is held (§3.4.3, §3.4.4 c: empty
// lines at the end of the body are ignored). Relaxed drops a held trailing WSP run (§3.4.4 a).
void body_canonicalizer::end_line(byte_sink& out) noexcept {
  if (_line_content) out.update(crlf);
  else ++_empty_lines;
  _line_content = false;
  _wsp = false;
  _line_start = true;
}

void body_canonicalizer::feed(std::string_view bytes, byte_sink& out) noexcept {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  while (p < end) {
    if (_cr) {  // a CR ended the previous piece
      _cr = false;
      if (*p == '\n') {
        ++p;
        end_line(out);
        continue;
      }
      ++_bare;
      content("\r", out);
    }
    if (_line_start) {
      _line_start = false;
      if (_stuffed && *p == '.') {  // RFC 5321 §4.5.2: the sender's transparency dot
        ++p;
        continue;
      }
    }
    if (_wsp) {  // a held run may continue in this piece
      while (p < end && is_wsp(*p)) ++p;
      if (p == end) break;
    }
    p = _mode == canonicalization::relaxed ? scan_relaxed(p, end, out) : scan_simple(p, end, out);
  }
}

// Emits the ordinary octets up to the next special one and handles that one.
const char* body_canonicalizer::scan_relaxed(const char* p, const char* end,
                                             byte_sink& out) noexcept {
  const char* q = find_special<true>(p, end);
  if (q > p) content(std::string_view(p, static_cast<std::size_t>(q - p)), out);
  if (q == end) return q;
  if (is_wsp(*q)) {
    while (q < end && is_wsp(*q)) ++q;
    _wsp = true;
    return q;
  }
  return after_break(q, end, out);
}

const char* body_canonicalizer::scan_simple(const char* p, const char* end,
                                            byte_sink& out) noexcept {
  const char* q = find_special<false>(p, end);
  if (q > p) content(std::string_view(p, static_cast<std::size_t>(q - p)), out);
  if (q == end) return q;
  return after_break(q, end, out);
}

// At a CR or LF: CRLF ends the line; a CR at the end of the piece is held; a lone CR or LF is
// content (counted as bare).
const char* body_canonicalizer::after_break(const char* p, const char* end,
                                            byte_sink& out) noexcept {
  if (*p == '\r') {
    if (p + 1 == end) {
      _cr = true;
      return end;
    }
    if (p[1] == '\n') {
      end_line(out);
      return p + 2;
    }
  }
  ++_bare;
  content(std::string_view(p, 1), out);
  return p + 1;
}

void body_canonicalizer::finish(byte_sink& out) noexcept {
  if (_cr) {
    _cr = false;
    ++_bare;
    content("\r", out);
  }
  // §3.4.3: a missing final CRLF is added, and an empty body is one CRLF. §3.4.4: a non-empty
  // body gets its final CRLF; an empty one stays empty.
  if (_line_content) out.update(crlf);
  else if (_mode == canonicalization::simple && !_any_content) out.update(crlf);
  _line_content = false;
  _empty_lines = 0;
  _wsp = false;
}

}  // namespace ringmta::dkim
