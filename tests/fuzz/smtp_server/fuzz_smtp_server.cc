// libFuzzer target for smtp::server_session.
//
// Input: 3 octets of configuration (policies, offered features, limits, PRNG seed whose low
// bit also picks long_lines=fold and whose next bit offers XCLIENT), then the client's byte
// stream. The stream is fed in pieces
// whose sizes come from a PRNG seeded by the input; the handler answers accept / respond / pending at random and resumes pending verdicts
// later; output is drained at random (so feed() pauses on a full buffer). Checked invariants:
// - feed() never consumes more than given; output never exceeds its capacity;
// - every reply line is "DDD" (2xx-5xx) + ' ' or '-' + text + CRLF, at most 512 octets, lines
//   of one multi-line reply share the code; nothing follows a 221 or 421;
// - body slices lie inside the buffer being fed (or are the engine's small static strings);
//   no on_body after on_data_aborted; wire_bytes equals the octets handed over;
// - an accepted DATA body has only CRLF line endings, never contains <CR><LF>.<CR><LF> and
//   never starts with ".<CR><LF>" (no smuggled end marker can reach the spool); an accepted
//   BDAT body (not BINARYMIME) has only CRLF line endings too; neither holds a NUL, and both
//   end with CRLF; under long_lines=fold no line of an accepted body exceeds the limit;
// - no handler call after the session wants to close;
// - XCLIENT reaches the handler only when offered, with every given
//   value free of controls and spaces, PROTO SMTP/ESMTP, ports 0..65535 (smtp/xclient.h).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ringmta/smtp/server_session.h"

