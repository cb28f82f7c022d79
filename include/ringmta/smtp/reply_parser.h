// SMTP reply parser for the client side: turns a server's bytes into replies (RFC 5321 §4.2).
//
// Resumable across arbitrary splits of the input: feed() takes whatever bytes arrived, consumes
// at most one reply line per call and keeps the partial line in a fixed buffer, so a reply split
// at any byte parses exactly like one that arrived whole. Multi-line replies (`250-` … `250 `)
// are checked for one code throughout; an enhanced status code (RFC 3463, announced by RFC 2034
// ENHANCEDSTATUSCODES) is recognised when the text starts with one of the reply's class.
//
// Invariants: memory is fixed (a line buffer of reply_line_bytes_max and a text buffer of
// reply_text_bytes_max); a line longer than 512 bytes, more lines than lines_max in one reply,
// a bad code, codes that differ inside one reply, a bare LF, a bare CR or a NUL is a protocol
// error, never unbounded memory. After an error the parser stays in error until reset().
// It never allocates, never throws, never logs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ringmta::smtp {

// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, the code and the CRLF included.
inline constexpr std::size_t reply_line_bytes_max = 512;
// The text of all lines of one reply kept for the embedder (logs, bounces); longer text is
// truncated and flagged, the reply itself still parses.
inline constexpr std::size_t reply_text_bytes_max = 1024;
// Default bound on the lines of one reply (an EHLO reply is ~15 lines in practice).
inline constexpr std::uint16_t reply_lines_max_default = 64;

// RFC 3463 §2: class "." subject "." detail; class is 2, 4 or 5; subject and detail 1-3 digits.
struct reply_enhanced_code {
  std::uint8_t status_class = 0;  // 0 when the reply carries no enhanced code
  std::uint16_t subject = 0;
  std::uint16_t detail = 0;

  bool present() const noexcept { return status_class != 0; }
  friend bool operator==(const reply_enhanced_code&, const reply_enhanced_code&) = default;
};

// One complete reply. Text is the text of every line (after "NNN-"/"NNN " and after the
// enhanced code when the line starts with one), lines joined by '\n'.
struct parsed_reply {
  std::uint16_t code = 0;  // 200..559 (RFC 5321 §4.2: %x32-35 %x30-35 %x30-39)
  reply_enhanced_code enhanced;
  std::uint16_t line_count = 0;
  std::uint16_t text_bytes = 0;
  bool text_truncated = false;  // the text did not fit in text_data
  bool local = false;           // made by this client (a local decision), not sent by the server
  char text_data[reply_text_bytes_max];

  std::string_view text() const noexcept { return {text_data, text_bytes}; }
  int code_class() const noexcept { return code / 100; }  // 2, 3, 4 or 5
  bool positive() const noexcept { return code_class() == 2; }
  bool transient() const noexcept { return code_class() == 4; }
  bool permanent() const noexcept { return code_class() == 5; }

  // A reply this client makes itself (e.g. 552 5.3.4 when the message exceeds the server's SIZE).
  // `text` longer than the buffer is truncated.
  void assign_local(std::uint16_t reply_code, reply_enhanced_code code_enhanced,
                    std::string_view text) noexcept;
  // Deep copy (fixed size, no allocation), used when a reply must outlive the next one.
  void copy_from(const parsed_reply& other) noexcept;
  // The text on one line for logs and DSNs: lines joined by one space, lines that are empty
  // (a "550-5.7.1" line with only a code) and spaces at the joins left out.
  std::string one_line_text() const;
};

enum class reply_parse_error : std::uint8_t {
  none,
  line_too_long,   // more than reply_line_bytes_max bytes without LF
  too_many_lines,  // more than lines_max lines in one reply
  bad_code,        // not three digits in the RFC 5321 §4.2 ranges
  code_mismatch,   // a continuation line with a different code
  bad_separator,   // the fourth byte is neither SP, '-' nor the end of the line
  bare_lf,         // LF not preceded by CR (RFC 5321 §2.3.8)
  bare_cr,         // CR not followed by LF inside a line
  nul_byte,        // NUL in a reply line
};

// A short human-readable description ("bare LF in reply"), static storage.
std::string_view describe(reply_parse_error error) noexcept;

class reply_parser {
 public:
  enum class status : std::uint8_t {
    need_more,   // every byte given was consumed; the current line is still incomplete
    line_done,   // a continuation line ("NNN-") is complete: see line_text()
    reply_done,  // the last line is complete: see reply(), line_text()
    failed,      // protocol error: see error(); nothing more is consumed until reset()
  };
  struct step {
    status what;
    std::size_t consumed;
  };

  explicit reply_parser(std::uint16_t lines_max = reply_lines_max_default) noexcept;

  // Consumes bytes up to and including the end of one line. Call again with the rest.
  step feed(std::string_view bytes) noexcept;

  // After line_done / reply_done: the text of the line just completed (raw, enhanced code not
  // stripped). Valid until the next feed() or reset().
  std::string_view line_text() const noexcept { return _line_text; }
  // After reply_done: the complete reply. Valid until the next feed() or reset().
  const parsed_reply& reply() const noexcept { return _reply; }
  // Code of the reply in progress (known once its first line is complete), else 0.
  std::uint16_t code() const noexcept { return _reply.code; }
  // Lines of the reply in progress completed so far (1 after its first line).
  std::uint16_t line_count() const noexcept { return _reply.line_count; }
  reply_parse_error error() const noexcept { return _error; }
  // True while bytes of an unfinished reply are held: the peer closing now truncated a reply.
  bool mid_reply() const noexcept { return _line_bytes != 0 || _in_multiline; }

  void reset() noexcept;

 private:
  step fail(reply_parse_error error, std::size_t consumed) noexcept;
  reply_parse_error complete_line() noexcept;
  void append_text(std::string_view text) noexcept;

  std::uint16_t _lines_max;
  std::uint16_t _line_bytes = 0;
  bool _in_multiline = false;  // a "NNN-" line was seen and the last line has not come yet
  bool _reply_complete = false;  // the previous feed finished a reply: the next starts a new one
  reply_parse_error _error = reply_parse_error::none;
  std::string_view _line_text;
  char _line[reply_line_bytes_max];
  parsed_reply _reply;
};

// Parses an RFC 3463 enhanced status code at the start of `text` (followed by SP or the end).
// Returns the number of bytes it spans (0 when there is none) and fills `code`.
std::size_t parse_enhanced_code(std::string_view text, reply_enhanced_code& code) noexcept;

}  // namespace ringmta::smtp
