// loadkit integrity tags: how ringmta-blast marks each message so a receiver (ringmta-sink, or
// anything reading a saved message) can prove integrity, loss and duplication.
//
// Every message blast sends carries two header fields (RFC 5322 §3.6.8 optional fields):
//
//   X-Blast-Id: <run>-<n>
//   X-Blast-Checksum: xxh64=<16 lowercase hex digits>
//
// <run> is 1..32 of [A-Za-z0-9_.] naming one blast run; <n> is the message's number in that run,
// decimal (blast pads it with zeros to a fixed width; readers accept any width). The checksum is
// XXH64 with seed 0 over the message body: the octets after the first empty line (the CRLF CRLF
// ending the header section, RFC 5322 §2.1), in unstuffed form (SMTP dot-stuffing removed,
// RFC 5321 §4.5.2), up to and including the CRLF that ends the last body line (the CRLF of the
// "<CRLF>.<CRLF>" terminator belongs to the body). A message with no empty line has an empty
// body. Field names match case-insensitively; folded (multi-line) values are not recognised.
// Header fields added in transit (Received:, ...) change nothing: only the body is summed.
//
// message_scanner checks a message as its body streams in, slice by slice, with no allocation
// (XXH64 streaming state inline) and hands the unstuffed octets to an optional observer.
// Never: allocates, keeps a pointer into a slice after feed() returns, or throws.
#pragma once

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace ringmta::loadkit {

inline constexpr std::string_view id_field = "X-Blast-Id";
inline constexpr std::string_view checksum_field = "X-Blast-Checksum";
inline constexpr std::size_t run_bytes_max = 32;

// True when `run` is 1..32 of [A-Za-z0-9_.].
bool valid_run(std::string_view run) noexcept;

// Parses an X-Blast-Id value ("run-123", surrounding blanks allowed). False when malformed.
bool parse_id_value(std::string_view value, std::string_view& run, std::uint64_t& n) noexcept;
// Parses an X-Blast-Checksum value ("xxh64=0123456789abcdef"). False when malformed.
bool parse_checksum_value(std::string_view value, std::uint64_t& checksum) noexcept;

// Writes 16 lowercase hex digits of `value` to out[0..15].
void write_hex16(char* out, std::uint64_t value) noexcept;
// Writes `value` in decimal, zero-padded to `width` digits (more if needed); returns the length.
std::size_t write_decimal(char* out, std::uint64_t value, std::size_t width) noexcept;

// XXH64 (seed 0) over the concatenation of `pieces`.
std::uint64_t body_checksum(std::span<const std::string_view> pieces) noexcept;

enum class integrity : std::uint8_t {
  untagged,   // no X-Blast-Checksum field: nothing to verify
  ok,         // checksum present and equal to the body's
  corrupt,    // checksum present and different (or malformed)
};

struct scan_result {
  integrity verdict = integrity::untagged;
  bool has_id = false;
  bool id_malformed = false;
  std::string_view run;       // valid until the next begin()
  std::uint64_t n = 0;
  std::uint64_t checksum_declared = 0;
  std::uint64_t checksum_computed = 0;
  std::uint64_t header_bytes = 0;  // unstuffed octets of the header section incl. the empty line
  std::uint64_t body_bytes = 0;    // unstuffed octets after it
};

// Receives the unstuffed message octets in order (for saving a message to disk).
class scan_observer {
 public:
  virtual void on_message_bytes(std::string_view bytes) noexcept = 0;

 protected:
  ~scan_observer() = default;
};

class message_scanner {
 public:
  // wire_form: the slices are SMTP DATA in wire form (dot-stuffed); false for BDAT (raw).
  void begin(bool wire_form, scan_observer* observer = nullptr) noexcept;
  void feed(std::string_view slice) noexcept;
  scan_result finish() noexcept;

 private:
  static constexpr std::size_t line_bytes_max = 256;

  void emit(std::string_view bytes) noexcept;  // unstuffed octets
  void header_bytes(std::string_view bytes) noexcept;
  void header_line_done() noexcept;
  void body_bytes(std::string_view bytes) noexcept;

  XXH64_state_t _hash;
  scan_observer* _observer = nullptr;
  bool _wire_form = true;
  bool _line_start = true;   // the next fed octet starts a line (dot-unstuffing)
  bool _in_body = false;
  bool _line_overflow = false;
  bool _has_checksum = false;
  bool _checksum_malformed = false;
  scan_result _result;
  std::size_t _line_bytes = 0;
  char _line[line_bytes_max];
  char _run[run_bytes_max];
};

}  // namespace ringmta::loadkit