namespace {

using namespace ringmta::smtp;

static_assert(sizeof(server_session) < 16 * 1024, "session memory must stay bounded");

#define FUZZ_CHECK(condition)                                                       \
  do {                                                                              \
    if (!(condition)) {                                                             \
      std::fprintf(stderr, "invariant failed: %s (line %d)\n", #condition, __LINE__); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

struct prng {
  std::uint64_t state;
  std::uint32_t next() noexcept {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<std::uint32_t>(state >> 11);
  }
  std::uint32_t below(std::uint32_t n) noexcept { return next() % n; }
};

bool is_static_piece(std::string_view s) {
  return s == "." || s == "\r\n" || s == "\n" || s == "..\r\n" || s == "\r\n ";
}

class fuzz_handler final : public server_handler {
 public:
  explicit fuzz_handler(prng& random) : _random(random) {}

  std::string_view fed;  // the buffer of the feed() call in progress
  bool closed = false;
  bool in_message = false;
  bool aborted = false;
  std::string body;
  std::uint64_t body_bytes = 0;
  std::uint64_t message_bytes_max = 0;
  std::uint32_t folded_line_bytes_max = 0;  // long_lines=fold: no stored line longer (incl. CRLF)

  verdict pick(bool auth) noexcept {
    FUZZ_CHECK(!closed);
    const std::uint32_t r = _random.below(10);
    if (r < 6) return verdict::accept();
    if (r < 8) return verdict::pending();
    return random_reply(auth);
  }
  verdict random_reply(bool auth) noexcept {
    switch (_random.below(auth ? 5 : 4)) {
      case 0: return verdict::respond(250, "2.0.0", "Fine\nsecond line");
      case 1: return verdict::respond(451, "", "Try later");
      case 2: return verdict::respond(550, "5.7.1", "No\r\nbad \x01 text");
      case 3: return verdict::respond(554, "5.7.0", std::string_view(long_text, 600));
      default: return verdict::respond(334, "", "Y2hhbGxlbmdl");
    }
  }
  verdict resume_answer(bool auth) noexcept {
    return _random.below(2) == 0 ? verdict::accept() : random_reply(auth);
  }

  verdict on_helo(std::string_view, bool) noexcept override { return pick(false); }
  verdict on_mail_from(const mailbox& box, const mail_parameters&) noexcept override {
    FUZZ_CHECK(box.address.size() <= path_bytes_max);
    return pick(false);
  }
  verdict on_rcpt_to(const mailbox&, const rcpt_parameters&) noexcept override {
    return pick(false);
  }
  verdict on_data_start() noexcept override {
    FUZZ_CHECK(!closed);
    in_message = true;
    aborted = false;
    body.clear();
    body_bytes = 0;
    return pick(false);
  }
  void on_body(std::string_view slice, body_form form) noexcept override {
    FUZZ_CHECK(!closed && in_message && !aborted);
    const bool inside = slice.data() >= fed.data() &&
                        slice.data() + slice.size() <= fed.data() + fed.size();
    FUZZ_CHECK(inside || is_static_piece(slice));
    body_bytes += slice.size();
    // DATA: the limit counts unstuffed octets, so stuffing dots may add up to one per line.
    // Folding adds up to 4 octets per line it breaks (lines of at least 62 octets here).
    FUZZ_CHECK(body_bytes <= (form == body_form::raw && folded_line_bytes_max == 0
                                  ? message_bytes_max
                                  : 2 * message_bytes_max + 4));
    if (body.size() < (1u << 20)) body.append(slice);
  }
  verdict on_data_end(const body_summary& summary) noexcept override {
    FUZZ_CHECK(!closed && in_message && !aborted);
    FUZZ_CHECK(summary.wire_bytes == body_bytes);
    FUZZ_CHECK(summary.message_bytes <= message_bytes_max);
    if (body.size() == body_bytes && summary.declared != body_type::binary_mime) {
      if (summary.form == body_form::wire) check_wire_body();
      else check_text_lines();  // BDAT text: the DATA line rules, and a final CRLF
    }
    in_message = false;
    return pick(false);
  }
  void on_data_aborted(abort_reason) noexcept override {
    FUZZ_CHECK(!closed && in_message && !aborted);
    aborted = true;
  }
  verdict on_vrfy(std::string_view) noexcept override { return pick(false); }
  verdict on_starttls() noexcept override { return pick(false); }
  verdict on_auth(std::string_view, std::string_view) noexcept override { return pick(true); }
  verdict on_auth_response(std::string_view) noexcept override { return pick(true); }
  verdict on_xclient(const xclient_attributes& a) noexcept override {
    FUZZ_CHECK(xclient_offered && !closed);
    for (const xclient_value* v : {&a.name, &a.address, &a.port, &a.protocol, &a.helo, &a.login,
                                   &a.destination_address, &a.destination_port}) {
      FUZZ_CHECK(v->given() || v->text.empty());
      FUZZ_CHECK(!v->given() || !v->text.empty());
      for (const char c : v->text) FUZZ_CHECK(static_cast<unsigned char>(c) > 32 && c != 127);
    }
    FUZZ_CHECK(!a.protocol.given() || a.protocol.text == "SMTP" || a.protocol.text == "ESMTP");
    FUZZ_CHECK(!a.port.given() || a.port.text.size() <= 5);
    return pick(false);
  }
  void on_xclient_refused() noexcept override { FUZZ_CHECK(!xclient_offered && !closed); }
  bool xclient_offered = false;

 private:
  void check_wire_body() {
    FUZZ_CHECK(body.find("\r\n.\r\n") == std::string::npos);
    FUZZ_CHECK(body.rfind(".\r\n", 0) != 0);
    check_text_lines();
  }
  void check_text_lines() {
    FUZZ_CHECK(body.find('\0') == std::string::npos);
    FUZZ_CHECK(body.empty() || (body.size() >= 2 && body.substr(body.size() - 2) == "\r\n"));
    for (std::size_t i = 0; i < body.size(); ++i) {
      if (body[i] == '\r') FUZZ_CHECK(i + 1 < body.size() && body[i + 1] == '\n');
      if (body[i] == '\n') FUZZ_CHECK(i > 0 && body[i - 1] == '\r');
    }
    FUZZ_CHECK(body.empty() || body.size() >= 2);
    for (std::size_t at = 0; folded_line_bytes_max != 0 && at < body.size();) {
      const std::size_t end = body.find("\r\n", at);
      FUZZ_CHECK(end != std::string::npos && end + 2 - at <= folded_line_bytes_max);
      at = end + 2;
    }
  }

  static constexpr char long_text[601] =
      "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
      "8901234567890123456789012345678901234567890123456789012345678901234567890123456789012345"
      "6789012345678901234567890123456789012345678901234567890123456789012345678901234567890123"
      "4567890123456789012345678901234567890123456789012345678901234567890123456789012345678901"
      "2345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
      "890123456789012345678901234567890123456789012345678901234567890123456789";
  prng& _random;
};

// Checks reply syntax across drains (a line may be split between two drains).
class reply_checker {
 public:
  void take(std::string_view bytes) {
    FUZZ_CHECK(!_finished || bytes.empty());
    _partial.append(bytes);
    std::size_t at = 0;
    while (true) {
      const std::size_t end = _partial.find("\r\n", at);
      if (end == std::string::npos) break;
      check_line(std::string_view(_partial).substr(at, end - at));
      at = end + 2;
    }
    _partial.erase(0, at);
    FUZZ_CHECK(_partial.size() < 512);
    FUZZ_CHECK(_partial.find('\n') == std::string::npos);
  }
  void finish() { FUZZ_CHECK(_partial.empty() && _open_code == 0); }

 private:
  void check_line(std::string_view line) {
    FUZZ_CHECK(!_finished);
    FUZZ_CHECK(line.size() + 2 <= 512 && line.size() >= 4);
    FUZZ_CHECK(line[0] >= '2' && line[0] <= '5');
    FUZZ_CHECK(line[1] >= '0' && line[1] <= '9' && line[2] >= '0' && line[2] <= '9');
    FUZZ_CHECK(line[3] == ' ' || line[3] == '-');
    for (const char c : line) FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    FUZZ_CHECK(_open_code == 0 || _open_code == code);
    _open_code = line[3] == '-' ? code : 0;
    if (line[3] == ' ' && (code == 221 || code == 421)) _finished = true;
  }
  std::string _partial;
  int _open_code = 0;
  bool _finished = false;
};

server_config make_config(std::uint8_t flags, std::uint8_t extensions, std::uint8_t seed) {
  server_config c;
  c.long_lines = (seed & 1) ? long_line_policy::fold : long_line_policy::reject;
  c.hostname = "fuzz.example";
  c.bare_line_ending = (flags & 1) ? bare_line_ending_policy::normalize
                                   : bare_line_ending_policy::reject;
  c.starttls_offered = flags & 2;
  c.auth_offered = flags & 4;
  c.tls_active = flags & 8;
  c.auth_requires_tls = flags & 16;
  c.vrfy_enabled = flags & 32;
  if (flags & 128) {
    c.limits = server_limits{64, 80, 2000, 3, 5};
  } else {
    c.limits.message_bytes_max = 64 * 1024;
    c.limits.errors_max = 50;
  }
  c.extensions.pipelining = extensions & 1;
  c.extensions.size = extensions & 2;
  c.extensions.eight_bit_mime = extensions & 4;
  c.extensions.smtputf8 = extensions & 8;
  c.extensions.enhanced_status_codes = extensions & 16;
  c.extensions.chunking = !(extensions & 32);
  c.extensions.binary_mime = !(extensions & 64);
  c.extensions.dsn = extensions & 128;
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const server_config config = make_config(data[0], data[1], data[2]);
  prng random{0x9e3779b97f4a7c15ull ^ (std::uint64_t{data[2]} << 32) ^ size};
  fuzz_handler handler(random);
  handler.message_bytes_max = config.limits.message_bytes_max;
  if (config.long_lines == long_line_policy::fold)
    handler.folded_line_bytes_max = config.limits.text_line_bytes_max;
  server_session session(config, handler);
  handler.xclient_offered = data[2] & 2;
  session.offer_xclient(handler.xclient_offered);
  reply_checker replies;
  if (data[0] & 64) session.start_refusing("busy");
  else session.start();
  const std::string_view stream(reinterpret_cast<const char*>(data) + 3, size - 3);
  std::string carried;  // what the embedder holds: unconsumed octets
  std::size_t at = 0;
  int idle_rounds = 0;
  while ((at < stream.size() || !carried.empty()) && !session.wants_close()) {
    if (at < stream.size()) {
      std::size_t piece = random.below(4) == 0 ? stream.size() - at : 1 + random.below(64);
      if (piece > stream.size() - at) piece = stream.size() - at;
      carried.append(stream.substr(at, piece));
      at += piece;
    }
    handler.fed = carried;
    const std::size_t used = session.feed(carried);
    handler.fed = {};
    FUZZ_CHECK(used <= carried.size());
    FUZZ_CHECK(session.output().size() <= server_session::output_bytes_capacity);
    carried.erase(0, used);
    if (session.awaiting_verdict()) {
      switch (random.below(16)) {
        case 0: session.on_timeout(); break;
        case 1: session.shutdown(); break;
        default: session.resume(handler.resume_answer(true)); break;
      }
    }
    if (session.awaiting_tls() && random.below(2) == 0) session.tls_established();
    switch (random.below(512)) {  // embedder events at any moment, rarely
      case 0: session.on_timeout(); break;
      case 1: session.shutdown(); break;
      case 2: session.connection_lost(); break;
      default: break;
    }
    if (session.output_full() || random.below(4) != 0) {
      replies.take(session.output());
      session.consume_output(session.output().size());
    }
    idle_rounds = used == 0 ? idle_rounds + 1 : 0;
    if (at >= stream.size() && idle_rounds > 4) break;  // a partial command line waits forever
  }
  if (!session.wants_close() && random.below(2) == 0) session.connection_lost();
  handler.closed = session.wants_close();
  replies.take(session.output());
  session.consume_output(session.output().size());
  if (session.wants_close()) replies.finish();
  return 0;
}
