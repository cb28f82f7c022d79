// DKIM canonicalization (RFC 6376 §3.4), streamed over the received buffers.
//
// Pure: no syscalls, no OpenSSL, no allocation in the body path. Canonical bytes go to a
// byte_sink (a SHA-256 context in the daemon, a string in tests) as slices of the input plus
// a few static pieces (CRLF, SP): the body is never copied.
//
// The body canonicalizer takes the body in "message form": lines end with CRLF. It can read
// DATA wire form directly (`stuffed`): a "." at the start of a line is the sender's stuffing
// (RFC 5321 §4.5.2) and is skipped, so the hash covers the unstuffed content. A CR or LF that
// is not part of a CRLF pair is counted (bare_line_endings()) and otherwise treated as an
// ordinary octet; the signer refuses such messages rather than guess what a verifier will do.
// Never: a pointer into fed input kept across calls.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringmta::dkim {

enum class canonicalization : std::uint8_t { simple, relaxed };
std::string_view name_of(canonicalization c) noexcept;

class byte_sink {
 public:
  virtual void update(std::string_view bytes) noexcept = 0;

 protected:
  ~byte_sink() = default;
};

// RFC 6376 §3.4.3 (simple) and §3.4.4 (relaxed) body canonicalization.
class body_canonicalizer {
 public:
  void reset(canonicalization mode, bool stuffed) noexcept;
  // Body octets in order, split anywhere.
  void feed(std::string_view bytes, byte_sink& out) noexcept;
  // The end of the body: trailing empty lines stay dropped; an unterminated last line gets
  // its CRLF; simple turns an empty body into one CRLF (relaxed leaves it empty).
  void finish(byte_sink& out) noexcept;
  std::uint64_t bare_line_endings() const noexcept { return _bare; }

 private:
  void content(std::string_view bytes, byte_sink& out) noexcept;
  void end_line(byte_sink& out) noexcept;
  const char* scan_relaxed(const char* p, const char* end, byte_sink& out) noexcept;
  const char* scan_simple(const char* p, const char* end, byte_sink& out) noexcept;
  const char* after_break(const char* p, const char* end, byte_sink& out) noexcept;

  canonicalization _mode = canonicalization::relaxed;
  bool _stuffed = false;
  bool _line_start = true;    // nothing of the current line seen yet (stuffing dot check)
  bool _line_content = false;  // the current line has canonical content (emitted)
  bool _wsp = false;           // relaxed: a run of WSP held back
  bool _cr = false;            // a CR held back: an LF may follow in the next buffer
  bool _any_content = false;   // something was emitted
  std::uint64_t _empty_lines = 0;  // CRLFs held back: trailing empty lines are dropped
  std::uint64_t _bare = 0;
};

// One header field of a header block: name and the whole field as it appears (folded, with
// its final CRLF when it had one).
struct header_field {
  std::string_view name;
  std::string_view raw;
};

// Splits a header block (the octets before the empty line, unstuffed) into fields. A line
// that starts with WSP continues the previous field; a first line that does is a field of its
// own with an empty name. `visit(header_field)` is called in order. Returns the field count.
template <typename Visit>
std::size_t for_each_field(std::string_view block, Visit&& visit) {
  std::size_t count = 0;
  std::size_t at = 0;
  while (at < block.size()) {
    std::size_t end = at;
    do {  // to the end of this line, then of every continuation line
      const std::size_t lf = block.find('\n', end);
      end = lf == std::string_view::npos ? block.size() : lf + 1;
    } while (end < block.size() && (block[end] == ' ' || block[end] == '\t'));
    const std::string_view raw = block.substr(at, end - at);
    std::size_t colon = raw.find(':');
    std::string_view name = raw.substr(0, colon == std::string_view::npos ? 0 : colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    if (!raw.empty() && (raw[0] == ' ' || raw[0] == '\t')) name = {};
    visit(header_field{name, raw});
    ++count;
    at = end;
  }
  return count;
}

// Appends the canonical form of one field (RFC 6376 §3.4.1 / §3.4.2), with its CRLF unless
// `final_crlf` is false (the DKIM-Signature field itself is hashed without it, §3.7).
void canonicalize_header(canonicalization mode, const header_field& field, std::string& out,
                         bool final_crlf = true);

bool iequals(std::string_view a, std::string_view b) noexcept;

// The domain of the first address in a From: field value (RFC 5322 §3.4), lowercase ASCII;
// empty when there is none. Comments and quoted display names are skipped, so
// `"a@evil" <b@good.example>` gives good.example.
std::string from_domain(std::string_view field_raw);

}  // namespace ringmta::dkim
