#include "ringmta/net/received_header.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "ringmta/core/assert.h"

namespace ringmta::net {
namespace {

class writer {
 public:
  writer(char* out, std::size_t capacity) : _out(out), _capacity(capacity) {}
  // Octets of the well-formed UTF-8 sequence (RFC 3629 §4) at the start of `s`, 2 to 4; 0 when
  // there is none (ASCII, a stray continuation byte, an overlong or surrogate form, a cut).
  static std::size_t utf8_sequence_bytes(std::string_view s) noexcept {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char c = byte(0);
    std::size_t n = 0;
    unsigned char low = 0x80, high = 0xbf;  // allowed range of the second octet
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0) low = 0xa0;
      if (c == 0xed) high = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0) low = 0x90;
      if (c == 0xf4) high = 0x8f;
    }
    if (n == 0 || s.size() < n || byte(1) < low || byte(1) > high) return 0;
    for (std::size_t i = 2; i < n; ++i)
      if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
    return n;
  }
  void text(std::string_view bytes) noexcept {
    const std::size_t n = bytes.size() < room() ? bytes.size() : room();
    std::memcpy(_out + _used, bytes.data(), n);
    _used += n;
  }
  // The client's HELO is attacker-controlled: keep printable ASCII except characters that
  // would change the header's structure (parentheses open comments, CR/LF fold lines).
  void sanitised(std::string_view bytes, std::size_t max) noexcept {
    for (std::size_t i = 0; i < bytes.size() && i < max && room() > 0; ++i) {
      const unsigned char c = static_cast<unsigned char>(bytes[i]);
      const bool safe = c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\';
      _out[_used++] = safe ? static_cast<char>(c) : '_';
    }
  }
  // The "for" address of an SMTPUTF8 message: as sanitised(), but well-formed UTF-8 sequences
  // are kept (RFC 6532 §3.2 allows UTF-8 in header fields of such a message, and Postfix and
  // Exim keep the address as received); a sequence the limit would cut is left out whole.
  void sanitised_utf8(std::string_view bytes, std::size_t max) noexcept {
    if (bytes.size() > max) bytes = bytes.substr(0, max);
    std::size_t i = 0;
    while (i < bytes.size() && room() > 0) {
      const std::size_t n = utf8_sequence_bytes(bytes.substr(i));
      if (n <= 1 || n > room()) {
        sanitised(bytes.substr(i, 1), 1);
        ++i;
        continue;
      }
      text(bytes.substr(i, n));
      i += n;
    }
  }
  // A comment we wrote ourselves: printable ASCII and spaces, parentheses kept.
  void sanitised_comment(std::string_view bytes, std::size_t max) noexcept {
    for (std::size_t i = 0; i < bytes.size() && i < max && room() > 0; ++i) {
      const unsigned char c = static_cast<unsigned char>(bytes[i]);
      _out[_used++] = c >= 0x20 && c < 0x7f && c != '\\' ? static_cast<char>(c) : '_';
    }
  }
  std::size_t used() const noexcept { return _used; }
  std::size_t room() const noexcept { return _capacity - _used; }

 private:
  char* _out;
  std::size_t _capacity;
  std::size_t _used = 0;
};

}  // namespace

std::size_t format_rfc5322_date(std::int64_t unix_seconds, char* out) noexcept {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  // One Received: header per message: format each second once per thread.
  thread_local std::int64_t cached_second = -1;
  thread_local char cached[32];
  thread_local std::size_t cached_length = 0;
  if (unix_seconds != cached_second) {
    const std::time_t seconds = static_cast<std::time_t>(unix_seconds);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    const int n = std::snprintf(cached, sizeof cached, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                                days[utc.tm_wday], utc.tm_mday, months[utc.tm_mon],
                                utc.tm_year + 1900, utc.tm_hour, utc.tm_min, utc.tm_sec);
    RINGMTA_ASSERT(n > 0 && n < 32);
    cached_length = static_cast<std::size_t>(n);
    cached_second = unix_seconds;
  }
  std::memcpy(out, cached, cached_length);
  return cached_length;
}

std::size_t format_received_header(const received_fields& fields, char* out,
                                   std::size_t out_bytes) noexcept {
  RINGMTA_ASSERT(out_bytes >= 64);
  // Keep room for the date line and the final CRLF whatever the other fields hold.
  writer w(out, out_bytes - 48);
  w.text("Received: from ");
  w.sanitised(fields.helo.empty() ? std::string_view("unknown") : fields.helo, 255);
  w.text(" ([");
  w.sanitised(fields.client_address, 64);
  w.text("])\r\n\t");
  if (!fields.tls.empty()) {  // ours (protocol and cipher names), but kept printable anyway
    w.sanitised_comment(fields.tls, 160);
    w.text("\r\n\t");
  }
  w.text("by ");
  w.sanitised(fields.hostname, 255);
  w.text(" (ringmta) with ");
  w.sanitised(fields.protocol, 16);
  w.text(" id ");
  w.sanitised(fields.queue_id, 64);
  if (!fields.single_recipient.empty() && w.room() > 300) {
    w.text("\r\n\tfor <");
    if (fields.utf8) w.sanitised_utf8(fields.single_recipient, 256);
    else w.sanitised(fields.single_recipient, 256);
    w.text(">");
  }
  std::size_t length = w.used();
  char date[32];
  const std::size_t date_length = format_rfc5322_date(fields.unix_seconds, date);
  std::memcpy(out + length, ";\r\n\t", 4);
  length += 4;
  std::memcpy(out + length, date, date_length);
  length += date_length;
  std::memcpy(out + length, "\r\n", 2);
  return length + 2;
}

}  // namespace ringmta::net
